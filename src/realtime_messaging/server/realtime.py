"""The Supabase Realtime WebSocket endpoint: sessions, channels, broadcast, presence, auth.

One :class:`Session` per socket drives the sans-I/O :class:`ServerConnection`; joined channels
are :class:`Channel` members of the process's :class:`Hub`. Everything a channel publishes goes
through the broker, so several processes behave as one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
from aiohttp import WSMsgType, web

from ..broker import Broker, Envelope
from ..config import Settings
from ..domain.bounds import metadata_problem
from ..domain.budget import PerSecond
from ..domain.identity import (
    Identity,
    Kind,
    TopicKind,
    may_join,
    needs_conversation_owner,
    parse_topic,
)
from ..protocol.connection import UNMATCHED, ServerConnection, subtopic
from ..protocol.errors import ProtocolError
from ..protocol.events import (
    AccessTokenReceived,
    BadPush,
    BroadcastReceived,
    Event,
    Heartbeat,
    JoinRefused,
    JoinRequested,
    LeaveRequested,
    PresenceReceived,
)
from ..protocol.frames import Vsn
from ..protocol.join import JoinConfig
from ..protocol.presence import PresenceRegistry
from ..store.caller import Caller, as_caller
from ..store.changefeed import (
    Change,
    History,
    history_bounds,
    read_broadcasts,
    read_since,
    read_since_many,
)
from ..store.channel_access import ChannelAccess, channel_access
from ..store.liveness import own_typing
from .api.errors import ApiError
from .api.framework import caller_of, map_database_error
from .api.ratelimit import RateLimiter
from .auth import Authenticator, AuthError, AuthUnavailable, expired_message
from .batching import Coalesced
from .cluster import ClusterPresence
from .fanout import Outbox, broadcast_payload
from .liveness import LivenessTracker, participant_of
from .pgchanges import ChangeRouter, receives, scope_of

log = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 1008
CLOSE_POLICY = 1008
CLOSE_PROTOCOL_ERROR = 1007
#: How long closing a socket waits for the client's close frame before cutting it.
CLOSE_HANDSHAKE_TIMEOUT = 1.0
#: "Service restart": the close code of a stopping server (clients reconnect).
CLOSE_SERVICE_RESTART = 1012
#: Sockets closed at once when the server stops (as Centrifuge does), the pause between two
#: batches (10,000 sockets: 4 s), and the bound on the close handshakes once all are sent.
DRAIN_BATCH = 128
DRAIN_INTERVAL = 0.05
DRAIN_TIMEOUT = 5.0


class SocketTokenExpired(AuthError):
    """The token the socket connected with has expired: the socket can no longer act."""

    def __init__(self, message: str) -> None:
        super().__init__("InvalidJWTToken", message)


class Channel:
    """One joined topic of one session: a hub member."""

    __slots__ = (
        "session",
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
        session: Session,
        topic: str,
        join_ref: str | None,
        config: JoinConfig,
        identity: Identity,
    ) -> None:
        self.session = session
        self.topic = topic
        self.join_ref = join_ref
        self.config = config
        self.identity = identity
        #: A plain attribute, not a property: the hub reads it for every broadcast delivery.
        self.reads_private = config.private
        self.key = f"{session.server.node_id}:{next(_channel_ids)}"
        self.presence_key = config.presence_key
        self.expiry: asyncio.TimerHandle | None = None
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
    def vsn(self) -> Vsn:
        return self.session.vsn

    @property
    def receives_own_broadcasts(self) -> bool:
        return self.config.broadcast_self

    @property
    def outbox(self) -> Outbox:
        return self.session.outbox


_channel_ids = itertools.count(1)


def policy_caller(identity: Identity) -> Caller:
    """Who the policies on ``realtime.messages`` see: a token that names no staff user or
    customer is still ``authenticated`` there, as on Supabase."""
    if identity.kind is Kind.AUTHENTICATED:
        return Caller("authenticated")
    return caller_of(identity)


#: Every this many token-check rounds, the tokens in use are checked in full (deleted ones).
_FULL_CHECK_EVERY = 15

#: What a client sends because its user did something (heartbeats and token refreshes are sent
#: by timers, leaves when a view closes).
_ACTIVITY = (JoinRequested, BroadcastReceived, PresenceReceived)


class RealtimeServer:
    """Everything the WebSocket endpoint shares across sessions in one process."""

    def __init__(
        self,
        settings: Settings,
        auth: Authenticator,
        broker: Broker,
        router: ChangeRouter,
        pool: asyncpg.Pool,
        liveness: LivenessTracker,
        limiter: RateLimiter,
    ) -> None:
        self.settings = settings
        self.liveness = liveness
        self.limiter = limiter
        self.auth = auth
        self.broker = broker
        self.router = router
        self.pool = pool
        self.node_id = secrets.token_hex(4)
        self._ref_counter = itertools.count(1)
        self.presence = PresenceRegistry(self._make_ref)
        self.cluster = ClusterPresence(
            broker,
            self.presence,
            heartbeat_interval=settings.process_heartbeat_interval,
            dead_after=settings.process_dead_after,
        )
        self.hub = self.cluster.hub
        self.sessions: set[Session] = set()
        #: Socket-side errors by kind, for the metrics.
        self.errors: Counter[str] = Counter()
        self._sweepers: list[asyncio.Task[None]] = []
        #: The last change position routed in this process (set by the composition root).
        self.feed_position: Callable[[], int] = lambda: 0
        #: Portal-token hash -> the sessions holding it (as apikey or in a channel).
        self.portal_holders: dict[str, set[Session]] = {}
        #: What customers' channels missed, read for all the rejoins of one turn at once.
        self.histories: Coalesced[tuple[int, Any], History] = Coalesced(self._read_histories)
        #: Participant id -> this process's channels on presence topics that stand for them.
        self.participant_channels: dict[str, set[Channel]] = {}

    async def _read_histories(
        self, requests: list[tuple[int, Any]]
    ) -> dict[tuple[int, Any], History]:
        async with self.pool.acquire() as conn:
            return await read_since_many(conn, requests)

    def _make_ref(self) -> str:
        return f"{self.node_id}{next(self._ref_counter):x}"

    async def may_join(self, identity: Identity, topic_name: str) -> bool:
        """The topic rules (DESIGN 4.3) for a full topic name (``realtime:`` prefix optional)."""
        topic = parse_topic(subtopic(topic_name))
        owner = None
        if needs_conversation_owner(topic):
            assert topic.subject is not None
            owner = await self.auth.conversation_owner(topic.subject)
        return may_join(identity, topic, owner)

    async def channel_access(self, identity: Identity, topic_name: str) -> ChannelAccess | None:
        """For a private channel on a topic that is not one of ours, what the policies on
        ``realtime.messages`` allow ``identity``; ``None`` for our own topics (their rules
        decide, :meth:`may_join`)."""
        name = subtopic(topic_name)
        if parse_topic(name).kind is not TopicKind.PUBLIC:
            return None
        async with self.pool.acquire() as conn:
            return await channel_access(conn, policy_caller(identity), name)

    async def start(self) -> None:
        await self.cluster.start()
        self._sweepers = [
            asyncio.create_task(self._sweep_tokens(), name="rtm-token-sweeper"),
            asyncio.create_task(self._sweep_idle(), name="rtm-idle-sweeper"),
        ]

    async def stop(self) -> None:
        """Close every socket with 1012 ("service restart"), :data:`DRAIN_BATCH` at a time.

        1012, never 1000, after which phoenix.js does not reconnect: clients come back to
        another process (or this one restarted) and resume. A batch starts every
        :data:`DRAIN_INTERVAL` without waiting for the previous one's close handshakes, so
        that thousands of clients (realtime-js retries after a fixed second) do not all come
        back in the same instant; the handshakes are bounded together by
        :data:`DRAIN_TIMEOUT`, then cut.
        """
        for task in self._sweepers:
            task.cancel()
        await asyncio.gather(*self._sweepers, return_exceptions=True)
        self._sweepers = []
        sessions = list(self.sessions)
        closing: list[asyncio.Task[None]] = []
        for start in range(0, len(sessions), DRAIN_BATCH):
            if start:
                await asyncio.sleep(DRAIN_INTERVAL)
            closing += [
                asyncio.create_task(session.drain(CLOSE_SERVICE_RESTART, "service restart"))
                for session in sessions[start : start + DRAIN_BATCH]
            ]
        if closing:
            _, late = await asyncio.wait(closing, timeout=DRAIN_TIMEOUT)
            for task in late:
                task.cancel()  # aiohttp then closes the transport
            await asyncio.gather(*closing, return_exceptions=True)
        await self.cluster.stop()

    async def _sweep_tokens(self) -> None:
        """Close what revoked or expired portal tokens hold, within one check interval.

        Each round asks only for tokens that ended since the last one and looks their holders
        up by hash, so a round costs nothing with ten thousand customers connected. Tokens can
        also vanish (a customer deleted): every ``_FULL_CHECK_EVERY`` rounds the hashes in use
        are checked in full, in slices that let the loop breathe.
        """
        since = None
        rounds = 0
        while True:
            await asyncio.sleep(self.settings.token_check_interval)
            rounds += 1
            try:
                ended, since = await self.auth.portal_tokens_ended_since(since)
                if rounds % _FULL_CHECK_EVERY == 0:
                    ended |= await self._vanished_tokens()
            except Exception:  # the database may be away; the next round retries
                log.warning("portal token check failed", exc_info=True)
                continue
            for token_hash in ended:
                for session in list(self.portal_holders.get(token_hash, ())):
                    session.revoke(ended)

    async def _vanished_tokens(self) -> set[str]:
        in_use = list(self.portal_holders)
        gone: set[str] = set()
        for start in range(0, len(in_use), 500):
            gone |= await self.auth.invalid_portal_tokens(set(in_use[start : start + 500]))
        return gone

    def hold_portal_token(self, session: Session, identity: Identity) -> None:
        if identity.token_hash is not None:
            self.portal_holders.setdefault(identity.token_hash, set()).add(session)
            session.held_tokens.add(identity.token_hash)

    def release_portal_tokens(self, session: Session) -> None:
        for token_hash in session.held_tokens:
            held = self.portal_holders.get(token_hash)
            if held is not None:
                held.discard(session)
                if not held:
                    del self.portal_holders[token_hash]

    async def _sweep_idle(self) -> None:
        """Close sockets silent for longer than the idle timeout (clients heartbeat every 25 s).

        One sweep for all sockets, instead of a timeout armed around every frame received.
        """
        idle = self.settings.idle_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(idle / 2, 5.0))
            deadline = loop.time() - idle
            for session in list(self.sessions):
                if session.last_seen < deadline:
                    # 1001, not 1000: phoenix.js does not reconnect after 1000, and a client
                    # that was only stalled should come back.
                    session.close_soon(1001, "idle timeout")

    def presence_changed(self, changes: Sequence[Change]) -> None:
        """Keep the ``status`` in the Phoenix presence metas equal to the presence rows."""
        for change in changes:
            if change.table != "user_presence" or change.record is None:
                continue
            record = change.record
            key = str(record.get("user_id") or record.get("customer_id"))
            status = record.get("status")
            if not isinstance(status, str):
                continue  # a degraded change (store/changefeed.py) carries no status
            for channel in list(self.participant_channels.get(key, ())):
                assert channel.participant is not None
                if channel.participant["status"] != status:
                    channel.participant = {**channel.participant, "status": status}
                    channel.session.retrack(channel)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /realtime/v1/websocket``: authenticate, upgrade, run the session."""
        token = request.headers.get("x-api-key") or request.query.get("apikey")
        try:
            vsn = Vsn.parse(request.query.get("vsn"))
        except ProtocolError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        try:
            identity = await self.auth.identify(token)
        except AuthError as exc:
            log.info("socket refused (%d): %s", exc.status, exc.message)
            return web.json_response({"error": exc.message}, status=exc.status)
        ws = web.WebSocketResponse(
            max_msg_size=self.settings.max_frame_bytes,
            compress=False,
            autoping=True,
            # How long a close waits for the client's close frame: a live client answers at
            # once; one that does not read must not hold a drain up.
            timeout=CLOSE_HANDSHAKE_TIMEOUT,
        )
        await ws.prepare(request)
        session = Session(self, ws, request.transport, vsn, identity)
        self.sessions.add(session)
        log.info("socket %s connected: %s, vsn %s", session.id, _who(identity), vsn.value)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            session.teardown()
            log.info(
                "socket %s disconnected: %s",
                session.id,
                session.close_reason or f"closed by the client ({ws.close_code})",
            )
        return ws


