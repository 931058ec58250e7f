"""CORS (``RTM_CORS_ORIGINS``): preflights and actual responses for allowed and other origins,
on the API, the PostgREST-style routes and the REST broadcast."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from realtime_messaging.server.cors import DEFAULT_HEADERS
from tests.conftest import RunningServer, running_server

ALLOWED = "http://allowed.example:8080"
OTHER = "http://other.example"
PATHS = ("/api/me", "/rest/v1/rpc/get_unread_message_count", "/realtime/v1/api/broadcast")


@pytest.fixture
async def cors_server(database_url: str) -> AsyncIterator[RunningServer]:
    async with running_server(database_url, cors_origins=(ALLOWED, "http://second.example")) as srv:
        yield srv


def _preflight(origin: str, method: str = "POST", headers: str = "") -> dict[str, str]:
    asked = {"Access-Control-Request-Headers": headers} if headers else {}
    return {"Origin": origin, "Access-Control-Request-Method": method, **asked}


async def test_a_preflight_from_an_allowed_origin_is_answered(cors_server: RunningServer) -> None:
    async with aiohttp.ClientSession(cors_server.http_url) as http:
        for path in PATHS:
            headers = _preflight(ALLOWED, headers="apikey, authorization, x-supabase-api-version")
            async with http.options(path, headers=headers) as response:
                assert response.status == 204, path
                h = response.headers
                assert h["Access-Control-Allow-Origin"] == ALLOWED
                assert "POST" in h["Access-Control-Allow-Methods"]
                allowed = {x.strip() for x in h["Access-Control-Allow-Headers"].split(",")}
                assert set(DEFAULT_HEADERS) <= allowed
                assert "x-supabase-api-version" in allowed
                assert int(h["Access-Control-Max-Age"]) > 0
                assert "Origin" in h["Vary"]
        # A header outside the allowed list is not granted (the browser then refuses).
        async with http.options(PATHS[0], headers=_preflight(ALLOWED, headers="x-evil")) as r:
            assert r.status == 204
            assert "x-evil" not in r.headers["Access-Control-Allow-Headers"]


async def test_a_preflight_from_another_origin_is_refused_without_cors_headers(
    cors_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession(cors_server.http_url) as http:
        for path in PATHS:
            async with http.options(path, headers=_preflight(OTHER)) as response:
                assert response.status == 403
                assert (await response.json())["error"]["code"] == "forbidden"
                assert not any(k.startswith("Access-Control-") for k in response.headers)


async def test_actual_responses_carry_the_origin_only_when_allowed(
    cors_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession(cors_server.http_url) as http:
        key = {"apikey": cors_server.anon_key, "Authorization": f"Bearer {cors_server.anon_key}"}
        async with http.get("/api/me", headers={"Origin": ALLOWED, **key}) as response:
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
            expose = response.headers["Access-Control-Expose-Headers"]
            assert "Content-Range" in expose and "X-Request-Id" in expose
            assert "Origin" in response.headers["Vary"]
        # Errors raised by aiohttp itself (an unknown route) are labelled too.
        async with http.get("/api/nowhere", headers={"Origin": ALLOWED}) as response:
            assert response.status == 404
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        async with http.get("/api/me", headers={"Origin": OTHER, **key}) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
        # Outside the API (the pages, health) nothing changes.
        async with http.get("/healthz", headers={"Origin": ALLOWED}) as response:
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_a_wildcard_allows_any_origin(database_url: str) -> None:
    async with (
        running_server(database_url, cors_origins=("*",)) as srv,
        aiohttp.ClientSession(srv.http_url) as http,
    ):
        async with http.options("/api/me", headers=_preflight(OTHER, "GET")) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "*"
        async with http.get("/api/me", headers={"Origin": OTHER}) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_by_default_only_the_same_origin(server: RunningServer) -> None:
    async with aiohttp.ClientSession(server.http_url) as http:
        async with http.options("/api/me", headers=_preflight(ALLOWED)) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
        async with http.get("/api/me", headers={"Origin": ALLOWED}) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
