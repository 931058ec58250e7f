"""Fan-out: encode an event once per wire format, write the same bytes to every subscriber.

Server-to-client WebSocket frames are not masked, so a whole frame (header included) is
identical for every recipient of the same format: it is built once and handed to each
socket's transport without awaiting anything. A socket whose unsent bytes exceed its limit is
a slow consumer: it gets no more data and is closed with 1008.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any, Protocol

from ..broker import Envelope
from ..protocol.frames import Message, Vsn, encode, encode_user_broadcast

_TEXT = 0x81
_BINARY = 0x82


def ws_frame(payload: bytes, *, binary: bool = False) -> bytes:
    """A complete, unmasked, final WebSocket data frame."""
    first = _BINARY if binary else _TEXT
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


class Outbox:
    """The bounded outgoing side of one socket: its transport and a byte limit."""

    __slots__ = ("_transport", "_limit", "_on_overflow", "closed")

    def __init__(
        self,
        transport: asyncio.Transport | None,
        limit: int,
        on_overflow: Callable[[], None],
    ) -> None:
        self._transport = transport
        self._limit = limit
        self._on_overflow = on_overflow
        self.closed = transport is None

    def write(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame; never blocks."""
        if self.closed:
            return
        transport = self._transport
        assert transport is not None
        if transport.is_closing():
            self.closed = True
            return
        transport.write(frame)
        if transport.get_write_buffer_size() > self._limit:
            self.closed = True
            self._on_overflow()

    def text(self, data: bytes) -> None:
        self.write(ws_frame(data))


class Member(Protocol):
    """A joined channel as the hub sees it."""

    @property
    def key(self) -> str: ...

    @property
    def vsn(self) -> Vsn: ...

    @property
    def receives_own_broadcasts(self) -> bool: ...

    @property
    def reads_private(self) -> bool: ...

    @property
    def outbox(self) -> Outbox: ...


class TopicWatcher(Protocol):
    """Told when this process gains its first member of a topic and loses its last: a broker
    between processes subscribes to just those topics."""

    def topic_added(self, topic: str) -> None: ...

    def topic_removed(self, topic: str) -> None: ...


class Hub:
    """Joined channels by topic, in this process; the broker's sink."""

    def __init__(self, watcher: TopicWatcher | None = None) -> None:
        self._topics: dict[str, dict[str, Member]] = {}
        self._watcher = watcher
        self.deliveries = 0

    def add(self, topic: str, member: Member) -> None:
        members = self._topics.get(topic)
        if members is None:
            members = self._topics[topic] = {}
            if self._watcher is not None:
                self._watcher.topic_added(topic)
        members[member.key] = member

    def remove(self, topic: str, member: Member) -> None:
        members = self._topics.get(topic)
        if members is None:
            return
        if members.get(member.key) is member:
            del members[member.key]
        if not members:
            del self._topics[topic]
            if self._watcher is not None:
                self._watcher.topic_removed(topic)

    def members(self, topic: str) -> list[Member]:
        return list(self._topics.get(topic, {}).values())

    def deliver(self, envelope: Envelope) -> None:
        members = self._topics.get(envelope.topic)
        if not members:
            return
        frames: dict[Vsn, bytes | None] = {}
        exclude = envelope.exclude
        private = envelope.private
        delivered = 0
        for member in list(members.values()):
            if exclude is not None and member.key == exclude:
                continue
            if private is not None and member.reads_private is not private:
                continue  # private and public channels of one topic are apart
            vsn = member.vsn
            if vsn in frames:
                frame = frames[vsn]
            else:
                frame = frames[vsn] = _frame_for(envelope, vsn)
            if frame is not None:
                member.outbox.write(frame)
                delivered += 1
        self.deliveries += delivered


def _frame_for(envelope: Envelope, vsn: Vsn) -> bytes | None:
    """The WebSocket frame carrying ``envelope`` to a ``vsn`` socket (None: not deliverable)."""
    if envelope.binary is not None:
        assert envelope.user_event is not None
        if vsn is Vsn.V2:
            return ws_frame(
                encode_user_broadcast(
                    envelope.topic,
                    envelope.user_event,
                    envelope.binary,
                    json_encoded=envelope.json_encoded,
                    metadata=envelope.meta,
                ),
                binary=True,
            )
        if not envelope.json_encoded:
            return None  # V1 sockets cannot carry binary payloads (as on Supabase)
    return ws_frame(encode(vsn, Message(envelope.topic, envelope.event, envelope.payload)))


def broadcast_payload(event: str, payload: Any, meta: Any = None) -> dict[str, Any]:
    """The ``broadcast`` push body the clients expect."""
    body: dict[str, Any] = {"type": "broadcast", "event": event, "payload": payload}
    if meta is not None:
        body["meta"] = meta
    return body
