"""Fan-out: encode an event once per wire format, write the same bytes to every subscriber.

Server-to-client WebSocket frames are not masked, so a whole frame (header included) is
identical for every recipient of the same format: it is built once and queued on each
socket's :class:`Outbox` without awaiting anything. A socket whose unsent bytes exceed its
limit is a slow consumer: it gets no more data and is closed with 1008.

Outboxes are written to their transports once per turn of the event loop (:class:`Turn`),
not frame by frame: the frames a socket gets in one turn go out in one send, and the sends of
a turn go out together, after the turn's reading and routing (measured in benchmarks/README.md,
"Fan-out": a third less CPU per delivery). The cost is at most one turn of latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from struct import Struct
from typing import Any, Protocol

from ..broker import Envelope
from ..protocol.frames import V1, V2, Vsn, encode_push, encode_user_broadcast

_TEXT = 0x81
_BINARY = 0x82
_SHORT = Struct("!BB").pack
_MEDIUM = Struct("!BBH").pack
_LONG = Struct("!BBQ").pack


def ws_frame(payload: bytes, *, binary: bool = False) -> bytes:
    """A complete, unmasked, final WebSocket data frame."""
    first = _BINARY if binary else _TEXT
    n = len(payload)
    if n < 126:
        header = _SHORT(first, n)
    elif n < 1 << 16:
        header = _MEDIUM(first, 126, n)
    else:
        header = _LONG(first, 127, n)
    return header + payload


class Turn:
    """The outboxes written to in this turn of the event loop, flushed together once the
    turn's callbacks have run (one per server: its sessions' outboxes share it)."""

    __slots__ = ("_dirty", "_call_soon")

    def __init__(self) -> None:
        """Made inside the event loop it flushes on, which it keeps: asking asyncio for the
        running loop makes a system call (``getpid``) every time."""
        self._dirty: list[Outbox] = []
        self._call_soon = asyncio.get_running_loop().call_soon

    def mark(self, outbox: Outbox) -> None:
        if not self._dirty:
            self._call_soon(self.flush)
        self._dirty.append(outbox)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for outbox in dirty:
            outbox.flush()


class Outbox:
    """The bounded outgoing side of one socket: its transport, a byte limit, and the frames
    queued in this turn of the event loop.

    ``closed`` refuses frames from then on; the ones queued before still go out at the flush
    (a ``system`` error before the close frame that follows it). Whoever writes to the
    transport directly (the close frame) flushes first, so that the order on the wire is the
    order of the calls.
    """

    __slots__ = ("_transport", "_limit", "_on_overflow", "_turn", "closed", "_queued")

    def __init__(
        self,
        transport: asyncio.Transport | None,
        limit: int,
        on_overflow: Callable[[], None],
        turn: Turn,
    ) -> None:
        self._transport = transport
        self._limit = limit
        self._on_overflow = on_overflow
        self._turn = turn
        self.closed = transport is None
        self._queued: list[bytes] | None = None

    def write(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame for the end of this turn; never blocks."""
        if self.closed:
            return
        queued = self._queued
        if queued is None:
            self._queued = [frame]
            self._turn.mark(self)
        else:
            queued.append(frame)

    def text(self, data: bytes) -> None:
        self.write(ws_frame(data))

    def flush(self) -> None:
        """Hand what is queued to the transport, in one write."""
        queued = self._queued
        if queued is None:
            return
        self._queued = None
        transport = self._transport
        assert transport is not None
        if transport.is_closing():
            self.closed = True
            return
        transport.write(queued[0] if len(queued) == 1 else b"".join(queued))
        if not self.closed and transport.get_write_buffer_size() > self._limit:
            self.closed = True
            self._on_overflow()

    def release(self) -> None:
        """The socket has gone: take no more frames, and let go of its owner (the overflow
        callback is the owner's method: without this, a closed socket's objects form a cycle
        that only the garbage collector's full passes free)."""
        self.closed = True
        self._on_overflow = _nothing


def _nothing() -> None:
    """What a released outbox calls on overflow."""


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
    def reads_presence(self) -> bool: ...

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
        # One frame per wire format, built on first need (b"": not deliverable in it). Two
        # locals rather than a dict keyed by Vsn: an Enum's hash is a Python call per member.
        # The members are not copied: writing to an outbox changes no topic's members.
        v1: bytes | None = None
        v2: bytes | None = None
        exclude = envelope.exclude
        private = envelope.private
        presence = envelope.event == "presence_diff"
        delivered = 0
        for member in members.values():
            if exclude is not None and member.key == exclude:
                continue
            if private is not None and member.reads_private is not private:
                continue  # private and public channels of one topic are apart
            if presence and not member.reads_presence:
                continue  # a private channel whose policies do not let it read presence
            if member.vsn is V1:
                if v1 is None:
                    v1 = _frame_for(envelope, V1) or b""
                frame = v1
            else:
                if v2 is None:
                    v2 = _frame_for(envelope, V2) or b""
                frame = v2
            if frame:
                member.outbox.write(frame)
                delivered += 1
        self.deliveries += delivered


def _frame_for(envelope: Envelope, vsn: Vsn) -> bytes | None:
    """The WebSocket frame carrying ``envelope`` to a ``vsn`` socket (None: not deliverable)."""
    if envelope.binary is not None:
        assert envelope.user_event is not None
        if vsn is V2:
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
    return ws_frame(encode_push(vsn, envelope.topic, envelope.event, envelope.payload))


def broadcast_payload(event: str, payload: Any, meta: Any = None) -> dict[str, Any]:
    """The ``broadcast`` push body the clients expect."""
    body: dict[str, Any] = {"type": "broadcast", "event": event, "payload": payload}
    if meta is not None:
        body["meta"] = meta
    return body
