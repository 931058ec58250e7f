"""Fixtures for the compatibility tests: clients that are always closed, even when a test fails."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from .clients import JsClient, PyClient


class Clients:
    """Starts official clients against the test server and remembers them for teardown."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.opened: list[JsClient | PyClient] = []

    async def js(
        self,
        apikey: str,
        *,
        vsn: str | None = None,
        access_token: str | None = None,
        name: str = "js",
    ) -> JsClient:
        """A realtime-js client (vsn None: the client's default, 2.0.0)."""
        client = await JsClient.start(
            self.server.realtime_url, apikey, vsn=vsn, access_token=access_token, name=name
        )
        self.opened.append(client)
        return client

    def py(self, token: str, name: str = "py") -> PyClient:
        """A realtime-py client; it connects on its first join."""
        client = PyClient(self.server.realtime_url, token, name=name)
        self.opened.append(client)
        return client

    async def close(self) -> None:
        for client in reversed(self.opened):
            await client.close()
            if isinstance(client, JsClient) and client.stderr:
                print(f"--- {client.name} stderr ---\n{client.stderr}", file=sys.stderr)


@pytest.fixture
async def clients(server: Any) -> AsyncIterator[Clients]:
    opened = Clients(server)
    try:
        yield opened
    finally:
        await opened.close()
