"""Logs: an access line per request with its request id, socket lifecycle lines, the JSON
format, and never a token, whatever the level."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from realtime_messaging.keys import anon_key, service_role_key
from realtime_messaging.tokens import mint_staff_token
from tests.conftest import TEST_SECRET, RunningServer, Seed

from .wsclient import RawSocket

RTM = [sys.executable, "-m", "realtime_messaging"]


async def test_the_request_id_is_echoed_or_made(server: RunningServer) -> None:
    async with aiohttp.ClientSession(server.http_url) as http:
        async with http.get("/healthz", headers={"X-Request-Id": "abc-123.x"}) as response:
            assert response.headers["X-Request-Id"] == "abc-123.x"
        # Unsafe (spaces, too long) ids are replaced by one of the server's.
        for bad in ("has spaces", "x" * 200, "a\tb"):
            async with http.get("/healthz", headers={"X-Request-Id": bad}) as response:
                made = response.headers["X-Request-Id"]
                assert made != bad and len(made) == 32
        async with http.get("/api/nowhere") as response:
            assert response.status == 404 and len(response.headers["X-Request-Id"]) == 32


async def test_the_access_log_drops_query_secrets(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="realtime_messaging.access")
    async with aiohttp.ClientSession(server.http_url) as http:
        params = {"apikey": server.anon_key, "token": "pt_secret", "access_token": "t0k", "a": "1"}
        headers = {"X-Request-Id": "req-42"}
        async with http.get("/api/me", params=params, headers=headers) as response:
            status = response.status
    (record,) = [r for r in caplog.records if getattr(r, "request_id", None) == "req-42"]
    assert record.path == "/api/me?apikey=&token=&access_token=&a=1"  # type: ignore[attr-defined]
    assert record.status == status and record.method == "GET"  # type: ignore[attr-defined]
    assert record.duration_ms >= 0  # type: ignore[attr-defined]
    assert "req-42" in record.getMessage() and server.anon_key not in record.getMessage()


async def test_probes_log_at_debug_and_everything_else_at_info(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A load balancer's health checks every few seconds would drown the access log: answered
    probes log at debug; a failed probe and every other request at info."""
    caplog.set_level("DEBUG", logger="realtime_messaging.access")
    async with aiohttp.ClientSession(server.http_url) as http:
        for path, rid in (("/healthz", "probe-1"), ("/metrics", "probe-2"), ("/api/me", "api-1")):
            async with http.get(path, headers={"X-Request-Id": rid}):
                pass
    levels = {getattr(r, "request_id", None): r.levelname for r in caplog.records}
    assert levels["probe-1"] == levels["probe-2"] == "DEBUG"
    assert levels["api-1"] == "INFO"


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTM_")}
    env.update(RTM_DATA_DIR=str(data_dir), **extra)
    return env


async def test_no_token_reaches_the_logs_at_debug_level(
    tmp_path: Path, database_url: str, seed: Seed
) -> None:
    """``rtm serve --log-level debug`` with ``RTM_LOG_FORMAT=json``: requests and socket joins
    with tokens in headers and query strings; every log line is JSON, and no token is in any."""
    user, staff = await seed.staff()
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    forged = mint_staff_token("another-secret-" + "y" * 40, user)
    tokens = [staff, portal, forged, anon_key(TEST_SECRET), service_role_key(TEST_SECRET)]
    env = _env(
        tmp_path,
        RTM_DATABASE_URL=database_url,
        RTM_JWT_SECRET=TEST_SECRET,
        RTM_PORT="0",
        RTM_LOG_FORMAT="json",
    )
    proc = await asyncio.create_subprocess_exec(
        *RTM, "serve", "--log-level", "debug", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    stderr = asyncio.create_task(proc.stderr.read())
    try:
        url = ""
        async with asyncio.timeout(60):
            while not url:
                line = (await proc.stdout.readline()).decode()
                assert line, (await stderr).decode()[-2000:]
                if line.strip().startswith("API URL: "):
                    url = line.strip().removeprefix("API URL: ")
        ws_url = url.replace("http", "ws", 1) + "/realtime/v1/websocket"
        anon = anon_key(TEST_SECRET)
        async with aiohttp.ClientSession(url) as http:
            for token in (staff, portal, forged):
                for how in ("header", "query", "apikey"):
                    headers = {"Authorization": f"Bearer {token}"} if how == "header" else {}
                    params = {"access_token": token, "token": token} if how == "query" else {}
                    if how == "apikey":
                        headers, params = {"apikey": token}, {"apikey": token}
                    async with http.get("/api/me", headers=headers, params=params) as r:
                        await r.read()
            async with http.post(
                "/api/admin/customers",
                json={"name": "Logged"},
                headers={"Authorization": f"Bearer {service_role_key(TEST_SECRET)}"},
            ) as r:
                assert r.status == 201
        sock = await RawSocket.connect(ws_url, anon)
        try:
            for topic, token in (
                (f"realtime:staff:{user}:messages", staff),
                (f"realtime:conversation:{conversation}", portal),
                (f"realtime:customer:{uuid.uuid4()}:messages", portal),  # refused
                (f"realtime:conversation:{conversation}", forged),  # refused
            ):
                ref = sock.next_ref()
                await sock.send(topic, "phx_join", {"access_token": token}, ref, ref)
                await sock.recv()
            ref = sock.next_ref()
            await sock.send("phoenix", "access_token", {"access_token": staff}, ref)
        finally:
            await sock.close()
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await RawSocket.connect(ws_url, forged)
        # The server has seen the socket go (and logged it) once it counts no connection.
        async with aiohttp.ClientSession(url) as http, asyncio.timeout(10):
            while True:
                async with http.get("/metrics") as r:
                    if "rtm_active_connections 0.0" in await r.text():
                        break
                await asyncio.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    logged = (await stderr).decode()
    lines = [json.loads(line) for line in logged.splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    access = [x for x in lines if x["logger"] == "realtime_messaging.access"]
    assert len(access) >= 10 and all(len(x["request_id"]) == 32 for x in access)
    assert any(x["status"] == 101 for x in access)
    messages = [x["message"] for x in lines]
    assert any("connected: anon" in m for m in messages), messages
    assert any("refused: Unauthorized" in m for m in messages), messages
    assert any("disconnected" in m for m in messages), messages
    assert any("socket refused (401)" in m for m in messages), messages
    assert any(x["level"] == "debug" for x in lines)
    for token in tokens:
        for part in (token, token.split(".")[-1]):  # a whole JWT or its signature
            assert part not in logged
