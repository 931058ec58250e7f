"""Broadcast and presence between real sockets, in both wire formats."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from realtime_messaging.protocol.frames import Vsn, encode_user_broadcast_push
from tests.conftest import RunningServer

from .wsclient import RawSocket


def _is(event: str):  # type: ignore[no-untyped-def]
    return lambda m: m.get("event") == event


async def _pair(
    server: RunningServer, topic: str, config: dict, vsn_a: Vsn = Vsn.V1, vsn_b: Vsn = Vsn.V1
):  # type: ignore[no-untyped-def,type-arg]
    a = await RawSocket.connect(server.ws_url, server.anon_key, vsn_a)
    b = await RawSocket.connect(server.ws_url, server.anon_key, vsn_b)
    await a.join(topic, config)
    await b.join(topic, config)
    return a, b


async def test_broadcast_reaches_others_but_not_the_sender_without_self(
    server: RunningServer,
) -> None:
    a, b = await _pair(server, "bc-noself", {"broadcast": {"self": False, "ack": True}})
    try:
        await a.send(
            "realtime:bc-noself",
            "broadcast",
            {"type": "broadcast", "event": "hi", "payload": {"n": 1}},
            "5",
            "1",
        )
        assert (await a.reply_to("5"))["payload"] == {"status": "ok", "response": {}}
        got = await b.expect(_is("broadcast"))
        assert got == {
            "topic": "realtime:bc-noself",
            "event": "broadcast",
            "payload": {"type": "broadcast", "event": "hi", "payload": {"n": 1}},
            "ref": None,
        }
        # The sender gets nothing more: a heartbeat round trip proves the queue is empty.
        await a.send("phoenix", "heartbeat", {}, "6")
        assert (await a.recv())["ref"] == "6"
    finally:
        await a.close()
        await b.close()


async def test_broadcast_with_self_reaches_the_sender(server: RunningServer) -> None:
    a = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V2)
    try:
        await a.join("bc-self", {"broadcast": {"self": True}})
        await a.send(
            "realtime:bc-self",
            "broadcast",
            {"type": "broadcast", "event": "echo", "payload": {"x": 1}},
            "3",
            "1",
        )
        got = await a.expect(_is("broadcast"))
        assert got["payload"] == {"type": "broadcast", "event": "echo", "payload": {"x": 1}}
        assert got["ref"] is None and got["join_ref"] is None
    finally:
        await a.close()


async def test_without_ack_the_broadcast_gets_no_reply(server: RunningServer) -> None:
    a = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await a.join("bc-noack", {"broadcast": {"self": False, "ack": False}})
        await a.send(
            "realtime:bc-noack",
            "broadcast",
            {"type": "broadcast", "event": "e", "payload": {}},
            "4",
            "1",
        )
        await a.send("phoenix", "heartbeat", {}, "5")
        assert (await a.recv())["ref"] == "5"
    finally:
        await a.close()


async def test_binary_push_reaches_v2_as_kind4_and_v1_as_json(server: RunningServer) -> None:
    sender = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V2)
    v2 = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V2)
    v1 = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V1)
    try:
        for s in (sender, v2, v1):
            await s.join("bc-binary", {"broadcast": {"ack": True}})
        frame = encode_user_broadcast_push(
            "1", "9", "realtime:bc-binary", "cursor", orjson.dumps({"x": 1})
        )
        await sender.send_raw(frame)
        assert (await sender.reply_to("9"))["payload"]["status"] == "ok"
        got = await v2.expect(lambda m: "binary" in m)
        data = got["binary"]
        assert data[0] == 4
        topic_len, event_len, meta_len, encoding = data[1:5]
        body = data[5:]
        assert body[:topic_len] == b"realtime:bc-binary"
        assert body[topic_len : topic_len + event_len] == b"cursor"
        assert encoding == 1
        assert orjson.loads(body[topic_len + event_len + meta_len :]) == {"x": 1}
        json_got = await v1.expect(_is("broadcast"))
        assert json_got["payload"] == {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
    finally:
        for s in (sender, v2, v1):
            await s.close()


async def test_binary_encoded_payload_is_not_sent_to_v1(server: RunningServer) -> None:
    sender = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V2)
    v1 = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V1)
    try:
        await sender.join("bc-raw")
        await v1.join("bc-raw")
        frame = encode_user_broadcast_push(
            "1", None, "realtime:bc-raw", "blob", b"\x00\x01\x02", json_encoded=False
        )
        await sender.send_raw(frame)
        await sender.send_raw(
            encode_user_broadcast_push("1", None, "realtime:bc-raw", "after", orjson.dumps({}))
        )
        got = await v1.expect(_is("broadcast"))
        assert got["payload"]["event"] == "after"
    finally:
        await sender.close()
        await v1.close()


async def test_v1_text_broadcast_reaches_v2_as_array(server: RunningServer) -> None:
    a, b = await _pair(server, "bc-mixed", {}, Vsn.V1, Vsn.V2)
    try:
        await a.send(
            "realtime:bc-mixed",
            "broadcast",
            {"type": "broadcast", "event": "m", "payload": {"k": "v"}},
            "2",
            "1",
        )
        got = await b.expect(_is("broadcast"))
        assert got["payload"] == {"type": "broadcast", "event": "m", "payload": {"k": "v"}}
    finally:
        await a.close()
        await b.close()


async def test_presence_state_after_join_then_diffs_to_every_member(server: RunningServer) -> None:
    cfg_a = {"presence": {"key": "alice", "enabled": True}}
    cfg_b = {"presence": {"key": "bob", "enabled": True}}
    a = await RawSocket.connect(server.ws_url, server.anon_key)
    b = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V2)
    try:
        await a.join("pr-room", cfg_a)
        assert (await a.expect(_is("presence_state")))["payload"] == {}
        await a.send(
            "realtime:pr-room", "presence", {"event": "track", "payload": {"name": "A"}}, "3", "1"
        )
        assert (await a.reply_to("3"))["payload"]["status"] == "ok"
        diff = (await a.expect(_is("presence_diff")))["payload"]
        meta = diff["joins"]["alice"]["metas"][0]
        assert meta["name"] == "A" and meta["phx_ref"]
        assert diff["leaves"] == {}

        await b.join("pr-room", cfg_b)
        state = await b.expect(_is("presence_state"))
        assert state["payload"] == {"alice": {"metas": [meta]}}
        assert state["join_ref"] == "1"

        # Re-tracking replaces: a leave of the old meta and a join carrying phx_ref_prev.
        await a.send(
            "realtime:pr-room", "presence", {"event": "track", "payload": {"name": "A2"}}, "4", "1"
        )
        retrack = (await b.expect(_is("presence_diff")))["payload"]
        assert retrack["leaves"] == {"alice": {"metas": [meta]}}
        new_meta = retrack["joins"]["alice"]["metas"][0]
        assert new_meta["name"] == "A2" and new_meta["phx_ref_prev"] == meta["phx_ref"]

        await a.send("realtime:pr-room", "presence", {"event": "untrack"}, "5", "1")
        untrack = (await b.expect(_is("presence_diff")))["payload"]
        assert untrack == {"joins": {}, "leaves": {"alice": {"metas": [new_meta]}}}
    finally:
        await a.close()
        await b.close()


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


async def test_presence_track_needs_a_map(server: RunningServer) -> None:
    a = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await a.join("pr-bad")
        await a.send("realtime:pr-bad", "presence", {"event": "track", "payload": "nope"}, "2", "1")
        reply = await a.reply_to("2")
        assert reply["payload"] == {
            "status": "error",
            "response": {"reason": "Presence track payload must be a map"},
        }
    finally:
        await a.close()


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


@pytest.mark.parametrize("vsn", [Vsn.V1, Vsn.V2])
async def test_many_subscribers_each_get_every_broadcast_once_in_order(
    server: RunningServer, vsn: Vsn
) -> None:
    subs = [await RawSocket.connect(server.ws_url, server.anon_key, vsn) for _ in range(20)]
    try:
        for s in subs:
            await s.join(f"fan-{vsn.value}")
        sender = subs[0]
        for i in range(50):
            await sender.send(
                f"realtime:fan-{vsn.value}",
                "broadcast",
                {"type": "broadcast", "event": "n", "payload": {"i": i}},
                None,
                "1",
            )

        async def collect(s: RawSocket) -> list[int]:
            seen: list[int] = []
            while len(seen) < 50:
                m = await s.expect(_is("broadcast"))
                seen.append(m["payload"]["payload"]["i"])
            return seen

        results = await asyncio.gather(*(collect(s) for s in subs[1:]))
        assert all(r == list(range(50)) for r in results)
    finally:
        for s in subs:
            await s.close()


async def test_internal_failure_errors_only_that_channel(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime_messaging.server import realtime

    def broken(self: object, event: object) -> None:
        raise RuntimeError("injected failure")

    a = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await a.join("fails")
        await a.join("survives", {"broadcast": {"self": True}})
        monkeypatch.setattr(realtime.Session, "_broadcast", broken)
        await a.send(
            "realtime:fails",
            "broadcast",
            {"type": "broadcast", "event": "x", "payload": {}},
            "5",
            "1",
        )
        error = await a.recv()
        assert error == {"topic": "realtime:fails", "event": "phx_error", "payload": {}, "ref": "1"}
        monkeypatch.undo()
        await a.send(
            "realtime:survives",
            "broadcast",
            {"type": "broadcast", "event": "ok", "payload": {}},
            None,
            "2",
        )
        assert (await a.expect(_is("broadcast")))["payload"]["event"] == "ok"
    finally:
        await a.close()
