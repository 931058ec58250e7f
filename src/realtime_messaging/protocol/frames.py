"""Frame codecs for ``vsn`` 1.0.0 (JSON objects) and 2.0.0 (JSON arrays plus binary broadcasts).

Client frames are decoded to :class:`Message`; server frames are encoded straight to the bytes
of a WebSocket text or binary message, so one encoding can be written to many sockets.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import ProtocolError


class Vsn(enum.Enum):
    """The serializer a socket negotiated with ``?vsn=``."""

    V1 = "1.0.0"
    V2 = "2.0.0"

    @classmethod
    def parse(cls, value: str | None) -> Vsn:
        """Phoenix matches ``~> 1.0.0`` / ``~> 2.0.0``; a missing vsn means 1.0.0."""
        if value is None or value == "":
            return cls.V1
        if value.startswith("1.0."):
            return cls.V1
        if value.startswith("2.0."):
            return cls.V2
        raise ProtocolError(f"unsupported vsn {value!r}")


#: The members as module names: read from the class, an Enum member costs a lookup through its
#: metaclass (about 60 ns against 7), and the codecs read them for every frame.
V1 = Vsn.V1
V2 = Vsn.V2


@dataclass(slots=True)
class Message:
    """One Phoenix message, in either direction; never changed once made (not frozen: a frozen
    dataclass costs four times as much to build, and one is built per frame)."""

    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None


@dataclass(frozen=True, slots=True)
class UserBroadcast:
    """A decoded binary kind-3 frame (realtime-js's ``channel.send`` of a broadcast)."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    metadata: Any
    payload: bytes
    json_encoded: bool

    def as_message(self) -> Message:
        """The equivalent text ``broadcast`` push; only possible for JSON-encoded payloads."""
        body: dict[str, Any] = {"type": "broadcast", "event": self.event}
        body["payload"] = orjson.loads(self.payload) if self.json_encoded else None
        return Message(self.topic, "broadcast", body, self.ref, self.join_ref)


KIND_PUSH = 0
KIND_REPLY = 1
KIND_BROADCAST = 2
KIND_USER_BROADCAST_PUSH = 3
KIND_USER_BROADCAST = 4

_ENCODING_BINARY = 0
_ENCODING_JSON = 1


def _ref(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ProtocolError(f"{field} must be a string or null")


def _topic(value: Any) -> str:
    if not isinstance(value, str):
        raise ProtocolError("topic must be a string")
    return value


def _event(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError("event must be a non-empty string")
    return value


def decode_text(vsn: Vsn, data: str | bytes) -> Message:
    """Decode a client text frame; raise :class:`ProtocolError` on anything malformed."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON ({exc})") from exc
    if vsn is V2:
        if not isinstance(raw, list) or len(raw) != 5:
            raise ProtocolError("expected [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = raw
    else:
        if not isinstance(raw, dict):
            raise ProtocolError("expected a JSON object")
        missing = [k for k in ("topic", "event", "payload", "ref") if k not in raw]
        if missing:
            raise ProtocolError(f"missing keys: {', '.join(missing)}")
        join_ref, ref = raw.get("join_ref"), raw["ref"]
        topic, event, payload = raw["topic"], raw["event"], raw["payload"]
    if (
        type(topic) is str
        and type(event) is str
        and event
        and (ref is None or type(ref) is str)
        and (join_ref is None or type(join_ref) is str)
    ):
        return Message(topic, event, payload, ref, join_ref)  # the usual frame: no conversion
    return Message(
        _topic(topic), _event(event), payload, _ref(ref, "ref"), _ref(join_ref, "join_ref")
    )


def decode_binary(vsn: Vsn, data: bytes) -> UserBroadcast:
    """Decode a client binary frame; only kind 3 (user broadcast push) exists client to server."""
    if vsn is not Vsn.V2:
        raise ProtocolError("binary frames need vsn 2.0.0")
    if len(data) < 7:
        raise ProtocolError("binary frame too short")
    if data[0] != KIND_USER_BROADCAST_PUSH:
        raise ProtocolError(f"unsupported binary frame kind {data[0]}")
    join_ref_len, ref_len, topic_len, event_len, meta_len, encoding = data[1:7]
    if encoding not in (_ENCODING_BINARY, _ENCODING_JSON):
        raise ProtocolError(f"unknown payload encoding {encoding}")
    pos = 7
    fields: list[str] = []
    try:
        for length in (join_ref_len, ref_len, topic_len, event_len, meta_len):
            end = pos + length
            if end > len(data):
                raise ProtocolError("binary frame truncated")
            fields.append(data[pos:end].decode("utf-8"))
            pos = end
    except UnicodeDecodeError as exc:
        raise ProtocolError("binary frame header is not UTF-8") from exc
    join_ref, ref, topic, event, meta_text = fields
    try:
        metadata = orjson.loads(meta_text) if meta_text else {}
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("binary frame metadata is not JSON") from exc
    payload = bytes(data[pos:])
    if encoding == _ENCODING_JSON:
        try:
            orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("binary frame payload is not JSON") from exc
    if not event:
        raise ProtocolError("event must be a non-empty string")
    return UserBroadcast(
        join_ref or None,
        ref or None,
        topic,
        event,
        metadata,
        payload,
        encoding == _ENCODING_JSON,
    )


def encode(vsn: Vsn, message: Message) -> bytes:
    """Encode a server message as the UTF-8 bytes of a text frame.

    V1 frames never carry ``join_ref`` but always carry ``ref`` (realtime-py drops frames
    without it); V2 frames are ``[join_ref, ref, topic, event, payload]``.
    """
    return encode_push(
        vsn, message.topic, message.event, message.payload, message.ref, message.join_ref
    )


def encode_push(
    vsn: Vsn,
    topic: str,
    event: str,
    payload: Any,
    ref: str | None = None,
    join_ref: str | None = None,
) -> bytes:
    """:func:`encode` from the fields, without building a :class:`Message`: a push to every
    member of a topic (no ``ref``, no ``join_ref``) is encoded once per broadcast."""
    if vsn is V2:
        return orjson.dumps([join_ref, ref, topic, event, payload])
    return orjson.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref})


def encode_user_broadcast(
    topic: str, event: str, payload: bytes, *, json_encoded: bool, metadata: Any = None
) -> bytes:
    """A binary kind-4 frame for V2 subscribers; every field is limited to 255 bytes."""
    topic_b, event_b = topic.encode(), event.encode()
    meta_b = orjson.dumps(metadata) if metadata else b""
    if max(len(topic_b), len(event_b), len(meta_b)) > 255:
        raise ValueError("topic, event and metadata must each fit in 255 bytes")
    header = struct.pack(
        "!BBBBB",
        KIND_USER_BROADCAST,
        len(topic_b),
        len(event_b),
        len(meta_b),
        _ENCODING_JSON if json_encoded else _ENCODING_BINARY,
    )
    return b"".join((header, topic_b, event_b, meta_b, payload))


def encode_user_broadcast_push(
    join_ref: str | None,
    ref: str | None,
    topic: str,
    event: str,
    payload: bytes,
    *,
    json_encoded: bool = True,
    metadata: Any = None,
) -> bytes:
    """A binary kind-3 frame, as realtime-js sends it (used by the SDK and by tests)."""
    parts = [(join_ref or "").encode(), (ref or "").encode(), topic.encode(), event.encode()]
    meta_b = orjson.dumps(metadata) if metadata else b""
    parts.append(meta_b)
    if max(len(p) for p in parts) > 255:
        raise ValueError("each header field must fit in 255 bytes")
    header = struct.pack(
        "!BBBBBBB",
        KIND_USER_BROADCAST_PUSH,
        *(len(p) for p in parts),
        _ENCODING_JSON if json_encoded else _ENCODING_BINARY,
    )
    return b"".join((header, *parts, payload))
