"""Frame codecs: vsn 1.0.0 JSON objects, vsn 2.0.0 JSON arrays and binary broadcast frames.

The example frames are the ones the official clients were observed sending (protocol reference
sections 1.2, 1.3, 4 and 5); decoded frames are compared field by field and encoded frames as
parsed JSON, never as strings.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime_messaging.protocol.errors import ProtocolError
from realtime_messaging.protocol.frames import (
    Message,
    UserBroadcast,
    Vsn,
    decode_binary,
    decode_text,
    encode,
    encode_user_broadcast,
    encode_user_broadcast_push,
)

# realtime-js's kind-3 frame for channel.send({type: "broadcast", event: "cursor", payload: {x: 1}})
# on join_ref "6", ref "7", built byte by byte from the layout of reference section 1.2:
# u8 kind | u8 join_ref_len | u8 ref_len | u8 topic_len | u8 event_len | u8 meta_len | u8 encoding
CURSOR_PUSH = (
    bytes([3, 1, 1, 14, 6, 0, 1]) + b"6" + b"7" + b"realtime:room1" + b"cursor" + b'{"x":1}'
)


def parsed(frame: bytes) -> Any:
    return orjson.loads(frame)


# -- vsn -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "1.0.0"])
def test_vsn_defaults_to_1_0_0(value: str | None) -> None:
    assert Vsn.parse(value) is Vsn.V1


def test_vsn_2_0_0_selects_the_array_serializer() -> None:
    assert Vsn.parse("2.0.0") is Vsn.V2


@pytest.mark.parametrize("value", ["3.0.0", "1", "2", "0.9.0", "v2", "latest"])
def test_unsupported_vsn_is_a_protocol_error(value: str) -> None:
    with pytest.raises(ProtocolError):
        Vsn.parse(value)


# -- vsn 1.0.0 text frames (realtime-py) ----------------------------------------------------


def test_server_receives_realtime_py_join_frame() -> None:
    frame = (
        '{"event":"phx_join","payload":{"config":{"broadcast":{"self":true,"ack":true},'
        '"presence":{"key":"py-user","enabled":true},"private":false,"postgres_changes":'
        '[{"event":"INSERT","schema":"public","table":"todos","filter":"id=eq.46"}]},'
        '"access_token":"<token>"},"topic":"realtime:room1","ref":"1","join_ref":"1"}'
    )
    msg = decode_text(Vsn.V1, frame)
    assert msg.topic == "realtime:room1"
    assert msg.event == "phx_join"
    assert msg.ref == "1"
    assert msg.join_ref == "1"
    assert msg.payload["access_token"] == "<token>"
    assert msg.payload["config"]["presence"] == {"key": "py-user", "enabled": True}


def test_server_receives_realtime_py_heartbeat_with_null_refs() -> None:
    frame = '{"event":"heartbeat","payload":{},"topic":"phoenix","ref":null,"join_ref":null}'
    assert decode_text(Vsn.V1, frame) == Message("phoenix", "heartbeat", {}, None, None)


def test_server_receives_v1_frame_as_bytes() -> None:
    frame = b'{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"3"}'
    assert decode_text(Vsn.V1, frame) == Message("phoenix", "heartbeat", {}, "3", None)


def test_v1_join_ref_is_optional() -> None:
    frame = '{"topic":"realtime:room1","event":"broadcast","payload":{},"ref":"2"}'
    assert decode_text(Vsn.V1, frame).join_ref is None


def test_v1_integer_refs_are_read_as_strings() -> None:
    frame = '{"topic":"realtime:room1","event":"broadcast","payload":{},"ref":2,"join_ref":1}'
    msg = decode_text(Vsn.V1, frame)
    assert (msg.ref, msg.join_ref) == ("2", "1")


def test_v1_unknown_keys_are_ignored() -> None:
    frame = '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null,"extra":[1]}'
    assert decode_text(Vsn.V1, frame) == Message("phoenix", "heartbeat", {}, None, None)


@pytest.mark.parametrize("key", ["topic", "event", "payload", "ref"])
def test_v1_frame_missing_a_required_key_is_a_protocol_error(key: str) -> None:
    frame: dict[str, Any] = {
        "topic": "realtime:room1",
        "event": "broadcast",
        "payload": {},
        "ref": None,
    }
    del frame[key]
    with pytest.raises(ProtocolError, match=key):
        decode_text(Vsn.V1, orjson.dumps(frame))


@pytest.mark.parametrize(
    "frame",
    [
        '[null,"1","phoenix","heartbeat",{}]',
        '"heartbeat"',
        "42",
        "null",
        "true",
    ],
)
def test_v1_frame_that_is_not_an_object_is_a_protocol_error(frame: str) -> None:
    with pytest.raises(ProtocolError):
        decode_text(Vsn.V1, frame)


# -- vsn 2.0.0 text frames (realtime-js) ----------------------------------------------------


def test_server_receives_realtime_js_heartbeat() -> None:
    msg = decode_text(Vsn.V2, '[null,"7","phoenix","heartbeat",{}]')
    assert msg == Message("phoenix", "heartbeat", {}, "7", None)


def test_server_receives_realtime_js_text_broadcast() -> None:
    frame = (
        '["10","1","realtime:chat-room","broadcast",'
        '{"type":"broadcast","event":"user-event","payload":{"a":1}}]'
    )
    assert decode_text(Vsn.V2, frame) == Message(
        "realtime:chat-room",
        "broadcast",
        {"type": "broadcast", "event": "user-event", "payload": {"a": 1}},
        "1",
        "10",
    )


def test_server_receives_realtime_js_access_token_push() -> None:
    frame = '["6","8","realtime:room1","access_token",{"access_token":"jwt-v1"}]'
    assert decode_text(Vsn.V2, frame) == Message(
        "realtime:room1", "access_token", {"access_token": "jwt-v1"}, "8", "6"
    )


def test_server_receives_realtime_js_presence_track() -> None:
    frame = (
        '["6","8","realtime:room1","presence",'
        '{"type":"presence","event":"track","payload":{"online_at":"now"}}]'
    )
    msg = decode_text(Vsn.V2, frame)
    assert msg.event == "presence"
    assert msg.payload == {"type": "presence", "event": "track", "payload": {"online_at": "now"}}


@pytest.mark.parametrize(
    "frame",
    [
        '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null}',
        '[null,"7","phoenix","heartbeat"]',
        '[null,"7","phoenix","heartbeat",{},null]',
        "[]",
        '"heartbeat"',
        "7",
        "null",
    ],
)
def test_v2_frame_that_is_not_a_five_element_array_is_a_protocol_error(frame: str) -> None:
    with pytest.raises(ProtocolError):
        decode_text(Vsn.V2, frame)


# -- malformed fields (both serializers) ----------------------------------------------------


def _v1(topic: Any = "realtime:room1", event: Any = "broadcast", ref: Any = "1") -> bytes:
    return orjson.dumps({"topic": topic, "event": event, "payload": {}, "ref": ref})


def _v2(topic: Any = "realtime:room1", event: Any = "broadcast", ref: Any = "1") -> bytes:
    return orjson.dumps(["1", ref, topic, event, {}])


ENCODERS = {Vsn.V1: _v1, Vsn.V2: _v2}


@pytest.mark.parametrize("vsn", list(Vsn))
@pytest.mark.parametrize("topic", [None, 1, 1.5, True, ["realtime:room1"], {"t": 1}])
def test_non_string_topic_is_a_protocol_error(vsn: Vsn, topic: Any) -> None:
    with pytest.raises(ProtocolError, match="topic"):
        decode_text(vsn, ENCODERS[vsn](topic=topic))


@pytest.mark.parametrize("vsn", list(Vsn))
@pytest.mark.parametrize("event", [None, "", 3, ["broadcast"], {"e": 1}])
def test_missing_or_non_string_event_is_a_protocol_error(vsn: Vsn, event: Any) -> None:
    with pytest.raises(ProtocolError, match="event"):
        decode_text(vsn, ENCODERS[vsn](event=event))


@pytest.mark.parametrize("vsn", list(Vsn))
@pytest.mark.parametrize("ref", [True, 1.5, ["1"], {"r": 1}])
def test_ref_that_is_not_a_string_or_null_is_a_protocol_error(vsn: Vsn, ref: Any) -> None:
    with pytest.raises(ProtocolError, match="ref"):
        decode_text(vsn, ENCODERS[vsn](ref=ref))


@pytest.mark.parametrize("vsn", list(Vsn))
@pytest.mark.parametrize(
    "data",
    ["", "{", "[null,", "not json", "{'topic': 'phoenix'}", b"\xff\xfe", "\ud800", "[" * 2000],
)
def test_bad_json_is_a_protocol_error(vsn: Vsn, data: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_text(vsn, data)


# -- binary kind 3: user broadcast push (client to server) ----------------------------------


def test_server_receives_realtime_js_binary_broadcast_push() -> None:
    frame = decode_binary(Vsn.V2, CURSOR_PUSH)
    assert frame == UserBroadcast(
        join_ref="6",
        ref="7",
        topic="realtime:room1",
        event="cursor",
        metadata={},
        payload=b'{"x":1}',
        json_encoded=True,
    )


def test_binary_push_becomes_the_equivalent_text_broadcast() -> None:
    assert decode_binary(Vsn.V2, CURSOR_PUSH).as_message() == Message(
        "realtime:room1",
        "broadcast",
        {"type": "broadcast", "event": "cursor", "payload": {"x": 1}},
        "7",
        "6",
    )


def test_binary_push_with_binary_payload_keeps_the_raw_bytes() -> None:
    payload = bytes(range(256))
    data = bytes([3, 1, 1, 14, 4, 0, 0]) + b"6" + b"8" + b"realtime:room1" + b"blob" + payload
    frame = decode_binary(Vsn.V2, data)
    assert frame.payload == payload
    assert frame.json_encoded is False
    assert frame.as_message().payload == {"type": "broadcast", "event": "blob", "payload": None}


def test_binary_push_metadata_is_decoded_json() -> None:
    meta = b'{"persist":true}'
    header = bytes([3, 1, 1, 14, 6, len(meta), 1])
    data = header + b"6" + b"7" + b"realtime:room1" + b"cursor" + meta + b'{"x":1}'
    frame = decode_binary(Vsn.V2, data)
    assert frame.metadata == {"persist": True}
    assert frame.payload == b'{"x":1}'


def test_binary_push_without_refs_has_null_refs() -> None:
    data = bytes([3, 0, 0, 14, 6, 0, 1]) + b"realtime:room1" + b"cursor" + b"{}"
    frame = decode_binary(Vsn.V2, data)
    assert (frame.join_ref, frame.ref) == (None, None)


def test_binary_frames_need_vsn_2() -> None:
    with pytest.raises(ProtocolError):
        decode_binary(Vsn.V1, CURSOR_PUSH)


@pytest.mark.parametrize("cut", range(len(CURSOR_PUSH)))
def test_truncated_binary_push_is_a_protocol_error(cut: int) -> None:
    with pytest.raises(ProtocolError):
        decode_binary(Vsn.V2, CURSOR_PUSH[:cut])


@pytest.mark.parametrize("kind", [0, 1, 2, 4, 5, 255])
def test_binary_kinds_other_than_user_broadcast_push_are_a_protocol_error(kind: int) -> None:
    with pytest.raises(ProtocolError, match="kind"):
        decode_binary(Vsn.V2, bytes([kind]) + CURSOR_PUSH[1:])


@pytest.mark.parametrize("encoding", [2, 3, 255])
def test_unknown_payload_encoding_is_a_protocol_error(encoding: int) -> None:
    data = bytearray(CURSOR_PUSH)
    data[6] = encoding
    with pytest.raises(ProtocolError, match="encoding"):
        decode_binary(Vsn.V2, bytes(data))


def test_binary_push_header_that_is_not_utf8_is_a_protocol_error() -> None:
    data = bytes([3, 1, 1, 2, 6, 0, 1]) + b"6" + b"7" + b"\xff\xfe" + b"cursor" + b"{}"
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode_binary(Vsn.V2, data)


def test_binary_push_metadata_that_is_not_json_is_a_protocol_error() -> None:
    data = bytes([3, 1, 1, 14, 6, 3, 1]) + b"6" + b"7" + b"realtime:room1" + b"cursor" + b"{{{"
    with pytest.raises(ProtocolError, match="metadata"):
        decode_binary(Vsn.V2, data + b"{}")


def test_json_encoded_binary_push_with_invalid_json_payload_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="payload"):
        decode_binary(Vsn.V2, CURSOR_PUSH[:-1])


def test_binary_push_without_event_is_a_protocol_error() -> None:
    data = bytes([3, 1, 1, 14, 0, 0, 1]) + b"6" + b"7" + b"realtime:room1" + b"{}"
    with pytest.raises(ProtocolError, match="event"):
        decode_binary(Vsn.V2, data)


# -- encoding server frames -----------------------------------------------------------------


def test_v1_server_frame_has_ref_and_no_join_ref() -> None:
    frame = encode(Vsn.V1, Message("realtime:room1", "phx_reply", {"status": "ok"}, "3", "1"))
    assert parsed(frame) == {
        "topic": "realtime:room1",
        "event": "phx_reply",
        "payload": {"status": "ok"},
        "ref": "3",
    }


def test_v1_server_push_carries_an_explicit_null_ref() -> None:
    payload = {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
    frame = encode(Vsn.V1, Message("realtime:room1", "broadcast", payload))
    assert parsed(frame) == {
        "topic": "realtime:room1",
        "event": "broadcast",
        "payload": {"type": "broadcast", "event": "cursor", "payload": {"x": 1}},
        "ref": None,
    }


def test_v2_server_frame_is_join_ref_ref_topic_event_payload() -> None:
    payload = {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
    assert parsed(encode(Vsn.V2, Message("realtime:room1", "broadcast", payload))) == [
        None,
        None,
        "realtime:room1",
        "broadcast",
        {"type": "broadcast", "event": "cursor", "payload": {"x": 1}},
    ]
    frame = encode(Vsn.V2, Message("realtime:room1", "phx_reply", {"status": "ok"}, "3", "1"))
    assert parsed(frame) == ["1", "3", "realtime:room1", "phx_reply", {"status": "ok"}]


@pytest.mark.parametrize("vsn", list(Vsn))
def test_encoded_server_frame_decodes_back(vsn: Vsn) -> None:
    message = Message(
        "realtime:room1", "broadcast", {"event": "e", "payload": [1, "two"]}, "4", "2"
    )
    decoded = decode_text(vsn, encode(vsn, message))
    expected_join_ref = "2" if vsn is Vsn.V2 else None
    assert decoded == Message(
        "realtime:room1", "broadcast", message.payload, "4", expected_join_ref
    )


# -- binary kind 4: user broadcast (server to client) ---------------------------------------


def test_user_broadcast_frame_layout() -> None:
    meta = {"id": "2f1e0c1c-4f9b-4b59-8f58-6f0d3c9e5d1a"}
    frame = encode_user_broadcast(
        "realtime:room1", "cursor", b'{"x":1}', json_encoded=True, metadata=meta
    )
    meta_b = orjson.dumps(meta)
    assert frame[:5] == bytes([4, 14, 6, len(meta_b), 1])
    assert frame[5:] == b"realtime:room1" + b"cursor" + meta_b + b'{"x":1}'


def test_user_broadcast_without_metadata_has_an_empty_metadata_field() -> None:
    frame = encode_user_broadcast("realtime:room1", "blob", b"\x00\x01", json_encoded=False)
    assert frame == bytes([4, 14, 4, 0, 0]) + b"realtime:room1" + b"blob" + b"\x00\x01"


@pytest.mark.parametrize("field", ["topic", "event"])
def test_user_broadcast_fields_longer_than_255_bytes_are_refused(field: str) -> None:
    args = {"topic": "realtime:room1", "event": "cursor", field: "é" * 128}
    with pytest.raises(ValueError):
        encode_user_broadcast(args["topic"], args["event"], b"{}", json_encoded=True)


def test_user_broadcast_push_encoder_matches_the_realtime_js_layout() -> None:
    assert encode_user_broadcast_push("6", "7", "realtime:room1", "cursor", b'{"x":1}') == (
        CURSOR_PUSH
    )


def test_user_broadcast_push_encoder_refuses_fields_longer_than_255_bytes() -> None:
    with pytest.raises(ValueError):
        encode_user_broadcast_push("6", "7", "realtime:" + "r" * 247, "cursor", b"{}")


# -- properties -----------------------------------------------------------------------------

utf8_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
header_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | utf8_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(utf8_text, children, max_size=4)
    ),
    max_leaves=12,
)
json_body = json_values.map(lambda value: (True, orjson.dumps(value)))
binary_body = st.binary(max_size=64).map(lambda raw: (False, raw))


@given(
    join_ref=st.none() | header_text.filter(bool),
    ref=st.none() | header_text.filter(bool),
    topic=header_text,
    event=header_text.filter(bool),
    metadata=st.none() | st.dictionaries(utf8_text, json_scalars, max_size=3),
    body=json_body | binary_body,
)
def test_user_broadcast_push_round_trips(
    join_ref: str | None,
    ref: str | None,
    topic: str,
    event: str,
    metadata: dict[str, Any] | None,
    body: tuple[bool, bytes],
) -> None:
    json_encoded, payload = body
    data = encode_user_broadcast_push(
        join_ref, ref, topic, event, payload, json_encoded=json_encoded, metadata=metadata
    )
    assert decode_binary(Vsn.V2, data) == UserBroadcast(
        join_ref, ref, topic, event, metadata or {}, payload, json_encoded
    )


@given(topic=header_text, event=header_text, payload=st.binary(max_size=64))
def test_user_broadcast_header_lengths_match_the_fields(
    topic: str, event: str, payload: bytes
) -> None:
    frame = encode_user_broadcast(topic, event, payload, json_encoded=False)
    kind, topic_len, event_len, meta_len, encoding = struct.unpack("!BBBBB", frame[:5])
    assert (kind, meta_len, encoding) == (4, 0, 0)
    assert frame[5 : 5 + topic_len].decode() == topic
    assert frame[5 + topic_len : 5 + topic_len + event_len].decode() == event
    assert frame[5 + topic_len + event_len :] == payload


@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    for vsn in Vsn:
        try:
            decode_binary(vsn, data)
        except ProtocolError:
            pass
        try:
            decode_text(vsn, data)
        except ProtocolError:
            pass
