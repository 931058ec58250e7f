"""A socket's session: closing with a full handshake when the server stops, leaving every
channel when the socket goes, and freed as soon as it has gone."""

from __future__ import annotations

import asyncio
import gc

from realtime_messaging.server.fanout import Outbox
from realtime_messaging.server.realtime.channel import Channel
from realtime_messaging.server.realtime.session import Session
from realtime_messaging.server.realtime.wire import PicowsWire
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


def _alive(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


async def test_a_closed_socket_is_freed_without_the_cycle_collector(database_url: str) -> None:
    """A closed socket's session, wire, outbox and channels go as soon as it closes. They
    used to point at each other (session and wire, the outbox's overflow callback), so each
    closed socket kept about 6.6 KB until a full pass of the garbage collector, which then
    stopped the server for over a second after a few reconnect storms."""
    kinds = (Session, PicowsWire, Outbox, Channel)
    async with running_server(database_url) as srv:
        gc.collect()
        gc.disable()
        try:
            sockets = [await RawSocket.connect(srv.ws_url, srv.anon_key) for _ in range(3)]
            for sock in sockets:
                reply = await sock.join("room-freed", {"presence": {"key": "k"}})
                assert reply["status"] == "ok"
            assert all(_alive(kind) >= 3 for kind in kinds)
            for sock in sockets:
                await sock.close()
            async with asyncio.timeout(10):
                while any(_alive(kind) for kind in kinds):
                    await asyncio.sleep(0.05)  # polls the condition; the timeout fails it
        finally:
            gc.enable()
