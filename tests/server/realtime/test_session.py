"""A socket's session: closing with a full handshake when the server stops, and leaving every
channel when the socket goes."""

from __future__ import annotations

import asyncio

from tests.conftest import RunningServer, running_server

from ..wsclient import RawSocket


async def test_a_stopping_server_closes_its_sockets_with_1012(database_url: str) -> None:
    async with running_server(database_url) as srv:
        sock = await RawSocket.connect(srv.ws_url, srv.anon_key)
        assert (await sock.join("room-drain"))["status"] == "ok"
        # Read while the server stops, so that the close handshake completes at once.
        closed = asyncio.create_task(sock.closed())
    try:
        assert await closed == 1012
    finally:
        await sock.close()


async def test_closed_connection_leaves_presence_at_once(server: RunningServer) -> None:
    a = await RawSocket.connect(server.ws_url, server.anon_key)
    b = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await a.join("pr-close", {"presence": {"key": "gone"}})
        await b.join("pr-close", {"presence": {"key": "stays", "enabled": True}})
        await a.send(
            "realtime:pr-close", "presence", {"event": "track", "payload": {"v": 1}}, "2", "1"
        )
        joined = await b.expect(
            lambda m: m.get("event") == "presence_diff" and "gone" in m["payload"]["joins"]
        )
        await a.close()
        left = await b.expect(
            lambda m: m.get("event") == "presence_diff" and "gone" in m["payload"]["leaves"]
        )
        assert left["payload"]["leaves"]["gone"] == joined["payload"]["joins"]["gone"]
    finally:
        await b.close()
