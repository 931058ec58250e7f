"""One Phoenix socket, sans I/O: client frames in, events and server frames out.

Each ``test_server_receives_...`` feeds a frame an official client sends (protocol reference
sections 1.3, 2, 4 and 5) and checks the event; each ``test_client_receives_...`` checks the
exact frame the server builds, compared as parsed JSON.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from realtime.message import ServerMessageAdapter

from realtime_messaging.protocol.connection import ServerConnection, subtopic
from realtime_messaging.protocol.errors import ProtocolError
from realtime_messaging.protocol.events import (
    AccessTokenReceived,
    BadPush,
    BroadcastReceived,
    Event,
    Heartbeat,
    JoinRefused,
    JoinRequested,
    LeaveRequested,
    PresenceReceived,
)
from realtime_messaging.protocol.frames import (
    Vsn,
    decode_binary,
    encode_user_broadcast_push,
)
from realtime_messaging.protocol.join import JoinConfig, parse_binding

ROOM = "realtime:room1"

PY_JOIN = (
    '{"event":"phx_join","payload":{"config":{"broadcast":{"self":true,"ack":true},'
    '"presence":{"key":"py-user","enabled":true},"private":false,"postgres_changes":'
    '[{"event":"INSERT","schema":"public","table":"todos","filter":"id=eq.46"}]},'
    '"access_token":"<token>"},"topic":"realtime:room1","ref":"1","join_ref":"1"}'
)
JS_JOIN = (
    '["6","6","realtime:room1","phx_join",{"config":{"broadcast":{"ack":false,"self":false},'
    '"presence":{"key":"","enabled":false},"postgres_changes":[],"private":false},'
    '"access_token":"jwt","version":"realtime-js/2.119.0"}]'
)
JS_CURSOR_PUSH = (
    bytes([3, 1, 1, 14, 6, 0, 1]) + b"6" + b"7" + b"realtime:room1" + b"cursor" + b'{"x":1}'
)


def parsed(frame: bytes) -> Any:
    return orjson.loads(frame)


def v1(topic: str, event: str, payload: Any, ref: str | None, join_ref: str | None = None) -> bytes:
    return orjson.dumps(
        {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
    )


def v2(join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> bytes:
    return orjson.dumps([join_ref, ref, topic, event, payload])


def client_frame(
    vsn: Vsn,
    topic: str,
    event: str,
    payload: Any,
    ref: str | None = "2",
    join_ref: str | None = "1",
) -> bytes:
    """A client frame in the serializer of ``vsn`` (by default a push on join_ref "1")."""
    if vsn is Vsn.V2:
        return v2(join_ref, ref, topic, event, payload)
    return v1(topic, event, payload, ref, join_ref)


def joined(vsn: Vsn, topic: str = ROOM, join_ref: str = "1") -> ServerConnection:
    """A connection on which ``topic`` was joined and accepted under ``join_ref``."""
    conn = ServerConnection(vsn)
    join = conn.receive_text(client_frame(vsn, topic, "phx_join", {}, join_ref, join_ref))
    assert isinstance(join, JoinRequested)
    conn.accept(join, {"postgres_changes": []})
    return conn


both_vsns = pytest.mark.parametrize("vsn", list(Vsn))


# -- heartbeat ------------------------------------------------------------------------------


def test_server_receives_realtime_py_heartbeat() -> None:
    conn = ServerConnection(Vsn.V1)
    frame = '{"event":"heartbeat","payload":{},"topic":"phoenix","ref":null,"join_ref":null}'
    assert conn.receive_text(frame) == Heartbeat(None)


def test_client_receives_v1_heartbeat_reply_with_null_ref() -> None:
    assert parsed(ServerConnection(Vsn.V1).heartbeat_reply(None)) == {
        "topic": "phoenix",
        "event": "phx_reply",
        "payload": {"status": "ok", "response": {}},
        "ref": None,
    }


def test_server_receives_realtime_js_heartbeat() -> None:
    conn = ServerConnection(Vsn.V2)
    assert conn.receive_text('[null,"7","phoenix","heartbeat",{}]') == Heartbeat("7")


def test_client_receives_v2_heartbeat_reply_with_the_same_ref() -> None:
    assert parsed(ServerConnection(Vsn.V2).heartbeat_reply("7")) == [
        None,
        "7",
        "phoenix",
        "phx_reply",
        {"status": "ok", "response": {}},
    ]


@both_vsns
def test_other_events_on_the_phoenix_topic_are_unmatched(vsn: Vsn) -> None:
    conn = ServerConnection(vsn)
    event = conn.receive_text(client_frame(vsn, "phoenix", "broadcast", {}, "3", None))
    assert event == BadPush("phoenix", "3", None, "unmatched topic")


@both_vsns
def test_join_of_the_phoenix_topic_is_refused_as_unmatched(vsn: Vsn) -> None:
    conn = ServerConnection(vsn)
    event = conn.receive_text(client_frame(vsn, "phoenix", "phx_join", {}, "1", "1"))
    assert isinstance(event, JoinRefused | BadPush)
    assert (event.topic, event.ref, event.reason) == ("phoenix", "1", "unmatched topic")


# -- join -----------------------------------------------------------------------------------


def test_server_receives_realtime_py_join() -> None:
    event = ServerConnection(Vsn.V1).receive_text(PY_JOIN)
    assert isinstance(event, JoinRequested)
    assert (event.topic, event.ref, event.join_ref, event.access_token) == (
        ROOM,
        "1",
        "1",
        "<token>",
    )
    assert event.config.broadcast_self is True
    assert event.config.presence_key == "py-user"
    assert [b.raw for b in event.config.postgres_changes] == [
        {"event": "INSERT", "schema": "public", "table": "todos", "filter": "id=eq.46"}
    ]


def test_server_receives_realtime_js_join() -> None:
    event = ServerConnection(Vsn.V2).receive_text(JS_JOIN)
    assert event == JoinRequested(ROOM, "6", "6", JoinConfig(), "jwt")


def test_server_receives_realtime_py_join_with_null_broadcast() -> None:
    frame = v1(
        ROOM,
        "phx_join",
        {
            "config": {"broadcast": None, "presence": {"key": "", "enabled": False}},
            "access_token": "anon",
        },
        "1",
        "1",
    )
    event = ServerConnection(Vsn.V1).receive_text(frame)
    assert event == JoinRequested(ROOM, "1", "1", JoinConfig(), "anon")


def test_join_without_join_ref_uses_its_ref() -> None:
    frame = '{"topic":"realtime:room1","event":"phx_join","payload":{},"ref":"4"}'
    event = ServerConnection(Vsn.V1).receive_text(frame)
    assert isinstance(event, JoinRequested)
    assert (event.ref, event.join_ref) == ("4", "4")


@both_vsns
@pytest.mark.parametrize("topic", ["room1", "realtime", "Realtime:room1", "phoenix:room1", ""])
def test_join_of_a_topic_without_realtime_prefix_is_unmatched(vsn: Vsn, topic: str) -> None:
    conn = ServerConnection(vsn)
    event = conn.receive_text(client_frame(vsn, topic, "phx_join", {}, "1", "1"))
    assert event == JoinRefused(topic, "1", "1", "unmatched topic")


@both_vsns
def test_join_of_realtime_without_a_name_needs_a_topic_name(vsn: Vsn) -> None:
    conn = ServerConnection(vsn)
    event = conn.receive_text(client_frame(vsn, "realtime:", "phx_join", {}, "1", "1"))
    assert event == JoinRefused(
        "realtime:", "1", "1", "TopicNameRequired: You must provide a topic name"
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], "InvalidJoinPayload: the join payload must be an object"),
        ({"config": "x"}, "InvalidJoinPayload: config must be an object"),
        ({"config": {"broadcast": {"self": "yes"}}}, "InvalidJoinPayload: broadcast.self must"),
        ({"config": {"postgres_changes": [{"event": "NOPE"}]}}, "InvalidJoinPayload: postgres"),
        ({"access_token": 5}, "InvalidJoinPayload: access_token must be a string"),
    ],
)
def test_join_with_an_invalid_payload_is_refused(payload: Any, reason: str) -> None:
    event = ServerConnection(Vsn.V2).receive_text(v2("3", "3", ROOM, "phx_join", payload))
    assert isinstance(event, JoinRefused)
    assert (event.topic, event.ref, event.join_ref) == (ROOM, "3", "3")
    assert event.reason.startswith(reason)


def test_client_receives_v2_join_reply_with_bindings_echoed_and_ids() -> None:
    conn = ServerConnection(Vsn.V2)
    frame = v2(
        "6",
        "6",
        ROOM,
        "phx_join",
        {
            "config": {
                "postgres_changes": [
                    {"event": "INSERT", "schema": "public", "table": "todos", "filter": "id=eq.46"}
                ]
            }
        },
    )
    join = conn.receive_text(frame)
    assert isinstance(join, JoinRequested)
    [binding] = join.config.postgres_changes
    reply = conn.accept(join, {"postgres_changes": [binding.reply_entry()]})
    assert parsed(reply) == [
        "6",
        "6",
        ROOM,
        "phx_reply",
        {
            "status": "ok",
            "response": {
                "postgres_changes": [
                    {
                        "event": "INSERT",
                        "schema": "public",
                        "table": "todos",
                        "filter": "id=eq.46",
                        "id": binding.id,
                    }
                ]
            },
        },
    ]


def test_client_receives_v1_join_reply_without_join_ref() -> None:
    conn = ServerConnection(Vsn.V1)
    join = conn.receive_text(PY_JOIN)
    assert isinstance(join, JoinRequested)
    response = {"postgres_changes": [b.reply_entry() for b in join.config.postgres_changes]}
    assert parsed(conn.accept(join, response)) == {
        "topic": ROOM,
        "event": "phx_reply",
        "payload": {"status": "ok", "response": response},
        "ref": "1",
    }


@both_vsns
def test_accepted_join_marks_the_topic_joined_under_its_join_ref(vsn: Vsn) -> None:
    conn = joined(vsn, join_ref="5")
    assert conn.is_joined(ROOM)
    assert conn.joined_ref(ROOM) == "5"
    assert not conn.is_joined("realtime:other")
    assert conn.joined_ref("realtime:other") is None


@both_vsns
def test_join_request_alone_does_not_join_the_topic(vsn: Vsn) -> None:
    conn = ServerConnection(vsn)
    join = conn.receive_text(client_frame(vsn, ROOM, "phx_join", {}, ref="1"))
    assert isinstance(join, JoinRequested)
    conn.refuse(join.topic, join.ref, join.join_ref, "Unauthorized: no")
    assert not conn.is_joined(ROOM)
    event = conn.receive_text(client_frame(vsn, ROOM, "broadcast", {"event": "e", "payload": {}}))
    assert event == BadPush(ROOM, "2", "1", "unmatched topic")


def test_client_receives_v2_join_error_reply() -> None:
    conn = ServerConnection(Vsn.V2)
    reason = "Unauthorized: You do not have permissions to read from this Channel topic: room1"
    assert parsed(conn.refuse(ROOM, "6", "6", reason)) == [
        "6",
        "6",
        ROOM,
        "phx_reply",
        {"status": "error", "response": {"reason": reason}},
    ]


def test_client_receives_v1_join_error_reply() -> None:
    conn = ServerConnection(Vsn.V1)
    assert parsed(conn.refuse("room1", "1", "1", "unmatched topic")) == {
        "topic": "room1",
        "event": "phx_reply",
        "payload": {"status": "error", "response": {"reason": "unmatched topic"}},
        "ref": "1",
    }


@both_vsns
def test_second_join_of_a_topic_replaces_the_first(vsn: Vsn) -> None:
    conn = joined(vsn, join_ref="1")
    rejoin = conn.receive_text(client_frame(vsn, ROOM, "phx_join", {}, "9", "9"))
    assert isinstance(rejoin, JoinRequested)
    conn.accept(rejoin, {"postgres_changes": []})
    assert conn.joined_ref(ROOM) == "9"
    leave = conn.receive_text(client_frame(vsn, ROOM, "phx_leave", {}, "10", "9"))
    assert isinstance(leave, LeaveRequested)
    _, close = conn.leave(leave)
    if vsn is Vsn.V2:
        assert parsed(close) == ["9", "9", ROOM, "phx_close", {}]
    else:
        assert parsed(close) == {"topic": ROOM, "event": "phx_close", "payload": {}, "ref": "9"}


# -- pushes to topics that are not joined ---------------------------------------------------


@both_vsns
@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("broadcast", {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}),
        ("presence", {"type": "presence", "event": "track", "payload": {"online_at": "now"}}),
        ("presence", {"event": "untrack", "payload": {}}),
        ("access_token", {"access_token": "jwt-v1"}),
        ("something_else", {}),
    ],
)
def test_push_to_a_topic_not_joined_is_unmatched(vsn: Vsn, event: str, payload: Any) -> None:
    conn = joined(vsn, topic="realtime:other")
    result = conn.receive_text(client_frame(vsn, ROOM, event, payload, ref="8"))
    assert result == BadPush(ROOM, "8", "1", "unmatched topic")


def test_binary_push_to_a_topic_not_joined_is_unmatched() -> None:
    conn = ServerConnection(Vsn.V2)
    assert conn.receive_binary(JS_CURSOR_PUSH) == BadPush(ROOM, "7", "6", "unmatched topic")


def test_client_receives_unmatched_topic_error_reply() -> None:
    conn = ServerConnection(Vsn.V2)
    bad = conn.receive_text(v2("6", "8", ROOM, "access_token", {"access_token": "jwt-v1"}))
    assert isinstance(bad, BadPush)
    assert parsed(conn.refuse(bad.topic, bad.ref, bad.join_ref, bad.reason)) == [
        "6",
        "8",
        ROOM,
        "phx_reply",
        {"status": "error", "response": {"reason": "unmatched topic"}},
    ]


# -- broadcast ------------------------------------------------------------------------------


def test_server_receives_realtime_py_broadcast() -> None:
    conn = joined(Vsn.V1)
    frame = (
        '{"event":"broadcast","payload":{"type":"broadcast","event":"cursor","payload":{"x":1}},'
        '"topic":"realtime:room1","ref":"2","join_ref":"1"}'
    )
    assert conn.receive_text(frame) == BroadcastReceived(ROOM, "2", "cursor", {"x": 1})


def test_server_receives_realtime_js_text_broadcast() -> None:
    conn = joined(Vsn.V2, topic="realtime:chat-room", join_ref="10")
    frame = (
        '["10","1","realtime:chat-room","broadcast",'
        '{"type":"broadcast","event":"user-event","payload":{"a":[1,2]}}]'
    )
    event = conn.receive_text(frame)
    assert event == BroadcastReceived("realtime:chat-room", "1", "user-event", {"a": [1, 2]})


def test_server_receives_realtime_js_binary_broadcast() -> None:
    conn = joined(Vsn.V2, join_ref="6")
    event = conn.receive_binary(JS_CURSOR_PUSH)
    assert isinstance(event, BroadcastReceived)
    assert (event.topic, event.ref, event.event, event.payload) == (ROOM, "7", "cursor", {"x": 1})
    assert event.binary == decode_binary(Vsn.V2, JS_CURSOR_PUSH)


def test_server_receives_binary_broadcast_with_binary_payload() -> None:
    conn = joined(Vsn.V2, join_ref="6")
    data = encode_user_broadcast_push("6", "9", ROOM, "blob", b"\x00\xff", json_encoded=False)
    event = conn.receive_binary(data)
    assert isinstance(event, BroadcastReceived)
    assert (event.event, event.payload) == ("blob", None)
    assert event.binary is not None
    assert (event.binary.payload, event.binary.json_encoded) == (b"\x00\xff", False)


@both_vsns
def test_broadcast_without_join_ref_is_accepted(vsn: Vsn) -> None:
    conn = joined(vsn)
    payload = {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
    if vsn is Vsn.V2:
        frame = v2(None, "2", ROOM, "broadcast", payload)
    else:
        frame = orjson.dumps({"topic": ROOM, "event": "broadcast", "payload": payload, "ref": "2"})
    assert conn.receive_text(frame) == BroadcastReceived(ROOM, "2", "cursor", {"x": 1})


@both_vsns
@pytest.mark.parametrize("payload", [{}, {"type": "broadcast"}, {"event": 3}, [], "cursor", None])
def test_broadcast_without_an_event_name_is_a_bad_push(vsn: Vsn, payload: Any) -> None:
    conn = joined(vsn)
    event = conn.receive_text(client_frame(vsn, ROOM, "broadcast", payload))
    assert isinstance(event, BadPush)
    assert (event.topic, event.ref) == (ROOM, "2")


def test_binary_frame_on_a_v1_socket_is_a_protocol_error() -> None:
    conn = joined(Vsn.V1)
    with pytest.raises(ProtocolError):
        conn.receive_binary(JS_CURSOR_PUSH)


# -- presence -------------------------------------------------------------------------------


def test_server_receives_realtime_js_presence_track() -> None:
    conn = joined(Vsn.V2, join_ref="6")
    frame = (
        '["6","8","realtime:room1","presence",'
        '{"type":"presence","event":"track","payload":{"online_at":"now"}}]'
    )
    assert conn.receive_text(frame) == PresenceReceived(ROOM, "8", "track", {"online_at": "now"})


def test_server_receives_realtime_py_presence_track_without_type() -> None:
    conn = joined(Vsn.V1)
    frame = (
        '{"event":"presence","payload":{"event":"track","payload":{"online_at":"now"}},'
        '"topic":"realtime:room1","ref":"3","join_ref":"1"}'
    )
    assert conn.receive_text(frame) == PresenceReceived(ROOM, "3", "track", {"online_at": "now"})


def test_server_receives_realtime_js_presence_untrack() -> None:
    conn = joined(Vsn.V2, join_ref="6")
    frame = '["6","9","realtime:room1","presence",{"type":"presence","event":"untrack"}]'
    assert conn.receive_text(frame) == PresenceReceived(ROOM, "9", "untrack", None)


def test_server_receives_realtime_py_presence_untrack() -> None:
    conn = joined(Vsn.V1)
    frame = (
        '{"event":"presence","payload":{"event":"untrack","payload":{}},'
        '"topic":"realtime:room1","ref":"4","join_ref":"1"}'
    )
    assert conn.receive_text(frame) == PresenceReceived(ROOM, "4", "untrack", {})


@both_vsns
def test_presence_event_is_lower_cased(vsn: Vsn) -> None:
    conn = joined(vsn)
    event = conn.receive_text(
        client_frame(vsn, ROOM, "presence", {"event": "TRACK", "payload": {}})
    )
    assert event == PresenceReceived(ROOM, "2", "track", {})


@both_vsns
@pytest.mark.parametrize(
    "payload", [{}, {"event": "update"}, {"event": 1}, {"event": None}, [], "track", None]
)
def test_presence_push_other_than_track_or_untrack_is_a_bad_push(vsn: Vsn, payload: Any) -> None:
    conn = joined(vsn)
    event = conn.receive_text(client_frame(vsn, ROOM, "presence", payload))
    assert event == BadPush(ROOM, "2", "1", "presence event must be track or untrack")


# -- access token ---------------------------------------------------------------------------


def test_server_receives_realtime_js_access_token() -> None:
    conn = joined(Vsn.V2, join_ref="6")
    frame = '["6","8","realtime:room1","access_token",{"access_token":"jwt-v1"}]'
    assert conn.receive_text(frame) == AccessTokenReceived(ROOM, "jwt-v1")


@both_vsns
@pytest.mark.parametrize("payload", [{"access_token": None}, {"access_token": 5}, {}, [], None])
def test_access_token_push_without_a_string_token_carries_none(vsn: Vsn, payload: Any) -> None:
    conn = joined(vsn)
    assert conn.receive_text(
        client_frame(vsn, ROOM, "access_token", payload)
    ) == AccessTokenReceived(ROOM, None)


@both_vsns
def test_unknown_event_on_a_joined_topic_is_a_bad_push(vsn: Vsn) -> None:
    conn = joined(vsn)
    event = conn.receive_text(client_frame(vsn, ROOM, "postgres_changes", {}))
    assert isinstance(event, BadPush)
    assert (event.topic, event.ref, event.join_ref) == (ROOM, "2", "1")
    assert event.reason != "unmatched topic"


# -- leave, close, error --------------------------------------------------------------------


def test_server_receives_leave() -> None:
    conn = joined(Vsn.V2)
    assert conn.receive_text(v2("1", "3", ROOM, "phx_leave", {})) == LeaveRequested(ROOM, "3", "1")


def test_client_receives_v1_leave_reply_then_close_with_the_join_ref() -> None:
    conn = joined(Vsn.V1)
    leave = conn.receive_text(v1(ROOM, "phx_leave", {}, "3", "1"))
    assert isinstance(leave, LeaveRequested)
    assert [parsed(f) for f in conn.leave(leave)] == [
        {
            "topic": ROOM,
            "event": "phx_reply",
            "payload": {"status": "ok", "response": {}},
            "ref": "3",
        },
        {"topic": ROOM, "event": "phx_close", "payload": {}, "ref": "1"},
    ]


def test_client_receives_v2_leave_reply_then_close_with_the_join_ref() -> None:
    conn = joined(Vsn.V2)
    leave = conn.receive_text(v2("1", "3", ROOM, "phx_leave", {}))
    assert isinstance(leave, LeaveRequested)
    assert [parsed(f) for f in conn.leave(leave)] == [
        ["1", "3", ROOM, "phx_reply", {"status": "ok", "response": {}}],
        ["1", "1", ROOM, "phx_close", {}],
    ]


@both_vsns
def test_left_topic_is_no_longer_joined(vsn: Vsn) -> None:
    conn = joined(vsn)
    leave = conn.receive_text(client_frame(vsn, ROOM, "phx_leave", {}, ref="3"))
    assert isinstance(leave, LeaveRequested)
    conn.leave(leave)
    assert not conn.is_joined(ROOM)
    event = conn.receive_text(client_frame(vsn, ROOM, "broadcast", {"event": "e", "payload": {}}))
    assert event == BadPush(ROOM, "2", "1", "unmatched topic")


@both_vsns
def test_leave_of_an_unknown_topic_still_gets_an_ok_reply(vsn: Vsn) -> None:
    conn = ServerConnection(vsn)
    leave = conn.receive_text(client_frame(vsn, ROOM, "phx_leave", {}, ref="3"))
    assert isinstance(leave, LeaveRequested)
    reply = parsed(conn.leave(leave)[0])
    if vsn is Vsn.V2:
        assert reply == ["1", "3", ROOM, "phx_reply", {"status": "ok", "response": {}}]
    else:
        assert reply == {
            "topic": ROOM,
            "event": "phx_reply",
            "payload": {"status": "ok", "response": {}},
            "ref": "3",
        }


def test_client_receives_system_error_then_close_when_the_server_closes_a_channel() -> None:
    conn = joined(Vsn.V2, join_ref="6")
    system = {
        "extension": "system",
        "status": "error",
        "message": "Token has expired 3 seconds ago",
        "channel": "room1",
    }
    assert [parsed(f) for f in conn.close_channel(ROOM, system)] == [
        ["6", None, ROOM, "system", system],
        ["6", "6", ROOM, "phx_close", {}],
    ]
    assert not conn.is_joined(ROOM)


def test_client_receives_v1_close_with_the_join_ref_as_ref() -> None:
    conn = joined(Vsn.V1)
    assert [parsed(f) for f in conn.close_channel(ROOM)] == [
        {"topic": ROOM, "event": "phx_close", "payload": {}, "ref": "1"}
    ]
    assert not conn.is_joined(ROOM)


@both_vsns
def test_client_receives_phx_error_with_the_join_ref(vsn: Vsn) -> None:
    conn = joined(vsn, join_ref="4")
    frame = parsed(conn.error_channel(ROOM))
    if vsn is Vsn.V2:
        assert frame == ["4", "4", ROOM, "phx_error", {}]
    else:
        assert frame == {"topic": ROOM, "event": "phx_error", "payload": {}, "ref": "4"}
    assert not conn.is_joined(ROOM)


# -- server pushes --------------------------------------------------------------------------


def test_client_receives_v2_presence_state_with_the_join_ref_and_null_ref() -> None:
    conn = joined(Vsn.V2, join_ref="6")
    state = {"user-1": {"metas": [{"phx_ref": "GHlA1fShRjMmZhnL", "name": "Alice"}]}}
    assert parsed(conn.push(ROOM, "presence_state", state, conn.joined_ref(ROOM))) == [
        "6",
        None,
        ROOM,
        "presence_state",
        {"user-1": {"metas": [{"phx_ref": "GHlA1fShRjMmZhnL", "name": "Alice"}]}},
    ]


def test_client_receives_v1_push_with_explicit_null_ref_and_no_join_ref() -> None:
    conn = joined(Vsn.V1)
    payload = {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
    assert parsed(conn.push(ROOM, "broadcast", payload, "1")) == {
        "topic": ROOM,
        "event": "broadcast",
        "payload": {"type": "broadcast", "event": "cursor", "payload": {"x": 1}},
        "ref": None,
    }


def test_client_receives_v2_broadcast_push_as_an_array() -> None:
    conn = joined(Vsn.V2)
    payload = {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
    assert parsed(conn.push(ROOM, "broadcast", payload)) == [
        None,
        None,
        ROOM,
        "broadcast",
        {"type": "broadcast", "event": "cursor", "payload": {"x": 1}},
    ]


@pytest.mark.parametrize(("topic", "name"), [(ROOM, "room1"), ("realtime:a:b", "a:b"), ("x", "x")])
def test_subtopic_drops_the_realtime_prefix(topic: str, name: str) -> None:
    assert subtopic(topic) == name


def _v1_server_frames() -> list[bytes]:
    conn = ServerConnection(Vsn.V1)
    join = conn.receive_text(PY_JOIN)
    assert isinstance(join, JoinRequested)
    binding = parse_binding(
        {"event": "INSERT", "schema": "public", "table": "todos", "filter": "id=eq.46"}
    )
    system = {"extension": "system", "status": "error", "message": "bye", "channel": "room1"}
    pg_ok = {
        "extension": "postgres_changes",
        "status": "ok",
        "message": "Subscribed to PostgreSQL",
        "channel": "room1",
    }
    diff = {
        "joins": {"k": {"metas": [{"phx_ref": "X2", "phx_ref_prev": "X1", "name": "A2"}]}},
        "leaves": {"k": {"metas": [{"phx_ref": "X1", "name": "A"}]}},
    }
    return [
        conn.heartbeat_reply(None),
        conn.heartbeat_reply("5"),
        conn.accept(join, {"postgres_changes": [binding.reply_entry()]}),
        conn.accept(join, {"postgres_changes": []}),
        conn.refuse(ROOM, "1", "1", "Unauthorized: nope"),
        conn.reply(ROOM, "2", "1", "ok", {}),
        conn.push(ROOM, "system", pg_ok, "1"),
        conn.push(ROOM, "broadcast", {"type": "broadcast", "event": "c", "payload": {"x": 1}}),
        conn.push(ROOM, "presence_state", {"k": {"metas": [{"phx_ref": "X1"}]}}),
        conn.push(ROOM, "presence_diff", diff),
        conn.error_channel(ROOM),
        *conn.close_channel(ROOM, system),
    ]


@pytest.mark.parametrize("frame", _v1_server_frames())
def test_realtime_py_parses_every_v1_server_frame(frame: bytes) -> None:
    # realtime-py drops (logs "Unrecognized message format") any frame its models reject.
    message = ServerMessageAdapter.validate_json(frame)
    assert message.topic == parsed(frame)["topic"]


# -- malformed input never escapes as anything but ProtocolError ----------------------------


@both_vsns
@pytest.mark.parametrize("data", ["", "nope", "{}", "[]", '{"topic":1}', "[1,2,3,4,5]", "\ud800"])
def test_malformed_text_frame_is_a_protocol_error(vsn: Vsn, data: str) -> None:
    with pytest.raises(ProtocolError):
        joined(vsn).receive_text(data)


@pytest.mark.parametrize(
    "data", [b"", b"\x03", JS_CURSOR_PUSH[:10], b"\x04" + JS_CURSOR_PUSH[1:], b"\x00" * 7]
)
def test_malformed_binary_frame_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        joined(Vsn.V2, join_ref="6").receive_binary(data)


def _outcome(call: Any, data: Any) -> None:
    try:
        result = call(data)
    except ProtocolError:
        return
    assert isinstance(result, Event)


@given(data=st.text() | st.binary())
def test_random_text_frames_give_an_event_or_a_protocol_error(data: str | bytes) -> None:
    for vsn in Vsn:
        _outcome(joined(vsn).receive_text, data)


@given(data=st.binary(max_size=300))
def test_random_binary_frames_give_an_event_or_a_protocol_error(data: bytes) -> None:
    for vsn in Vsn:
        _outcome(joined(vsn).receive_binary, data)
        _outcome(joined(vsn).receive_binary, bytes([3]) + data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["track", "untrack", "TRACK", "cursor", "true", "jwt"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["event", "payload", "type", "access_token", "config", "broadcast"])
            | st.text(max_size=4),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
topics = st.sampled_from([ROOM, "realtime:", "realtime:other", "phoenix", "room1"]) | json_values
events = (
    st.sampled_from(
        ["heartbeat", "phx_join", "phx_leave", "broadcast", "presence", "access_token", "x"]
    )
    | json_values
)
refs = st.none() | st.sampled_from(["1", "2"]) | json_values


@given(join_ref=refs, ref=refs, topic=topics, event=events, payload=json_values)
def test_structured_random_frames_give_an_event_or_a_protocol_error(
    join_ref: Any, ref: Any, topic: Any, event: Any, payload: Any
) -> None:
    try:
        v2_frame = orjson.dumps([join_ref, ref, topic, event, payload])
        v1_frame = orjson.dumps(
            {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
        )
    except TypeError:  # orjson refuses integers beyond 64 bits
        return
    _outcome(joined(Vsn.V2).receive_text, v2_frame)
    _outcome(joined(Vsn.V1).receive_text, v1_frame)


@given(
    header=st.lists(st.integers(0, 255), min_size=6, max_size=6),
    body=st.binary(max_size=80),
    json_body=json_values,
)
def test_binary_frames_with_random_headers_give_an_event_or_a_protocol_error(
    header: list[int], body: bytes, json_body: Any
) -> None:
    conn = joined(Vsn.V2)
    _outcome(conn.receive_binary, bytes([3, *header]) + body)
    try:
        encoded = orjson.dumps(json_body)
    except TypeError:
        return
    data = encode_user_broadcast_push("1", "2", ROOM, "e", encoded)
    _outcome(conn.receive_binary, data)
    _outcome(conn.receive_binary, bytes([3, *header]) + data[7:])
