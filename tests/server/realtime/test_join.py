"""Joining and leaving: the reply, the socket's limits, the join's own token, replacing a
joined channel, and what a refused join counts."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from realtime_messaging.protocol.frames import Vsn
from realtime_messaging.server import batching
from realtime_messaging.server.batching import Coalesced
from tests.conftest import TEST_SECRET, RunningServer, running_server

from ..wsclient import RawSocket
from .metrics import socket_errors


async def test_join_echoes_bindings_in_order_with_stable_nonzero_ids(server: RunningServer) -> None:
    bindings = [
        {"event": "INSERT", "schema": "public", "table": "customer_messages", "filter": "id=eq.1"},
        {"event": "*", "schema": "public", "table": "message_read_receipts", "extra": [1]},
    ]
    a = await RawSocket.connect(server.ws_url, server.anon_key)
    b = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V2)
    try:
        ra = await a.join("room-bindings", {"postgres_changes": bindings})
        rb = await b.join("room-bindings", {"postgres_changes": bindings})
        entries = ra["response"]["postgres_changes"]
        assert [{k: v for k, v in e.items() if k != "id"} for e in entries] == bindings
        assert all(isinstance(e["id"], int) and e["id"] > 0 for e in entries)
        assert entries[0]["id"] != entries[1]["id"]
        assert rb["response"]["postgres_changes"] == entries
    finally:
        await a.close()
        await b.close()


async def test_join_accepts_null_config_sections(server: RunningServer) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        ref = sock.next_ref()
        payload = {"config": {"broadcast": None, "presence": None, "postgres_changes": None}}
        await sock.send("realtime:room-null", "phx_join", payload, ref, ref)
        reply = await sock.reply_to(ref)
        assert reply["payload"] == {"status": "ok", "response": {"postgres_changes": []}}
    finally:
        await sock.close()


async def test_leave_replies_ok_then_phx_close(server: RunningServer) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await sock.join("room-leave")
        await sock.send("realtime:room-leave", "phx_leave", {}, "20", "1")
        reply = await sock.recv()
        assert reply["event"] == "phx_reply" and reply["ref"] == "20"
        assert reply["payload"]["status"] == "ok"
        close = await sock.recv()
        assert close["event"] == "phx_close" and close["ref"] == "1"
        await sock.send(
            "realtime:room-leave",
            "broadcast",
            {"type": "broadcast", "event": "e", "payload": {}},
            "21",
        )
        assert (await sock.reply_to("21"))["payload"]["response"]["reason"] == "unmatched topic"
    finally:
        await sock.close()


async def test_channel_limit_per_connection(database_url: str) -> None:
    async with running_server(database_url, max_channels_per_connection=2) as srv:
        sock = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            assert (await sock.join("limit-1"))["status"] == "ok"
            assert (await sock.join("limit-2"))["status"] == "ok"
            third = await sock.join("limit-3")
            assert third == {
                "status": "error",
                "response": {"reason": "ChannelRateLimitReached: Too many channels"},
            }
            assert (await sock.join("limit-1"))[
                "status"
            ] == "ok"  # rejoining a joined topic is not a new channel
        finally:
            await sock.close()


async def test_join_flood_is_refused_and_disconnected(database_url: str) -> None:
    async with running_server(database_url, max_joins_per_second=5) as srv:
        flood = await RawSocket.connect(srv.ws_url, srv.anon_key)
        other = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            for i in range(10):
                ref = str(i + 1)
                await flood.send(f"realtime:flood-{i}", "phx_join", {}, ref, ref)
            refused = await flood.expect(lambda m: m.get("payload", {}).get("status") == "error")
            assert (
                refused["payload"]["response"]["reason"]
                == "ClientJoinRateLimitReached: Too many joins per second"
            )
            assert await flood.closed() == 1008
            assert (await other.join("after-flood"))["status"] == "ok"
        finally:
            await flood.close()
            await other.close()


def _token(claims: dict[str, object]) -> str:
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


async def test_expired_join_token_is_refused(server: RunningServer) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        expired = _token({"role": "authenticated", "exp": int(time.time()) - 30})
        reply = await sock.join("room-expired", access_token=expired)
        assert reply["status"] == "error"
        assert reply["response"]["reason"].startswith("InvalidJWTToken: Token has expired")
    finally:
        await sock.close()


async def test_duplicate_join_replaces_the_channel_without_phx_close(server: RunningServer) -> None:
    a = await RawSocket.connect(server.ws_url, server.anon_key)
    b = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await a.join("dup", {"broadcast": {"self": False}})
        await b.join("dup")
        # The second join of the same topic on the same socket: only a reply, no phx_close.
        ref = a.next_ref()
        await a.send("realtime:dup", "phx_join", {"config": {}}, ref, ref)
        first = await a.recv()
        assert first["event"] == "phx_reply" and first["payload"]["status"] == "ok"
        await b.send(
            "realtime:dup",
            "broadcast",
            {"type": "broadcast", "event": "after", "payload": {}},
            "9",
            "1",
        )
        got = await a.recv()
        assert got["event"] == "broadcast" and got["payload"]["event"] == "after"
    finally:
        await a.close()
        await b.close()


async def test_a_replaced_channel_receives_each_broadcast_once(server: RunningServer) -> None:
    a = await RawSocket.connect(server.ws_url, server.anon_key)
    b = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await a.join("dup-once")
        await a.join("dup-once")
        await b.join("dup-once")
        for event in ("first", "second"):
            await b.send(
                "realtime:dup-once",
                "broadcast",
                {"type": "broadcast", "event": event, "payload": {}},
                None,
                "1",
            )
        # Had the first channel stayed in the hub, "first" would arrive twice before "second".
        events = [(await a.recv())["payload"]["event"] for _ in range(2)]
        assert events == ["first", "second"]
    finally:
        await a.close()
        await b.close()


async def test_a_refused_join_is_counted(server: RunningServer) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        before = await socket_errors(server.http_url, "join_refused")
        reply = await sock.join("staff:00000000-0000-0000-0000-000000000000")
        assert reply["status"] == "error"
        assert reply["response"]["reason"].startswith("Unauthorized: ")
        assert await socket_errors(server.http_url, "join_refused") == before + 1
    finally:
        await sock.close()


class _Lookups:
    """A look-up query that records its batches and answers each when told to."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.sent = asyncio.Event()
        self.answer = asyncio.Event()

    async def fetch(self, keys: list[int]) -> dict[int, int]:
        self.batches.append(keys)
        self.sent.set()
        await self.answer.wait()
        return {k: k * 10 for k in keys}


