"""What a refused reconnect attempt costs: the proxy is looked up once per outage, not at
every attempt (websockets reads the whole environment for it, nine tenths of a refused
attempt's cost), and the one the environment names is still used."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from typing import Any

import pytest
from aiohttp import web

from realtime_messaging.client import socket as socket_module
from realtime_messaging.client.socket import RealtimeSocket


async def test_the_proxy_is_looked_up_once_per_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    lookups = 0
    real_getproxies = urllib.request.getproxies

    def counted() -> dict[str, str]:
        nonlocal lookups
        lookups += 1
        return real_getproxies()

    monkeypatch.setattr(urllib.request, "getproxies", counted)
    proxies: list[Any] = []
    tried = asyncio.Event()

    async def refused(*args: Any, **kwargs: Any) -> Any:
        proxies.append(kwargs.get("proxy"))
        if len(proxies) == 3:
            tried.set()
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(socket_module, "connect", refused)
    sock = RealtimeSocket("ws://127.0.0.1:9/realtime/v1/websocket", "key")
    sock.start()
    try:
        async with asyncio.timeout(5):
            await tried.wait()
    finally:
        await sock.close()
    assert proxies[:3] == ["http://proxy.invalid:3128"] * 3
    assert lookups == 1


async def _waits_asked(monkeypatch: pytest.MonkeyPatch, url: str) -> list[bool]:
    """The ``refused`` flag of the first three retry waits the SDK asks for against ``url``
    (each wait made a millisecond)."""
    flags: list[bool] = []
    asked = asyncio.Event()

    def recorded(attempt: int, down_for: float, base: float, cap: float, **kw: Any) -> float:
        flags.append(kw.get("refused", False))
        if len(flags) == 3:
            asked.set()
        return 0.001

    monkeypatch.setattr(socket_module, "reconnect_delay", recorded)
    sock = RealtimeSocket(url, "key")
    sock.start()
    try:
        async with asyncio.timeout(5):
            await asked.wait()
    finally:
        await sock.close()
    return flags[:3]


async def test_a_port_nothing_listens_on_is_retried_at_the_refused_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restarting server's port refuses connections outright: the short step applies."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
    try:
        port = closed.getsockname()[1]
        flags = await _waits_asked(monkeypatch, f"ws://127.0.0.1:{port}/realtime/v1/websocket")
    finally:
        closed.close()
    assert flags == [True, True, True]


async def test_a_server_answering_with_an_error_keeps_the_longer_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server (or a proxy) that answers 503 pays a request per attempt: not the short step."""

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503, text="draining")

    app = web.Application()
    app.router.add_get("/realtime/v1/websocket", unavailable)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        flags = await _waits_asked(monkeypatch, f"ws://127.0.0.1:{port}/realtime/v1/websocket")
    finally:
        await runner.cleanup()
    assert flags == [False, False, False]
