"""One socket: its read loop, its joined channels, how it closes.

What a frame does once read is :mod:`.dispatch`'s job; the session only reads, owns its
channels, and closes: at the client's close, on overflow, at a drain, or when told to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from ...broker import Envelope
from ...domain.budget import PerSecond
from ...domain.identity import Identity
from ...protocol.connection import ServerConnection, subtopic
from ...protocol.frames import Vsn
from ..fanout import Outbox
from .channel import Channel, serial
from .shared import Shared

log = logging.getLogger(__package__)

CLOSE_SLOW_CONSUMER = 1008


def who(identity: Identity) -> str:
    """An identity for the log: its kind and id, never its token."""
    subject = identity.user_id or identity.customer_id
    return f"{identity.kind.value} {subject}" if subject else identity.kind.value


class Session:
    """One socket: reads frames, owns its joined channels, closes."""

    # Slots: thousands of idle sessions per process (benchmarks/README.md, "Idle connections").
    __slots__ = (
        "server",
        "ws",
        "vsn",
        "identity",
        "id",
        "proto",
        "outbox",
        "channels",
        "_closing",
        "_transport",
        "_drain",
        "close_reason",
        "_task",
        "_receiving",
        "push_budget",
        "join_budget",
        "last_seen",
        "held_tokens",
    )

    def __init__(
        self,
        server: Shared[Session],
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        vsn: Vsn,
        identity: Identity,
    ) -> None:
        self.server = server
        self.ws = ws
        self.vsn = vsn
        self.identity = identity
        self.id = f"{server.node_id}:s{next(serial)}"
        self.proto = ServerConnection(vsn, server.settings.input_limits)
        self.outbox = Outbox(
            transport, server.settings.send_buffer_limit, self._overflow, server.turn
        )
        self.channels: dict[str, Channel] = {}
        self._closing: asyncio.Task[None] | None = None
        self._transport = transport
        #: Set by :meth:`drain`: the close the session's own task sends once it stops reading.
        self._drain: tuple[int, str] | None = None
        #: Why the server closed the socket (for the log); None: the client closed it.
        self.close_reason: str | None = None
        self._task: asyncio.Task[Any] | None = None
        self._receiving = False
        #: The socket's budgets: pushes of any kind, and joins.
        self.push_budget = PerSecond(server.settings.max_events_per_second)
        self.join_budget = PerSecond(server.settings.max_joins_per_second)
        self.last_seen = asyncio.get_running_loop().time()
        #: Portal-token hashes this session has held (the server's index points back here).
        self.held_tokens: set[str] = set()
        self.hold(identity)
        server.liveness.attach(self.id, identity)

    def hold(self, identity: Identity) -> None:
        """Index the session under ``identity``'s portal token, if it is one."""
        if identity.token_hash is not None:
            self.server.portal_holders.hold(self, identity.token_hash)
            self.held_tokens.add(identity.token_hash)

    def start(
        self, on_frame: Callable[[Session, Any, bool], Awaitable[None]]
    ) -> asyncio.Task[None]:
        """Run the session in a task of its own: each frame then resumes the session's few
        frames, not the request's chain of middlewares above them (a third of the cost of a
        frame, benchmarks/README.md "Fan-out"). Cancelling whoever awaits the task cancels it."""
        self._task = asyncio.create_task(self._run(on_frame), name=f"rtm-socket-{self.id}")
        return self._task

    async def _run(self, on_frame: Callable[[Session, Any, bool], Awaitable[None]]) -> None:
        """Read frames and hand each to ``on_frame`` until the socket closes."""
        ws = self.ws
        loop = asyncio.get_running_loop()
        while not self.outbox.closed:
            self._receiving = True
            try:
                msg = await ws.receive()
            except asyncio.CancelledError:
                if self._drain is None:
                    raise
                assert self._task is not None
                self._task.uncancel()  # drain() stopped the read, nothing else
                break
            finally:
                self._receiving = False
            self.last_seen = loop.time()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                await on_frame(self, msg.data, False)
            elif kind is WSMsgType.BINARY:
                await on_frame(self, msg.data, True)
            else:  # CLOSE, CLOSING, CLOSED, ERROR (e.g. 1009 message too big)
                return
        if self._drain is not None:
            code, reason = self._drain
            # Sent from the task that reads, so aiohttp waits for the client's close
            # frame before it closes the connection (bounded by the socket's timeout).
            self.outbox.flush()  # what was queued goes before the close frame
            await ws.close(code=code, message=reason.encode())

    async def drain(self, code: int, reason: str) -> None:
        """Close with ``code`` and a complete closing handshake.

        ``ws.close()`` from another task while this session's task waits in ``receive()``
        makes aiohttp drop the connection as soon as its close frame is written, without
        waiting for the client's: behind a proxy the client could then get a reset instead of
        the close frame (1006, not the 1012 it should reconnect after). So the session's own
        task stops reading and closes; cancelled (the drain's bound), the connection is cut.
        """
        self._drain = (code, reason)
        self.close_reason = f"{code} {reason}"
        self.outbox.closed = True
        if self._receiving and self._task is not None:
            self._task.cancel()
        assert self._task is not None
        try:
            await asyncio.wait([self._task])
        except asyncio.CancelledError:
            if self._transport is not None:
                self._transport.abort()
            raise

    def _overflow(self) -> None:
        self.server.errors["slow_consumer"] += 1
        log.info("closing slow consumer %s", self.id)
        self.close_soon(CLOSE_SLOW_CONSUMER, "slow consumer: send buffer full")

    def close_soon(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self.shutdown(code, reason))

    async def shutdown(self, code: int, reason: str) -> None:
        self.close_reason = self.close_reason or f"{code} {reason}"
        self.outbox.closed = True
        self.outbox.flush()  # what was queued goes before the close frame
        await self.ws.close(code=code, message=reason.encode())

    def teardown(self) -> None:
        """Leave every channel: presence leaves go out at once, nothing waits on this socket."""
        self.outbox.closed = True
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
        if channel.expiry is not None:
            channel.expiry.cancel()
            channel.expiry = None
        if channel.participant is not None:
            held = server.participant_channels.get(channel.participant["key"])
            if held is not None:
                held.discard(channel)
                if not held:
                    del server.participant_channels[channel.participant["key"]]
        diff = server.presence.untrack(channel.topic, channel.key)
        if diff is not None:
            server.broker.publish(Envelope(diff.topic, "presence_diff", diff.payload()))

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
