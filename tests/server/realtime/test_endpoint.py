"""The endpoint: the upgrade (paths, API keys, wire formats, frame size), the idle sweeper,
the log of connections."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import jwt
import orjson
import pytest

from tests.conftest import TEST_SECRET, RunningServer, running_server

from ..wsclient import RawSocket


async def test_both_socket_paths_upgrade(server: RunningServer) -> None:
    url = server.http_url.replace("http://", "ws://") + "/socket/websocket"
    sock = await RawSocket.connect(url, server.anon_key)
    try:
        reply = await sock.join("room-paths")
        assert reply["status"] == "ok"
    finally:
        await sock.close()


def _token(claims: dict[str, object], secret: str = TEST_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("apikey", "message"),
    [
        (None, "API key is missing"),
        ("not-a-jwt", "The token provided is not a valid JWT"),
        (
            _token({"role": "anon", "exp": 4_000_000_000}, "wrong-secret-" + "y" * 40),
            "Failed to validate JWT signature",
        ),
        (_token({"role": "anon", "exp": 1_000}), "Token has expired"),
        (_token({"role": "anon"}), "Fields `role` and `exp` are required in JWT"),
        (_token({"exp": 4_000_000_000}), "Fields `role` and `exp` are required in JWT"),
        ("pt_unknown-portal-token", "The portal token is not valid"),
    ],
)
async def test_bad_api_keys_get_401_before_upgrade(
    server: RunningServer, apikey: str | None, message: str
) -> None:
    params = {"vsn": "1.0.0"} | ({"apikey": apikey} if apikey is not None else {})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(server.ws_url, params=params)
        assert info.value.status == 401
        async with session.get(server.ws_url, params=params) as response:
            assert response.status == 401
            body = orjson.loads(await response.read())
            assert body["error"].startswith(message)


async def test_unknown_vsn_is_refused(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            server.ws_url, params={"vsn": "9.9.9", "apikey": server.anon_key}
        ) as response:
            assert response.status == 400


async def test_oversized_frame_closes_with_1009(database_url: str) -> None:
    async with running_server(database_url, max_frame_bytes=4096) as srv:
        sock = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            await sock.send("realtime:big", "phx_join", {"config": {}, "pad": "x" * 8192}, "1", "1")
            assert await sock.closed() == 1009
        finally:
            await sock.close()


async def test_socket_idle_past_timeout_is_closed(database_url: str) -> None:
    async with running_server(database_url, idle_timeout=0.3) as srv:
        sock = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            started = asyncio.get_running_loop().time()
            assert await sock.closed() == 1001
            assert asyncio.get_running_loop().time() - started < 3
        finally:
            await sock.close()


async def test_connections_are_logged_under_the_endpoints_name(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="realtime_messaging.server.realtime")
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await sock.send("phoenix", "heartbeat", {}, "1")
        await sock.reply_to("1")
    finally:
        await sock.close()
    connected = [
        r
        for r in caplog.records
        if r.name == "realtime_messaging.server.realtime" and " connected: " in r.getMessage()
    ]
    assert connected and connected[-1].getMessage().endswith("connected: anon, vsn 1.0.0")
    assert connected[-1].levelno == logging.DEBUG  # the close logs at info

    def gone() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if " disconnected: closed by the client" in r.getMessage()
        ]

    async with asyncio.timeout(5):  # the server sees the close after the client does
        while not gone():
            await asyncio.sleep(0.01)
    assert gone()[-1].levelno == logging.INFO