async def _turns(n: int) -> None:
    """Let the loop run ``n`` turns (a yield each, no waiting on time)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_lookups_asked_while_two_batches_are_on_their_way_go_in_the_next_one() -> None:
    """The joins' token and conversation look-ups during a reconnect storm: a second query
    goes while the first is on its way; those asked in later turns, while both run, share the
    next query instead of one each."""
    lookups = _Lookups()
    coalesced: Coalesced[int, int] = Coalesced(lookups.fetch)
    first = asyncio.ensure_future(coalesced.get(1))
    await lookups.sent.wait()
    later = []
    for key in (2, 3, 4, 3):  # one a turn
        later.append(asyncio.ensure_future(coalesced.get(key)))
        await _turns(2)
    assert lookups.batches == [[1], [2]]
    lookups.answer.set()
    assert await asyncio.gather(first, *later) == [10, 20, 30, 40, 30]
    assert lookups.batches == [[1], [2], [3, 4]]


async def test_a_slow_batch_does_not_hold_the_next_one_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first look-up that takes long (a fresh pool connection, a busy loop) leaves room for
    the next batch, which is answered first: in a reconnect storm one slow replay held 664
    others back."""
    monkeypatch.setattr(batching, "MAX_HOLD", 3600.0)  # only the second slot lets it through
    slow = _Lookups()

    async def fetch(keys: list[int]) -> dict[int, int]:
        if keys == [1]:
            return await slow.fetch(keys)
        return {k: k * 10 for k in keys}

    coalesced: Coalesced[int, int] = Coalesced(fetch)
    first = asyncio.ensure_future(coalesced.get(1))
    await slow.sent.wait()
    async with asyncio.timeout(5):
        assert await coalesced.get(2) == 20
    assert not first.done()
    slow.answer.set()
    assert await first == 10


async def test_a_stuck_batch_holds_the_next_one_back_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "MAX_HOLD", 0.0)
    stuck = _Lookups()
    answered = {2: 20}

    async def fetch(keys: list[int]) -> dict[int, int]:
        if keys == [1]:
            return await stuck.fetch(keys)
        return {k: answered[k] for k in keys}

    coalesced: Coalesced[int, int] = Coalesced(fetch)
    first = asyncio.ensure_future(coalesced.get(1))
    await stuck.sent.wait()
    second = asyncio.ensure_future(coalesced.get(1))  # a second batch, stuck as well
    await _turns(3)  # the ask, its batch, the batch's query
    assert stuck.batches == [[1], [1]]
    async with asyncio.timeout(5):  # held back for good, it would never be answered
        assert await coalesced.get(2) == 20
    assert not first.done() and not second.done()
    stuck.answer.set()
    assert await asyncio.gather(first, second) == [10, 10]
