"""What a refused reconnect attempt costs: the proxy is looked up once per outage, not at
every attempt (websockets reads the whole environment for it, nine tenths of a refused
attempt's cost), and the one the environment names is still used."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import pytest

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
