"""A joined topic of one socket, as the hub and the change router see it."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

from ...domain.identity import Identity
from ...protocol.frames import Vsn
from ...protocol.join import JoinConfig
from ...protocol.presence import presence_scope
from ...store.changefeed import Change
from ...store.channel_access import ChannelAccess
from ..fanout import Outbox

#: One count for session ids and channel keys: each is unique within the process.
serial = itertools.count(1)


class Channel:
    """One joined topic of one session: a hub member."""

    __slots__ = (
        "outbox",
        "vsn",
        "topic",
        "join_ref",
        "config",
        "identity",
        "key",
        "presence_key",
        "expiry",
        "pg_position",
        "pg_buffer",
        "replay",
        "participant",
        "tracked",
        "access",
        "reads_private",
    )

    def __init__(
        self,
        node_id: str,
        outbox: Outbox,
        vsn: Vsn,
        topic: str,
        join_ref: str | None,
        config: JoinConfig,
        identity: Identity,
    ) -> None:
        #: The session's outbox and wire format, plain attributes: read for every delivery.
        self.outbox = outbox
        self.vsn = vsn
        self.topic = topic
        self.join_ref = join_ref
        self.config = config
        self.identity = identity
        #: A plain attribute, not a property: the hub reads it for every broadcast delivery.
        self.reads_private = config.private
        self.key = f"{node_id}:{next(serial)}"
        self.presence_key = config.presence_key
        #: When its token expires, as registered with :class:`Expiries` (None: never).
        self.expiry: float | None = None
        #: Position of the last postgres change delivered (changes at or below it are skipped).
        self.pg_position = 0
        #: While a resume replays history, live changes wait here.
        self.pg_buffer: list[tuple[Change, list[int]]] | None = None
        self.replay: asyncio.Task[None] | None = None
        #: On ``presence:<conversation_id>`` topics, the staff user or customer this channel's
        #: presence stands for (its key), with the server-owned part of its meta.
        self.participant: dict[str, str] | None = None
        self.tracked: dict[str, Any] = {}
        #: On a private channel whose topic is not one of ours, what the policies on
        #: realtime.messages allow (decided at join, again when the token changes).
        self.access: ChannelAccess | None = None

    @property
    def receives_own_broadcasts(self) -> bool:
        return self.config.broadcast_self

    @property
    def reads_presence(self) -> bool:
        """Whether presence state and diffs reach this channel: always on a public channel or
        one of our own topics, on another private channel if a policy lets the caller read the
        topic's presence."""
        return self.access is None or self.access.presence_read

    @property
    def presence_scope(self) -> str:
        """Where this channel's presence is kept: its private or its public side of the topic."""
        return presence_scope(self.topic, self.reads_private)


class Expiries:
    """Channels to close when their token expires: one timer per expiry time, not one per
    channel. Thousands of sockets share an API key's expiry and a customer's channels their
    token's; a timer each cost a libuv timer per channel, armed and cancelled, and its memory
    for as long as the channel lived (about 0.3 KB per idle connection, benchmarks/README.md,
    "Connect path, second pass")."""

    def __init__(self) -> None:
        self._due: dict[float, tuple[asyncio.TimerHandle, dict[Channel, Callable[[], None]]]] = {}

    def add(self, channel: Channel, expires_at: float, expire: Callable[[], None]) -> None:
        """Call ``expire`` at ``expires_at`` (Unix time) unless the channel is discarded first."""
        self.discard(channel)
        entry = self._due.get(expires_at)
        if entry is None:
            delay = max(0.0, expires_at - time.time())
            handle = asyncio.get_running_loop().call_later(delay, self._fire, expires_at)
            entry = self._due[expires_at] = (handle, {})
        entry[1][channel] = expire
        channel.expiry = expires_at

    def discard(self, channel: Channel) -> None:
        expires_at = channel.expiry
        if expires_at is None:
            return
        channel.expiry = None
        handle, channels = self._due[expires_at]
        del channels[channel]
        if not channels:
            handle.cancel()
            del self._due[expires_at]

    def _fire(self, expires_at: float) -> None:
        _, channels = self._due.pop(expires_at)
        for channel, expire in channels.items():
            channel.expiry = None
            expire()
