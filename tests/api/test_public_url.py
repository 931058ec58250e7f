"""The subscription answer's ``supabaseUrl`` is this server's configured public URL, never what
the request claims (review finding 5: ``Host: evil.example`` came back as the URL to connect to).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from realtime_messaging.config import Settings
from realtime_messaging.exceptions import ConfigurationError
from realtime_messaging.server.public_url import PublicUrl
from tests.conftest import RunningServer, Seed, running_server

from .conftest import Http, assert_ok

PATH = "/api/messages/realtime/subscribe"
RTM = [sys.executable, "-m", "realtime_messaging"]

#: Headers a client (or an attacker on a shared cache) may send to steer the URL.
SPOOFED = {
    "Host": "evil.example",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "https",
    "Forwarded": "host=evil.example;proto=https",
}


async def _supabase_url(http: Http, token: str, headers: dict[str, str]) -> str:
    status, reply, _ = await http.call("POST", PATH, token, json={}, headers=headers)
    url: str = assert_ok(status, reply)["supabaseUrl"]
    return url


async def test_the_host_header_is_not_reflected(
    http: Http, server: RunningServer, seed: Seed
) -> None:
    """The default public URL is the address the server listens on (bound port included)."""
    _, portal = await seed.customer()
    assert await _supabase_url(http, portal, {"Host": "evil.example"}) == server.http_url
    # Proxy headers are not trusted unless told to.
    assert await _supabase_url(http, portal, SPOOFED) == server.http_url


async def test_rtm_public_url_is_the_answer(database_url: str, seed: Seed) -> None:
    _, portal = await seed.customer()
    async with (
        running_server(database_url, public_url="https://chat.example.com/rtm/") as srv,
        aiohttp.ClientSession() as session,
    ):
        http = Http(session, srv.http_url)
        for headers in ({}, SPOOFED):
            assert await _supabase_url(http, portal, headers) == "https://chat.example.com/rtm"


async def test_trusted_proxy_headers_are_used_when_valid(database_url: str, seed: Seed) -> None:
    _, portal = await seed.customer()
    async with (
        running_server(
            database_url, public_url="http://internal:4000", trust_proxy_headers=True
        ) as srv,
        aiohttp.ClientSession() as session,
    ):
        http = Http(session, srv.http_url)
        for headers, expected in (
            (
                {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example.com"},
                "https://chat.example.com",
            ),
            # The first value: the proxy nearest the client.
            (
                {
                    "X-Forwarded-Proto": "HTTPS, http",
                    "X-Forwarded-Host": "a.example:8443, b.example",
                },
                "https://a.example:8443",
            ),
            ({"X-Forwarded-Host": "[2001:db8::1]:8080"}, "http://[2001:db8::1]:8080"),
            ({"X-Forwarded-Proto": "https"}, "https://internal:4000"),
            # Host alone is still not trusted.
            ({"Host": "evil.example"}, "http://internal:4000"),
        ):
            assert await _supabase_url(http, portal, headers) == expected, headers
        # Anything but a host[:port] and http/https is ignored, not echoed.
        for bad_host in (
            "evil.example/path",
            "user@evil.example",
            "evil.example:99999",
            "evil.example:",
            "<script>",
            "evil.example?x=1",
            "",
        ):
            assert (
                await _supabase_url(http, portal, {"X-Forwarded-Host": bad_host})
                == "http://internal:4000"
            ), bad_host
        for bad_proto in ("javascript", "ftp", "https://x", ""):
            assert (
                await _supabase_url(http, portal, {"X-Forwarded-Proto": bad_proto})
                == "http://internal:4000"
            ), bad_proto


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings.from_env()
    assert defaults.public_url is None and defaults.trust_proxy_headers is False
    monkeypatch.setenv("RTM_PUBLIC_URL", "https://chat.example.com")
    monkeypatch.setenv("RTM_TRUST_PROXY_HEADERS", "1")
    settings = Settings.from_env()
    assert settings.public_url == "https://chat.example.com"
    assert settings.trust_proxy_headers is True
    monkeypatch.setenv("RTM_TRUST_PROXY_HEADERS", "maybe")
    with pytest.raises(ValueError, match="RTM_TRUST_PROXY_HEADERS"):
        Settings.from_env()


def test_a_configured_url_that_is_not_one_stops_the_start() -> None:
    for bad in ("ftp://x", "http://user:pw@x", "http://x/?q=1", "http://x y", "http://:4000"):
        with pytest.raises(ConfigurationError, match="RTM_PUBLIC_URL"):
            PublicUrl.configured(bad)
    assert PublicUrl.configured("HTTPS://chat.example.com/rtm/").base == (
        "https://chat.example.com/rtm"
    )


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTM_")}
    return {**env, "RTM_DATA_DIR": str(tmp_path), "RTM_PORT": "0", **extra}


@pytest.mark.parametrize("bad", ["ftp://chat.example.com", "chat.example.com", "http://x/?q=1"])
def test_serve_refuses_a_public_url_that_is_not_one(tmp_path: Path, bad: str) -> None:
    for args, extra in (
        (["serve", "--public-url", bad], {}),
        (["serve"], {"RTM_PUBLIC_URL": bad}),
    ):
        # A database that refuses: were the URL let through, serving would fail on it instead.
        env = _env(tmp_path, RTM_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", **extra)
        out = subprocess.run([*RTM, *args], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out
        assert "Invalid value for '--public-url'" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr, out.stderr


async def test_serve_public_url_flag(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        *RTM,
        "serve",
        "--public-url",
        "https://chat.example.com",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        banner: dict[str, str] = {}
        async with asyncio.timeout(60):
            while "service_role key" not in banner:
                line = (await proc.stdout.readline()).decode()  # type: ignore[union-attr]
                assert line, (await proc.stderr.read()).decode()  # type: ignore[union-attr]
                key, _, value = line.strip().partition(": ")
                banner[key] = value
        keys = json.loads(
            subprocess.run(
                [*RTM, "keys", "--json"], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        async with aiohttp.ClientSession() as session:
            http = Http(session, banner["API URL"])
            url = await _supabase_url(http, keys["service_role_key"], {"Host": "evil.example"})
            assert url == "https://chat.example.com"
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
