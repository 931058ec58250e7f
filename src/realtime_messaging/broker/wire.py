"""How an :class:`Envelope` travels between processes: one compact, self-describing message.

Layout (network byte order)::

    version:u8  flags:u8  node_len:u8  header_len:u32  node  header  [binary]

``header`` is the JSON array ``[topic, event, payload, exclude, user_event, meta]`` (orjson,
the encoder the sockets' frames use, so whatever a process can deliver it can also forward);
the raw bytes of a binary broadcast follow it unchanged, so they are never base64-inflated.
``node`` names the publishing process: a process skips its own publications when Redis echoes
them back, having delivered them locally already. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct

import orjson

from . import Envelope

VERSION = 1
_BINARY = 0x01
_JSON_ENCODED = 0x02
_PRIVATE = 0x04
_PUBLIC = 0x08
_HEAD = struct.Struct("!BBBI")


def encode(envelope: Envelope, node: bytes) -> bytes:
    """The message carrying ``envelope`` from process ``node`` (at most 255 bytes)."""
    header = orjson.dumps(
        [
            envelope.topic,
            envelope.event,
            envelope.payload,
            envelope.exclude,
            envelope.user_event,
            envelope.meta,
        ]
    )
    flags = (
        (_BINARY if envelope.binary is not None else 0)
        | (_JSON_ENCODED if envelope.json_encoded else 0)
        | (_PRIVATE if envelope.private else 0)
        | (_PUBLIC if envelope.private is False else 0)
    )
    head = _HEAD.pack(VERSION, flags, len(node), len(header))
    return b"".join((head, node, header, envelope.binary or b""))


def published_by(data: bytes, node: bytes) -> bool:
    """Whether ``data`` is a message published by ``node``, read without decoding it: a process
    drops the echo of its own publications for the cost of one slice."""
    start = _HEAD.size  # the node follows the fixed head; its length is the head's third byte
    return (
        len(data) >= start + len(node)
        and data[2] == len(node)
        and (data[start : start + len(node)] == node)
    )


def decode(data: bytes) -> tuple[bytes, Envelope]:
    """The publishing node and the envelope (its ``origin`` that node); ValueError for anything
    else."""
    if len(data) < _HEAD.size:
        raise ValueError("message too short")
    version, flags, node_len, header_len = _HEAD.unpack_from(data)
    if version != VERSION:
        raise ValueError(f"unknown message version {version}")
    start = _HEAD.size + node_len
    end = start + header_len
    if end > len(data):
        raise ValueError("message truncated")
    node = data[_HEAD.size : start]
    try:
        fields = orjson.loads(data[start:end])
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"bad message header: {exc}") from exc
    if not isinstance(fields, list) or len(fields) != 6:
        raise ValueError("bad message header: not a 6-item array")
    topic, event, payload, exclude, user_event, meta = fields
    if not isinstance(topic, str) or not isinstance(event, str):
        raise ValueError("bad message header: topic and event must be strings")
    if exclude is not None and not isinstance(exclude, str):
        raise ValueError("bad message header: exclude must be a string")
    if user_event is not None and not isinstance(user_event, str):
        raise ValueError("bad message header: user_event must be a string")
    binary = bytes(data[end:]) if flags & _BINARY else None
    if binary is not None and user_event is None:
        raise ValueError("bad message header: a binary broadcast needs its user event")
    envelope = Envelope(
        topic,
        event,
        payload,
        exclude=exclude,
        user_event=user_event,
        binary=binary,
        json_encoded=bool(flags & _JSON_ENCODED),
        meta=meta,
        origin=node.decode("utf-8", "replace"),
        private=True if flags & _PRIVATE else False if flags & _PUBLIC else None,
    )
    return node, envelope
