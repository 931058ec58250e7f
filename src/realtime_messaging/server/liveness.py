"""Presence from live connections: which participants this process holds sockets for.

Sessions report what happens (a participant's connection opened, the client did something, the
socket closed); this tracker writes it to the database in small batches, heartbeats the
process, and runs the presence rules (``store/liveness.py``) on a timer. Writes are batched and
activity is thinned to one write per connection per ``activity_every`` seconds, so ten thousand
idle sockets cost nothing after they connected.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncpg

from ..domain.identity import Identity, Kind
from ..store import liveness as store
from ..store.liveness import Connection, Participant
from .periodic import DATABASE_ERRORS, every

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    """The timeouts of docs/presence.md."""

    away_after: float = 300.0
    grace: float = 10.0
    heartbeat_interval: float = 5.0
    dead_after: float = 15.0
    settle_interval: float = 1.0

    @property
    def activity_every(self) -> float:
        """How stale a connection's recorded activity may get: a small part of ``away_after``."""
        return min(15.0, self.away_after / 10)


def participant_of(identity: Identity) -> Participant | None:
    if identity.kind is Kind.STAFF and identity.user_id is not None:
        return Participant(identity.user_id, None)
    if identity.kind is Kind.CUSTOMER and identity.customer_id is not None:
        return Participant(None, identity.customer_id)
    return None


@dataclass
class _Pending:
    opened: dict[str, Connection] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)
    active_participants: set[Participant] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.opened or self.active or self.active_participants or self.closed)


class LivenessTracker:
    def __init__(self, pool: asyncpg.Pool, process_id: str, policy: LivenessPolicy) -> None:
        self._pool = pool
        self.process_id = process_id
        self.policy = policy
        #: connection id -> connection, for every open connection of this process.
        self._open: dict[str, Connection] = {}
        #: session id -> its connection ids (one per participant it authenticated as).
        self._sessions: dict[str, dict[Participant, str]] = {}
        #: connection id -> loop time its activity was last queued.
        self._reported: dict[str, float] = {}
        self._participant_reported: dict[Participant, float] = {}
        self._next_forget = 0.0
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- what sessions report (synchronous, cheap) -----------------------------------------

    def attach(self, session_id: str, identity: Identity) -> str | None:
        """A session authenticated as ``identity``: its connection id for that participant."""
        participant = participant_of(identity)
        if participant is None:
            return None
        held = self._sessions.setdefault(session_id, {})
        connection_id = held.get(participant)
        if connection_id is None:
            connection_id = f"{session_id}/{participant}"
            held[participant] = connection_id
            connection = Connection(connection_id, participant)
            self._open[connection_id] = connection
            self._pending.opened[connection_id] = connection
            self._reported[connection_id] = asyncio.get_running_loop().time()
            self._wake.set()
        return connection_id

    def activity(self, session_id: str, now: float) -> None:
        """The client did something (not a heartbeat) at ``now`` (the loop's time): its
        participants are active."""
        held = self._sessions.get(session_id)
        if not held:
            return
        for connection_id in held.values():
            if now - self._reported.get(connection_id, 0.0) >= self.policy.activity_every:
                self._reported[connection_id] = now
                self._pending.active.add(connection_id)
                self._wake.set()

    def participant_activity(self, identity: Identity) -> None:
        """Activity through the HTTP API, which may reach another process than the socket."""
        participant = participant_of(identity)
        if participant is None:
            return
        now = asyncio.get_running_loop().time()
        last = self._participant_reported.get(participant, float("-inf"))
        if now - last >= self.policy.activity_every:
            if now >= self._next_forget:
                # Forget those whose last report is old enough not to matter any more.
                self._next_forget = now + self.policy.activity_every
                horizon = now - self.policy.activity_every
                self._participant_reported = {
                    p: t for p, t in self._participant_reported.items() if t > horizon
                }
            self._participant_reported[participant] = now
            self._pending.active_participants.add(participant)
            self._wake.set()

    def detach(self, session_id: str) -> None:
        """The socket closed."""
        for connection_id in self._sessions.pop(session_id, {}).values():
            self._open.pop(connection_id, None)
            self._reported.pop(connection_id, None)
            # Closed even if its opening is still pending: typing it reported may already be
            # written, owned by it. (Opened then closed in one batch: online, then the grace.)
            self._pending.closed.add(connection_id)
            self._pending.active.discard(connection_id)
        self._wake.set()

    def connection_id(self, session_id: str, identity: Identity) -> str | None:
        participant = participant_of(identity)
        held = self._sessions.get(session_id)
        return held.get(participant) if held and participant else None

    # -- background work ---------------------------------------------------------------

    async def start(self) -> None:
        async with self._pool.acquire() as conn:
            await store.heartbeat(conn, self.process_id)
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="rtm-liveness-writer"),
            asyncio.create_task(
                every(self.policy.heartbeat_interval, self._heartbeat, "process heartbeat"),
                name="rtm-liveness-heartbeat",
            ),
            asyncio.create_task(
                every(self.policy.settle_interval, self.settle, "presence rules"),
                name="rtm-presence-rules",
            ),
        ]

    async def stop(self) -> None:
        """Stop writing; the connections close in the database as the sockets do (or, if this
        process never gets to, when another process declares it dead)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for session_id in list(self._sessions):
            self.detach(session_id)
        try:
            await self.flush()
        except DATABASE_ERRORS as exc:
            log.warning("could not record closed connections at shutdown: %s", exc)

    async def flush(self) -> None:
        """Write what is pending in one transaction (kept for the next try if it fails)."""
        pending, self._pending = self._pending, _Pending()
        if not pending:
            return
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await store.open_connections(conn, self.process_id, list(pending.opened.values()))
                await store.record_activity(conn, sorted(pending.active))
                await store.record_participant_activity(conn, list(pending.active_participants))
                await store.close_connections(conn, sorted(pending.closed))
        except BaseException:
            self._restore(pending)
            raise

    def _restore(self, pending: _Pending) -> None:
        for connection_id, connection in pending.opened.items():
            self._pending.opened.setdefault(connection_id, connection)
        self._pending.active |= {c for c in pending.active if c in self._open}
        self._pending.active_participants |= pending.active_participants
        self._pending.closed |= pending.closed

    async def settle(self) -> None:
        async with self._pool.acquire() as conn:
            await store.settle(
                conn,
                away_after=self.policy.away_after,
                grace=self.policy.grace,
                dead_after=self.policy.dead_after,
            )

    async def _heartbeat(self) -> None:
        async with self._pool.acquire() as conn:
            known = await store.heartbeat(conn, self.process_id)
        if not known:
            # Declared dead (the database was out of reach for longer than dead_after): the
            # connections this process still holds open again.
            log.warning("process %s was declared dead; reopening its connections", self.process_id)
            self._pending.opened.update(self._open)
            self._wake.set()

    async def _write_loop(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                backoff = 0.05
            except Exception as exc:
                log.warning(
                    "presence write failed (%s); retrying in %.2f s",
                    exc,
                    backoff,
                    exc_info=not isinstance(exc, DATABASE_ERRORS),
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._wake.set()
