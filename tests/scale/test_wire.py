"""The envelope codec between processes: every field survives, garbage is refused."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from redis.asyncio.connection import Connection

from realtime_messaging.broker import Envelope
from realtime_messaging.broker.redis import publishes
from realtime_messaging.broker.wire import decode, encode, published_by

ENVELOPES = [
    Envelope(
        "realtime:room",
        "broadcast",
        {"type": "broadcast", "event": "hi", "payload": {"text": "héllo ✓", "n": [1, 2.5]}},
        exclude="abcd:12",
    ),
    Envelope(
        "realtime:room",
        "broadcast",
        {"type": "broadcast", "event": "cursor", "payload": {"x": 1}},
        user_event="cursor",
        binary=b'{"x":1}',
        json_encoded=True,
    ),
    Envelope(
        "realtime:room",
        "broadcast",
        {"type": "broadcast", "event": "blob", "payload": None, "meta": {"id": "m1"}},
        user_event="blob",
        binary=bytes(range(256)),
        json_encoded=False,
        meta={"id": "m1"},
    ),
    Envelope("realtime:room", "broadcast", {}, user_event="empty", binary=b"", json_encoded=False),
    Envelope("realtime:room", "broadcast", {"n": 1}, private=True),
    Envelope("realtime:room", "broadcast", {"n": 2}, private=False),
    Envelope(
        "realtime:presence:1",
        "presence_diff",
        {"joins": {"u1": {"metas": [{"phx_ref": "F1", "status": "online"}]}}, "leaves": {}},
    ),
]


@pytest.mark.parametrize("envelope", ENVELOPES)
def test_every_field_round_trips(envelope: Envelope) -> None:
    node, decoded = decode(encode(envelope, b"node-1"))
    assert node == b"node-1"
    assert decoded == dataclasses.replace(envelope, origin="node-1")


def test_binary_payload_travels_raw() -> None:
    """The bytes of a binary broadcast are appended as they are, not re-encoded."""
    envelope = ENVELOPES[2]
    data = encode(envelope, b"n")
    assert envelope.binary is not None and data.endswith(envelope.binary)
    assert len(data) < len(envelope.binary) + 200


def _message(
    header: bytes, *, version: int = 1, flags: int = 0, length: int | None = None
) -> bytes:
    size = len(header) if length is None else length
    return struct.pack("!BBBI", version, flags, 1, size) + b"n" + header


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x01\x00", "too short"),
        (_message(b"[]", version=2), "version"),
        (_message(b"[]", length=9), "truncated"),
        (_message(b"{}"), "6-item array"),
        (_message(b"xx"), "bad message header"),
        (_message(b'[1,"e",null,null,null,null]'), "must be strings"),
        (_message(b'["t","e",null,7,null,null]'), "exclude"),
        (_message(b'["t","e",null,null,null,null]', flags=1), "user event"),
    ],
)
def test_malformed_messages_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode(data)


def test_a_process_recognises_its_own_messages_without_decoding_them() -> None:
    data = encode(ENVELOPES[0], b"node-1")
    assert published_by(data, b"node-1")
    assert not published_by(data, b"node-2")
    assert not published_by(data, b"node-10")  # same prefix, other length
    assert not published_by(data, b"node")
    assert not published_by(b"", b"node-1")
    assert not published_by(data[:8], b"node-1")


def test_the_publisher_writes_exactly_what_redis_py_would() -> None:
    """The brokers pack their PUBLISH and SPUBLISH batches themselves: byte for byte what redis-py's packer makes
    (binary data, empty payloads, long ones past the packer's buffer size)."""
    batch = [
        (b"rtm:t:realtime:room", encode(ENVELOPES[2], b"n1")),
        (b"rtm:ctl", b""),
        (b"rtm:t:x", b"\r\n$3\r\n" * 5000),
    ]
    connection = Connection()
    expected = b"".join(connection.pack_commands([("PUBLISH", c, d) for c, d in batch]))
    assert publishes(batch) == expected
    sharded = b"".join(connection.pack_commands([("SPUBLISH", c, d) for c, d in batch]))
    assert publishes(batch, b"SPUBLISH") == sharded
