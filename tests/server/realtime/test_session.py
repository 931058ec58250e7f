"""A socket's session: closing with a full handshake when the server stops, leaving every
channel when the socket goes, and freed as soon as it has gone."""

from __future__ import annotations

import asyncio
import gc

from realtime_messaging.server.realtime.channel import Channel
from realtime_messaging.server.realtime.session import Session
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


def _sessions() -> set[str]:
    return {o.id for o in gc.get_objects() if type(o) is Session}


def _channels(topic: str) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is Channel and o.topic == topic)


async def test_a_closed_socket_is_freed_without_the_cycle_collector(database_url: str) -> None:
    """A closed socket's session and channels go as soon as it closes. The session, its wire
    and its outbox's overflow callback used to point at each other, so each closed socket kept
    about 6.6 KB until a full pass of the garbage collector, which then stopped the server for
    over a second after a few reconnect storms."""
    topic = "realtime:room-freed"
    async with running_server(database_url) as srv:
        gc.collect()
        gc.disable()
        try:
            before = _sessions()
            sockets = [await RawSocket.connect(srv.ws_url, srv.anon_key) for _ in range(3)]
            for sock in sockets:
                reply = await sock.join("room-freed", {"presence": {"key": "k"}})
                assert reply["status"] == "ok"
            mine = _sessions() - before
            assert len(mine) >= 3 and _channels(topic) == 3
            for sock in sockets:
                await sock.close()
            async with asyncio.timeout(10):
                while mine & _sessions() or _channels(topic):
                    await asyncio.sleep(0.05)  # polls the condition; the timeout fails it
        finally:
            gc.enable()
