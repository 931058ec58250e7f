"""One socket: its frames in order, its joined channels, how it closes.

What a frame does once read is :mod:`.dispatch`'s job; the session only takes frames from its
:class:`~.wire.Wire` in the order they came, owns its channels, and closes: at the client's
close, on overflow, at a drain, or when told to.

Most frames are handled at once, in the callback that read them (a broadcast, a heartbeat, a
leave); a frame whose handler must wait (a join, a typing write, a token check) runs in a task,
and the frames read meanwhile wait in line behind it, so that the order of the client's frames
is the order of their effects.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from ...domain.budget import PerSecond
from ...domain.identity import Identity
from ...protocol.connection import ServerConnection, subtopic
from ...protocol.frames import Vsn
from ..cluster import diff_envelope
from ..eager import Started
from ..fanout import Outbox
from .channel import Channel, serial
from .shared import Shared
from .wire import Wire

log = logging.getLogger(__package__)

CLOSE_SLOW_CONSUMER = 1008

#: Frames waiting behind one being handled before the socket stops reading (TCP then pushes
#: back on the client); reading resumes once the line is short again.
INBOX_LIMIT = 64

#: The work left of a frame's handling: to start, or started already (:mod:`..eager`).
Pending = Coroutine[Any, Any, None] | Started
#: What handles one frame: done at once (None), or the work left to await.
OnFrame = Callable[["Session", Any, bool], Pending | None]


def who(identity: Identity) -> str:
    """An identity for the log: its kind and id, never its token."""
    subject = identity.user_id or identity.customer_id
    return f"{identity.kind.value} {subject}" if subject else identity.kind.value


class Session:
    """One socket: takes its frames in order, owns its joined channels, closes."""

    # Slots: thousands of idle sessions per process (benchmarks/README.md, "Idle connections").
    __slots__ = (
        "server",
        "wire",
        "vsn",
        "identity",
        "id",
        "proto",
        "outbox",
        "channels",
        "_on_frame",
        "_inbox",
        "_pending",
        "_worker",
        "_closing",
        "close_reason",
        "push_budget",
        "join_budget",
        "last_seen",
        "held_tokens",
    )

    def __init__(
        self,
        server: Shared[Session],
        wire: Wire,
        vsn: Vsn,
        identity: Identity,
        on_frame: OnFrame,
    ) -> None:
        self.server = server
        self.wire = wire
        self.vsn = vsn
        self.identity = identity
        self.id = f"{server.node_id}:s{next(serial)}"
        self.proto = ServerConnection(vsn, server.settings.input_limits)
        self.outbox = Outbox(
            wire.transport, server.settings.send_buffer_limit, self._overflow, server.turn
        )
        self.channels: dict[str, Channel] = {}
        self._on_frame = on_frame
        #: Frames read while one is being handled (None: none is).
        self._inbox: deque[tuple[Any, bool]] | None = None
        #: The handling its task has yet to take up (closed if the socket goes first).
        self._pending: Pending | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        #: Why the server closed the socket (for the log); None: the client closed it.
        self.close_reason: str | None = None
        #: The socket's budgets: pushes of any kind, and joins.
        self.push_budget = PerSecond(server.settings.max_events_per_second)
        self.join_budget = PerSecond(server.settings.max_joins_per_second)
        self.last_seen = server.loop.time()
        #: Portal-token hashes this session has held (the server's index points back here).
        self.held_tokens: set[str] = set()
        self.hold(identity)
        server.liveness.attach(self.id, identity)

    def hold(self, identity: Identity) -> None:
        """Index the session under ``identity``'s portal token, if it is one."""
        if identity.token_hash is not None:
            self.server.portal_holders.hold(self, identity.token_hash)
            self.held_tokens.add(identity.token_hash)

    # -- frames -------------------------------------------------------------------------

    def receive(self, data: Any, binary: bool, now: float) -> None:
        """One frame from the client (``now``: the loop's time): handled at once, or in line
        behind the one being handled."""
        self.last_seen = now
        if self.outbox.closed:
            return
        inbox = self._inbox
        if inbox is not None:
            inbox.append((data, binary))
            if len(inbox) == INBOX_LIMIT:
                self.wire.pause_reading()
            return
        pending = self._on_frame(self, data, binary)
        if pending is not None:
            self._inbox = deque()
            self._pending = pending
            self._worker = asyncio.create_task(self._work(), name=f"rtm-socket-{self.id}")

    async def _work(self) -> None:
        """Finish the frame being handled, then handle the frames that came meanwhile."""
        inbox, pending = self._inbox, self._pending
        assert inbox is not None and pending is not None
        self._pending = None
        try:
            while True:
                await pending
                next_one: Pending | None = None
                while next_one is None and inbox and not self.outbox.closed:
                    if len(inbox) == INBOX_LIMIT:
                        self.wire.resume_reading()
                    data, binary = inbox.popleft()
                    next_one = self._on_frame(self, data, binary)
                if next_one is None:
                    return
                pending = next_one
        finally:
            self._inbox = None
            self._worker = None

    # -- closing ------------------------------------------------------------------------

    def _overflow(self) -> None:
        self.server.errors["slow_consumer"] += 1
        log.info("closing slow consumer %s", self.id)
        self.close_soon(CLOSE_SLOW_CONSUMER, "slow consumer: send buffer full")

    def close_soon(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self.shutdown(code, reason))

    async def shutdown(self, code: int, reason: str) -> None:
        """Close with ``code`` and a complete closing handshake (bounded by the wire): what
        was queued goes out before the close frame, nothing after it."""
        self.close_reason = self.close_reason or f"{code} {reason}"
        self.outbox.closed = True
        self.outbox.flush()
        await self.wire.close(code, reason)

    async def drain(self, code: int, reason: str) -> None:
        """The server stops: close as :meth:`shutdown` does, even while a frame is handled."""
        self.close_reason = f"{code} {reason}"
        await self.shutdown(code, reason)

    def teardown(self) -> None:
        """Leave every channel: presence leaves go out at once, nothing waits on this socket."""
        self.outbox.release()
        if self._pending is not None:
            self._pending.close()
            self._pending = None
        if self._worker is not None:
            self._worker.cancel()
        self.server.portal_holders.release(self, self.held_tokens)
        self.server.liveness.detach(self.id)
        for channel in list(self.channels.values()):
            self.drop(channel)

    # -- channels -----------------------------------------------------------------------

    def drop(self, channel: Channel) -> None:
        """Forget a channel: out of the hub, presence left, expiry timer cancelled."""
        server = self.server
        if self.channels.get(channel.topic) is channel:
            del self.channels[channel.topic]
        server.hub.remove(channel.topic, channel)
        server.router.unsubscribe(channel)
        server.router.leave_topic(channel)
        if channel.replay is not None:
            channel.replay.cancel()
            channel.replay = None
        server.expiries.discard(channel)
        if channel.participant is not None:
            held = server.participant_channels.get(channel.participant["key"])
            if held is not None:
                held.discard(channel)
                if not held:
                    del server.participant_channels[channel.participant["key"]]
        diff = server.presence.untrack(channel.presence_scope, channel.key)
        if diff is not None:
            server.broker.publish(diff_envelope(diff))

    def close_channel(self, channel: Channel, message: str) -> None:
        """Server-initiated close: ``system`` error, then ``phx_close`` (clients do not rejoin)."""
        if self.channels.get(channel.topic) is not channel:
            return
        self.drop(channel)
        payload = {
            "extension": "system",
            "status": "error",
            "message": message,
            "channel": subtopic(channel.topic),
        }
        for frame in self.proto.close_channel(channel.topic, payload):
            self.outbox.text(frame)

    def refuse(self, topic: str, ref: str | None, join_ref: str | None, reason: str) -> None:
        """An error reply to one push."""
        self.outbox.text(self.proto.refuse(topic, ref, join_ref, reason))

    def reply_ok(self, topic: str, ref: str | None, join_ref: str | None) -> None:
        """An empty ``ok`` reply to one push."""
        self.outbox.text(self.proto.reply(topic, ref, join_ref, "ok", {}))