def _who(identity: Identity) -> str:
    """An identity for the log: its kind and id, never its token."""
    who = identity.user_id or identity.customer_id
    return f"{identity.kind.value} {who}" if who else identity.kind.value


class Session:
    """One socket: reads frames, runs the protocol, owns its joined channels."""

    def __init__(
        self,
        server: RealtimeServer,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        vsn: Vsn,
        identity: Identity,
    ) -> None:
        self.server = server
        self.ws = ws
        self.vsn = vsn
        self.identity = identity
        self.id = f"{server.node_id}:s{next(_channel_ids)}"
        self.proto = ServerConnection(vsn, server.settings.input_limits)
        self.outbox = Outbox(transport, server.settings.send_buffer_limit, self._overflow)
        self.channels: dict[str, Channel] = {}
        self._closing: asyncio.Task[None] | None = None
        self._transport = transport
        #: Set by :meth:`drain`: the close the session's own task sends once it stops reading.
        self._drain: tuple[int, str] | None = None
        #: Why the server closed the socket (for the log); None: the client closed it.
        self.close_reason: str | None = None
        self._task: asyncio.Task[Any] | None = None
        self._receiving = False
        self._done = asyncio.Event()
        self._events = PerSecond(server.settings.max_events_per_second)
        self._joins = PerSecond(server.settings.max_joins_per_second)
        self.last_seen = asyncio.get_running_loop().time()
        #: Portal-token hashes this session has held (the server's index points back here).
        self.held_tokens: set[str] = set()
        server.hold_portal_token(self, identity)
        server.liveness.attach(self.id, identity)

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        ws = self.ws
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        try:
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
                    await self._on_frame(msg.data, binary=False)
                elif kind is WSMsgType.BINARY:
                    await self._on_frame(msg.data, binary=True)
                else:  # CLOSE, CLOSING, CLOSED, ERROR (e.g. 1009 message too big)
                    return
            if self._drain is not None:
                code, reason = self._drain
                # Sent from the task that reads, so aiohttp waits for the client's close
                # frame before it closes the connection (bounded by the socket's timeout).
                await ws.close(code=code, message=reason.encode())
        finally:
            self._done.set()

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
        try:
            await self._done.wait()
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
        await self.ws.close(code=code, message=reason.encode())

    def teardown(self) -> None:
        """Leave every channel: presence leaves go out at once, nothing waits on this socket."""
        self.outbox.closed = True
        self.server.release_portal_tokens(self)
        self.server.liveness.detach(self.id)
        for channel in list(self.channels.values()):
            self._drop(channel)

    # -- frames -------------------------------------------------------------------------

    async def _on_frame(self, data: Any, *, binary: bool) -> None:
        try:
            event = self.proto.receive_binary(data) if binary else self.proto.receive_text(data)
        except ProtocolError as exc:
            self.server.errors["protocol"] += 1
            await self.shutdown(CLOSE_PROTOCOL_ERROR, f"malformed frame: {exc}"[:120])
            return
        if isinstance(event, Heartbeat):
            self.outbox.text(self.proto.heartbeat_reply(event.ref))
            return
        if not self._events.allow(time.monotonic()):
            topic = getattr(event, "topic", "phoenix")
            self.outbox.text(
                self.proto.refuse(
                    topic, getattr(event, "ref", None), None, "Too many messages per second"
                )
            )
            return
        if isinstance(event, _ACTIVITY):
            self.server.liveness.activity(self.id)
        try:
            await self._dispatch(event)
        except Exception:
            # A bug in handling one push must not take the socket down: the channel errors
            # (clients rejoin after phx_error) and every other channel carries on.
            topic = event.topic
            log.exception("error handling %s on %s", type(event).__name__, topic)
            channel = self.channels.get(topic)
            if channel is not None:
                self._drop(channel)
                self.outbox.text(self.proto.error_channel(topic))

    async def _dispatch(self, event: Event) -> None:
        if isinstance(event, JoinRequested):
            await self._join(event)
        elif isinstance(event, BroadcastReceived | PresenceReceived):
            channel = self._writable(event)
            if channel is None:
                return
            if isinstance(event, PresenceReceived):
                await self._presence(event, channel)
            elif channel.access is not None and not channel.access.write:
                # No INSERT policy for the caller on this private channel: dropped without a
                # word, as Supabase does.
                return
            elif event.event == "typing" and (event.binary is None or event.binary.json_encoded):
                # realtime-js under vsn 2.0.0 sends every broadcast as a binary frame with a
                # JSON payload: a typing push all the same.
                await self._typing(event, channel)
            else:
                self._broadcast(event, channel)
        elif isinstance(event, AccessTokenReceived):
            await self._refresh(event)
        elif isinstance(event, LeaveRequested):
            channel = self.channels.get(event.topic)
            if channel is not None:
                self._drop(channel)
            for frame in self.proto.leave(event):
                self.outbox.text(frame)
        elif isinstance(event, JoinRefused | BadPush):
            self.outbox.text(
                self.proto.refuse(event.topic, event.ref, event.join_ref, event.reason)
            )

    def _writable(self, event: BroadcastReceived | PresenceReceived) -> Channel | None:
        """The channel a push acts through, if it may still act: a push on a channel whose
        token has expired gets an error reply and closes the channel, before anything is
        published or written (the expiry timer may not have fired yet)."""
        channel = self.channels.get(event.topic)
        if channel is None:
            self.outbox.text(self.proto.refuse(event.topic, event.ref, None, UNMATCHED))
            return None
        exp = channel.identity.expires_at
        if exp is not None and exp <= time.time():
            self.outbox.text(
                self.proto.refuse(
                    event.topic, event.ref, channel.join_ref, expired_message(exp, time.time())
                )
            )
            self._expire(channel)
            return None
        return channel

    # -- join / leave -------------------------------------------------------------------

    async def _join(self, join: JoinRequested) -> None:
        server = self.server
        if not self._joins.allow(time.monotonic()):
            self.outbox.text(
                self.proto.refuse(
                    join.topic,
                    join.ref,
                    join.join_ref,
                    "ClientJoinRateLimitReached: Too many joins per second",
                )
            )
            await self.shutdown(1008, "Too many joins per second")
            return
        if (
            join.topic not in self.channels
            and len(self.channels) >= server.settings.max_channels_per_connection
        ):
            self._refuse(join, "ChannelRateLimitReached: Too many channels")
            return
        limits = server.settings.input_limits
        bindings = len(join.config.postgres_changes) + sum(
            len(c.config.postgres_changes) for t, c in self.channels.items() if t != join.topic
        )
        if bindings > limits.max_bindings_per_socket:
            self._refuse(
                join,
                f"TooManyBindings: at most {limits.max_bindings_per_socket} postgres_changes "
                "bindings per socket",
            )
            return
        try:
            identity = await self._identity_for(join.access_token)
            allowed = await self.server.may_join(identity, join.topic)
        except SocketTokenExpired as exc:
            # The socket's own token proves nothing any more: refuse, then close the socket,
            # as Supabase does.
            self._refuse(join, exc.reason)
            await self.shutdown(CLOSE_POLICY, exc.message)
            return
        except AuthError as exc:
            self._refuse(join, exc.reason)
            return
        if not allowed:
            self._refuse(
                join,
                f"Unauthorized: You do not have permissions to read from this Channel topic: {subtopic(join.topic)}",
            )
            return
        access = None
        if join.config.private:
            try:
                access = await server.channel_access(identity, join.topic)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("private channel check of %s failed: %s", join.topic, exc)
                self._refuse(join, "UnableToConnectToProject: the database is unavailable")
                return
            if access is None and identity.kind is Kind.ANON:
                self._refuse(join, "Unauthorized: Private channels need an authenticated token")
                return
            if access is not None and not access.read:
                self._refuse(
                    join,
                    "Unauthorized: You do not have permissions to read from this Channel "
                    f"topic: {subtopic(join.topic)}",
                )
                return
        topic = parse_topic(subtopic(join.topic))
        participant = participant_of(identity) if topic.kind is TopicKind.PRESENCE else None
        wants_presence = join.config.presence_enabled or participant is not None
        # Subscribed across processes before the reply: whatever any process publishes after
        # the client sees its join accepted reaches it, and the presence state holds every
        # process's metas (immediate with one process).
        await server.cluster.ready(join.topic, presence=wants_presence)
        if self.outbox.closed:
            return
        old = self.channels.get(join.topic)
        if old is not None:
            # A duplicate join replaces the channel without phx_close (realtime-py would apply a
            # close for the old join to the new channel).
            self._drop(old)
        channel = Channel(self, join.topic, join.join_ref, join.config, identity)
        channel.access = access
        server.hold_portal_token(self, identity)
        server.liveness.attach(self.id, identity)
        self.channels[join.topic] = channel
        log.debug("socket %s joined %s as %s", self.id, join.topic, _who(identity))
        server.hub.add(join.topic, channel)
        server.router.join_topic(channel)
        self._arm_expiry(channel)
        response = {"postgres_changes": [b.reply_entry() for b in join.config.postgres_changes]}
        self.outbox.text(self.proto.accept(join, response))
        if wants_presence:
            state = server.cluster.state(join.topic)
            self.outbox.text(self.proto.push(join.topic, "presence_state", state, join.join_ref))
        if participant is not None:
            # The participant is present on the conversation's presence topic while this
            # channel is joined, under their own id, with their presence row's status.
            key = str(participant.user_id or participant.customer_id)
            channel.participant = {
                "key": key,
                "kind": "staff" if participant.user_id else "customer",
                "status": "online",
            }
            server.participant_channels.setdefault(key, set()).add(channel)
            self.retrack(channel)
        if join.config.postgres_changes:
            self._subscribe_changes(channel, join.config.resume_position)
        elif join.config.resume_position is not None:
            # Broadcasts from the database the channel missed (docs/db-broadcast.md).
            channel.pg_buffer = []
            channel.replay = asyncio.create_task(self._replay(channel, join.config.resume_position))

    # -- postgres_changes ---------------------------------------------------------------

    def _pg_system(self, channel: Channel, status: str, message: str, **extra: Any) -> None:
        payload = {
            "extension": "postgres_changes",
            "status": status,
            "message": message,
            "channel": subtopic(channel.topic),
            **extra,
        }
        self.outbox.text(self.proto.push(channel.topic, "system", payload, channel.join_ref))

    def _subscribe_changes(self, channel: Channel, resume: int | None) -> None:
        error = self.server.router.subscribe(
            channel, channel.config.postgres_changes, channel.identity
        )
        if error is not None:
            self._pg_system(
                channel,
                "error",
                f"Unable to subscribe to changes with given parameters: {error}",
            )
            return
        if resume is None:
            # Every change after this position reaches the channel: a client that loses its
            # connection before its first change resumes from here.
            position = self.server.feed_position()
            channel.pg_position = position
            self._pg_system(channel, "ok", "Subscribed to PostgreSQL", position=position)
            return
        channel.pg_buffer = []
        channel.replay = asyncio.create_task(self._replay(channel, resume))

    async def _replay(self, channel: Channel, position: int) -> None:
        """Send what the channel missed since ``position``, then what arrived meanwhile:
        postgres changes its bindings match, and broadcasts from the database to its topic."""
        _, customer = scope_of(channel.identity)
        bindings = bool(channel.config.postgres_changes)
        try:
            if not bindings:
                async with self.server.pool.acquire() as conn:
                    history: History | None = await history_bounds(conn, position)
            elif customer is None:
                async with self.server.pool.acquire() as conn:
                    history = await read_since(conn, position)
            else:
                history = await self.server.histories.get((position, customer))
            assert history is not None
            async with self.server.pool.acquire() as conn:
                broadcasts = await read_broadcasts(
                    conn, position, subtopic(channel.topic), history.head
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("resume of %s failed: %s", channel.topic, exc)
            channel.pg_buffer = None
            if self.channels.get(channel.topic) is channel:
                self._pg_system(channel, "error", "Unable to resume: the database is unavailable")
            return
        if self.channels.get(channel.topic) is not channel:
            return
        router = self.server.router
        channel.pg_position = position
        if history.lost:
            self._pg_system(
                channel,
                "ok",
                "History lost: changes after this position are no longer kept; reload",
                position=position,
                history_lost=True,
            )
        else:
            missed: list[tuple[Change, list[int]]] = [
                (change, []) for change in broadcasts if receives(change, channel)
            ]
            if bindings:
                for change in history.changes:
                    ids = router.ids_for(change, channel)
                    if ids:
                        missed.append((change, ids))
            missed.sort(key=lambda item: item[0].pos)
            for change, ids in missed:
                self._send_change(channel, change, ids)
        buffered, channel.pg_buffer = channel.pg_buffer or [], None
        for change, ids in buffered:
            if change.pos > channel.pg_position:
                self._send_change(channel, change, ids)
        # Replay covered the log up to its head, the buffer what was routed meanwhile.
        position = max(channel.pg_position, history.head, self.server.feed_position())
        channel.pg_position = position
        if bindings:
            self._pg_system(channel, "ok", "Subscribed to PostgreSQL", position=position)

    def _send_change(self, channel: Channel, change: Change, ids: list[int]) -> None:
        self.outbox.write(self.server.router.frame(change, channel, ids))
        channel.pg_position = change.pos

    def _refuse(self, join: JoinRequested, reason: str) -> None:
        self.server.errors["join_refused"] += 1
        log.info("socket %s: join of %s refused: %s", self.id, join.topic, reason)
        self.outbox.text(self.proto.refuse(join.topic, join.ref, join.join_ref, reason))

    async def _identity_for(self, token: str | None) -> Identity:
        """The join's own token's identity, else the socket's, which may have expired since
        the socket opened."""
        if not token or token.startswith("sb_"):
            exp = self.identity.expires_at
            if exp is not None and exp <= time.time():
                raise SocketTokenExpired(expired_message(exp, time.time()))
            return self.identity
        return await self.server.auth.identify(token)

    def _drop(self, channel: Channel) -> None:
        """Forget a channel: out of the hub, presence left, expiry timer cancelled."""
        if self.channels.get(channel.topic) is channel:
            del self.channels[channel.topic]
        self.server.hub.remove(channel.topic, channel)
        self.server.router.unsubscribe(channel)
        self.server.router.leave_topic(channel)
        if channel.replay is not None:
            channel.replay.cancel()
            channel.replay = None
        if channel.expiry is not None:
            channel.expiry.cancel()
            channel.expiry = None
        if channel.participant is not None:
            held = self.server.participant_channels.get(channel.participant["key"])
            if held is not None:
                held.discard(channel)
                if not held:
                    del self.server.participant_channels[channel.participant["key"]]
        diff = self.server.presence.untrack(channel.topic, channel.key)
        if diff is not None:
            self.server.broker.publish(Envelope(diff.topic, "presence_diff", diff.payload()))

    def _close_channel(self, channel: Channel, message: str) -> None:
        """Server-initiated close: ``system`` error, then ``phx_close`` (clients do not rejoin)."""
        if self.channels.get(channel.topic) is not channel:
            return
        self._drop(channel)
        payload = {
            "extension": "system",
            "status": "error",
            "message": message,
            "channel": subtopic(channel.topic),
        }
        for frame in self.proto.close_channel(channel.topic, payload):
            self.outbox.text(frame)

    # -- token lifetime -----------------------------------------------------------------

    def _arm_expiry(self, channel: Channel) -> None:
        if channel.expiry is not None:
            channel.expiry.cancel()
            channel.expiry = None
        exp = channel.identity.expires_at
        if exp is None:
            return
        delay = max(0.0, exp - time.time())
        loop = asyncio.get_running_loop()
        channel.expiry = loop.call_later(delay, self._expire, channel)

    def _expire(self, channel: Channel) -> None:
        now = time.time()
        self._close_channel(channel, expired_message(channel.identity.expires_at or now, now))

    async def _refresh(self, event: AccessTokenReceived) -> None:
        token = event.token
        channel = self.channels.get(event.topic)
        if channel is None or not token or token.startswith("sb_"):
            return
        access = channel.access
        try:
            identity = await self.server.auth.identify(token)
            allowed = await self.server.may_join(identity, channel.topic)
            if allowed and access is not None:
                # The policies decided for the old token; a new one is checked again.
                access = await self.server.channel_access(identity, channel.topic)
                allowed = access is not None and access.read
        except AuthUnavailable:
            return  # keep the channel on its current token; the client refreshes again
        except AuthError as exc:
            self._close_channel(channel, exc.message)
            return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("private channel check of %s failed: %s", channel.topic, exc)
            return  # keep the channel on its current token, as when auth is unavailable
        if self.channels.get(channel.topic) is not channel:
            return
        if not allowed:
            self._close_channel(
                channel,
                f"You no longer have permission to read from this Channel topic: {subtopic(channel.topic)}",
            )
            return
        channel.identity = identity
        channel.access = access
        self.server.hold_portal_token(self, identity)
        self.server.liveness.attach(self.id, identity)
        self._arm_expiry(channel)
        if channel.config.postgres_changes:
            self.server.router.subscribe(channel, channel.config.postgres_changes, identity)

    def revoke(self, invalid: set[str]) -> None:
        """Close channels (or the whole socket) held by portal tokens that are no longer valid."""
        if not invalid:
            return
        if self.identity.token_hash in invalid:
            for channel in list(self.channels.values()):
                self._close_channel(channel, "Token has been revoked")
            self.close_soon(1008, "Token has been revoked")
            return
        for channel in list(self.channels.values()):
            if channel.identity.token_hash in invalid:
                self._close_channel(channel, "Token has been revoked")

    # -- broadcast and presence ---------------------------------------------------------

    def _broadcast(self, event: BroadcastReceived, channel: Channel) -> None:
        exclude = None if channel.config.broadcast_self else channel.key
        binary = event.binary
        private = channel.config.private
        if binary is None:
            envelope = Envelope(
                event.topic,
                "broadcast",
                broadcast_payload(event.event, event.payload),
                exclude,
                private=private,
            )
        else:
            envelope = Envelope(
                event.topic,
                "broadcast",
                broadcast_payload(event.event, event.payload),
                exclude,
                user_event=binary.event,
                binary=binary.payload,
                json_encoded=binary.json_encoded,
                private=private,
            )
        self.server.broker.publish(envelope)
        if channel.config.broadcast_ack and event.ref is not None:
            self.outbox.text(self.proto.reply(event.topic, event.ref, channel.join_ref, "ok", {}))

    async def _typing(self, event: BroadcastReceived, channel: Channel) -> None:
        """A ``typing`` broadcast from a staff user or customer is also a typing indicator,
        owned by this connection (so it ends when the connection does), under the typing rate
        limit. From anyone else it is a plain broadcast."""
        identity = channel.identity
        server = self.server
        connection_id = server.liveness.connection_id(self.id, identity)
        payload = event.payload if isinstance(event.payload, dict) else {}
        topic = parse_topic(subtopic(event.topic))
        conversation: Any = topic.subject if topic.kind is TopicKind.CONVERSATION else None
        conversation = conversation or payload.get("conversationId")
        if connection_id is None or conversation is None:
            self._broadcast(event, channel)
            return
        is_typing = payload.get("isTyping", payload.get("is_typing"))
        reason = None
        try:
            conversation = uuid.UUID(str(conversation))
        except ValueError:
            reason = "typing: conversationId is not a UUID"
        if not isinstance(is_typing, bool):
            reason = "typing: the payload needs isTyping, true or false"
        if reason is None:
            caller = caller_of(identity)
            try:
                await server.limiter.check_typing(
                    caller.user_id or caller.customer_id, conversation
                )
                async with server.pool.acquire() as conn:
                    async with as_caller(conn, caller):
                        indicator = await conn.fetchval(
                            "SELECT (public.update_typing_indicator($1, $2, $3, $4, 5)).id",
                            conversation,
                            caller.user_id,
                            caller.customer_id,
                            is_typing,
                        )
                    await own_typing(conn, indicator, connection_id)
            except ApiError as exc:
                reason = exc.message
            except asyncpg.PostgresError as exc:
                mapped = map_database_error(exc)
                if mapped is None:
                    raise
                reason = f"typing: {mapped.message}"
        if reason is not None:
            if event.ref is not None:
                self.outbox.text(
                    self.proto.refuse(event.topic, event.ref, channel.join_ref, reason)
                )
            return
        if self.channels.get(event.topic) is channel:  # not closed while the row was written
            self._broadcast(event, channel)

    def retrack(self, channel: Channel) -> None:
        """Publish the participant's presence on a conversation: what the client tracked, with
        the server's fields (key, kind, status) over it."""
        assert channel.participant is not None
        meta = {**channel.tracked, **channel.participant}
        diff = self.server.presence.track(
            channel.topic, channel.key, channel.participant["key"], meta
        )
        if diff is not None:
            self.server.broker.publish(Envelope(diff.topic, "presence_diff", diff.payload()))

    async def _presence(self, event: PresenceReceived, channel: Channel) -> None:
        registry = self.server.presence
        if event.action == "track":
            problem: str | None
            if not isinstance(event.payload, dict):
                problem = "Presence track payload must be a map"
            else:
                problem = metadata_problem(event.payload, self.server.settings.input_limits)
            if problem is not None:
                self.outbox.text(
                    self.proto.refuse(event.topic, event.ref, channel.join_ref, problem)
                )
                return
            if channel.participant is not None:
                # The same action as setting one's presence over HTTP: the same limit.
                try:
                    await self.server.limiter.check_presence(channel.participant["key"])
                except ApiError as exc:
                    self.outbox.text(
                        self.proto.refuse(event.topic, event.ref, channel.join_ref, exc.message)
                    )
                    return
                if self.channels.get(event.topic) is not channel:
                    return  # closed while the limit was checked
                channel.tracked = event.payload
                self.outbox.text(
                    self.proto.reply(event.topic, event.ref, channel.join_ref, "ok", {})
                )
                self.retrack(channel)
                return
            if not channel.presence_key:
                channel.presence_key = str(uuid.uuid1())  # Supabase's key for an empty one
            diff = registry.track(event.topic, channel.key, channel.presence_key, event.payload)
        elif channel.participant is not None:
            # A participant's presence on a conversation follows the channel: untrack only
            # drops the fields the client added.
            channel.tracked = {}
            self.outbox.text(self.proto.reply(event.topic, event.ref, channel.join_ref, "ok", {}))
            self.retrack(channel)
            return
        else:
            diff = registry.untrack(event.topic, channel.key)
        self.outbox.text(self.proto.reply(event.topic, event.ref, channel.join_ref, "ok", {}))
        if diff is not None:
            self.server.broker.publish(Envelope(diff.topic, "presence_diff", diff.payload()))
