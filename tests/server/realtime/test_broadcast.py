"""Broadcast between real sockets in both wire formats, and typing: a broadcast that also
writes the sender's typing indicator."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest

from realtime_messaging.protocol.frames import Vsn, encode_user_broadcast_push
from tests.conftest import RunningServer

from ..wsclient import RawSocket
from .conftest import Conversation


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


def _typing(topic: str, payload: dict[str, Any], ref: str | None) -> tuple[Any, ...]:
    return (topic, "broadcast", {"type": "broadcast", "event": "typing", "payload": payload}, ref)


async def test_typing_from_a_participant_writes_the_indicator_then_broadcasts(
    conversation: Conversation, pool: asyncpg.Pool
) -> None:
    device, agent = conversation.device, conversation.agent
    topic = f"conversation:{conversation.id}"
    await device.join(topic, {"broadcast": {"ack": True}})
    await agent.join(topic)
    await device.send(*_typing(f"realtime:{topic}", {"isTyping": True}, "7"), "1")
    assert (await device.reply_to("7"))["payload"] == {"status": "ok", "response": {}}
    got = await agent.expect(_is("broadcast"))
    assert got["payload"]["event"] == "typing"
    assert got["payload"]["payload"] == {"isTyping": True}
    # Written before the broadcast went out.
    assert await pool.fetchval(
        "SELECT is_typing FROM message_typing_indicators "
        "WHERE conversation_id = $1 AND customer_id = $2",
        conversation.id,
        conversation.customer,
    )


async def test_a_refused_typing_push_is_not_broadcast(conversation: Conversation) -> None:
    device, agent = conversation.device, conversation.agent
    topic = f"conversation:{conversation.id}"
    await device.join(topic)
    await agent.join(topic)
    await device.send(*_typing(f"realtime:{topic}", {"isTyping": "yes"}, "3"), "1")
    refused = await device.reply_to("3")
    assert refused["payload"] == {
        "status": "error",
        "response": {"reason": "typing: the payload needs isTyping, true or false"},
    }
    await device.send(
        f"realtime:{topic}",
        "broadcast",
        {"type": "broadcast", "event": "after", "payload": {}},
        None,
        "1",
    )
    assert (await agent.expect(_is("broadcast")))["payload"]["event"] == "after"


async def test_typing_from_someone_who_is_no_participant_is_a_plain_broadcast(
    server: RunningServer,
) -> None:
    a, b = await _pair(server, "typing-anon", {"broadcast": {"ack": True}})
    try:
        # From a staff user or customer this payload would be refused; from anon it is relayed.
        await a.send(*_typing("realtime:typing-anon", {"isTyping": "yes"}, "4"), "1")
        assert (await a.reply_to("4"))["payload"]["status"] == "ok"
        got = await b.expect(_is("broadcast"))
        assert got["payload"] == {
            "type": "broadcast",
            "event": "typing",
            "payload": {"isTyping": "yes"},
        }
    finally:
        await a.close()
        await b.close()
