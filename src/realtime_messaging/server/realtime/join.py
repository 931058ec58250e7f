"""Joining and leaving a channel: the socket's limits, who is asking, the topic rules and the
policies of private channels, then the channel with its presence and postgres_changes."""

from __future__ import annotations

import logging
import time

import asyncpg

from ...domain.identity import Identity, Kind, TopicKind, parse_topic
from ...protocol.connection import subtopic
from ...protocol.events import JoinRequested, LeaveRequested
from ...protocol.presence import presence_scope
from ...store.channel_access import ChannelAccess
from ...tokens import hash_portal_token, is_portal_token
from ..auth import AuthError, expired_message
from ..liveness import participant_of
from . import changes, presence, tokens
from .channel import Channel
from .session import Session, who

log = logging.getLogger(__package__)

CLOSE_POLICY = 1008


class SocketTokenExpired(AuthError):
    """The token the socket connected with has expired: the socket can no longer act."""

    def __init__(self, message: str) -> None:
        super().__init__("InvalidJWTToken", message)


async def handle_join(session: Session, join: JoinRequested) -> None:
    """Refused (and counted) at the first rule that fails, else accepted: the channel is
    open before the reply, its presence state and postgres_changes status after it."""
    if not await _within_limits(session, join):
        return
    admitted = await _admit(session, join)
    if admitted is not None:
        identity, access = admitted
        try:
            staff = await session.server.staff_for(identity, join.config.postgres_changes)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("staff of %s's conversations could not be read: %s", who(identity), exc)
            _refuse(session, join, "UnableToConnectToProject: the database is unavailable")
            return
        await _open(session, join, identity, access, staff)


async def _within_limits(session: Session, join: JoinRequested) -> bool:
    """The socket's join rate (a flood closes the socket), channels and bindings."""
    settings = session.server.settings
    if not session.join_budget.allow(time.monotonic()):
        session.refuse(
            join.topic,
            join.ref,
            join.join_ref,
            "ClientJoinRateLimitReached: Too many joins per second",
        )
        await session.shutdown(1008, "Too many joins per second")
        return False
    channels = session.channels
    if join.topic not in channels and len(channels) >= settings.max_channels_per_connection:
        _refuse(session, join, "ChannelRateLimitReached: Too many channels")
        return False
    limits = settings.input_limits
    bindings = len(join.config.postgres_changes) + sum(
        len(c.config.postgres_changes) for t, c in channels.items() if t != join.topic
    )
    if bindings > limits.max_bindings_per_socket:
        _refuse(
            session,
            join,
            f"TooManyBindings: at most {limits.max_bindings_per_socket} postgres_changes "
            "bindings per socket",
        )
        return False
    return True


async def _admit(
    session: Session, join: JoinRequested
) -> tuple[Identity, ChannelAccess | None] | None:
    """Who joins, if the topic rules (and on a private channel the policies) let them read."""
    server = session.server
    try:
        identity = await _identity_for(session, join.access_token)
        allowed = await server.may_join(identity, join.topic)
    except SocketTokenExpired as exc:
        # The socket's own token proves nothing any more: refuse, then close the socket,
        # as Supabase does.
        _refuse(session, join, exc.reason)
        await session.shutdown(CLOSE_POLICY, exc.message)
        return None
    except AuthError as exc:
        _refuse(session, join, exc.reason)
        return None
    if not allowed:
        _refuse(
            session,
            join,
            f"Unauthorized: You do not have permissions to read from this Channel topic: {subtopic(join.topic)}",
        )
        return None
    access = None
    if join.config.private:
        try:
            access = await server.channel_access(identity, join.topic)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("private channel check of %s failed: %s", join.topic, exc)
            _refuse(session, join, "UnableToConnectToProject: the database is unavailable")
            return None
        if access is None and identity.kind is Kind.ANON:
            _refuse(session, join, "Unauthorized: Private channels need an authenticated token")
            return None
        if access is not None and not access.joins:
            _refuse(
                session,
                join,
                "Unauthorized: You do not have permissions to read from this Channel "
                f"topic: {subtopic(join.topic)}",
            )
            return None
    return identity, access


async def _open(
    session: Session,
    join: JoinRequested,
    identity: Identity,
    access: ChannelAccess | None,
    staff: frozenset[str],
) -> None:
    """Open the channel (replacing one on the same topic), reply, then send its state.
    ``staff``: whose presence rows a customer's bindings may receive."""
    server = session.server
    channels = session.channels
    topic = parse_topic(subtopic(join.topic))
    participant = participant_of(identity) if topic.kind is TopicKind.PRESENCE else None
    wants_presence = join.config.presence_enabled or participant is not None
    # Subscribed across processes before the reply: whatever any process publishes after
    # the client sees its join accepted reaches it, and the presence state holds every
    # process's metas (immediate with one process).
    scope = presence_scope(join.topic, join.config.private)
    await server.cluster.ready(join.topic, presence=scope if wants_presence else None)
    if session.outbox.closed:
        return
    old = channels.get(join.topic)
    if old is not None:
        # A duplicate join replaces the channel without phx_close (realtime-py would apply a
        # close for the old join to the new channel).
        session.drop(old)
    channel = Channel(
        server.node_id,
        session.outbox,
        session.vsn,
        join.topic,
        join.join_ref,
        join.config,
        identity,
    )
    channel.access = access
    session.hold(identity)
    server.liveness.attach(session.id, identity)
    channels[join.topic] = channel
    if log.isEnabledFor(logging.DEBUG):
        log.debug("socket %s joined %s as %s", session.id, join.topic, who(identity))
    server.hub.add(join.topic, channel)
    server.router.join_topic(channel)
    tokens.arm_expiry(session, channel)
    response = {"postgres_changes": [b.reply_entry() for b in join.config.postgres_changes]}
    session.outbox.text(session.proto.accept(join, response))
    if wants_presence and channel.reads_presence:
        state = server.cluster.state(scope)
        session.outbox.text(session.proto.push(join.topic, "presence_state", state, join.join_ref))
    if participant is not None:
        presence.stand_for(server, channel, participant)
    if join.config.postgres_changes:
        changes.subscribe(session, channel, join.config.resume_position, staff)
    elif join.config.resume_position is not None:
        # Broadcasts from the database the channel missed (docs/db-broadcast.md).
        changes.resume_from(session, channel, join.config.resume_position)


def handle_leave(session: Session, event: LeaveRequested) -> None:
    channel = session.channels.get(event.topic)
    if channel is not None:
        session.drop(channel)
    for frame in session.proto.leave(event):
        session.outbox.text(frame)


def _refuse(session: Session, join: JoinRequested, reason: str) -> None:
    session.server.errors["join_refused"] += 1
    log.info("socket %s: join of %s refused: %s", session.id, join.topic, reason)
    session.refuse(join.topic, join.ref, join.join_ref, reason)


async def _identity_for(session: Session, token: str | None) -> Identity:
    """The join's own token's identity, else the socket's, which may have expired since
    the socket opened.

    A join with the portal token the socket itself connected with (as the SDK's customers
    join) has the socket's identity, not a second look-up: that token was checked moments
    ago, and the sweeper closes every socket holding it once it is revoked (server/realtime/
    tokens.py), the socket's own use of it included. After a restart a thousand customers
    rejoin at once, and the second look-up was a whole batch's round trip between each
    socket and its channel (issue 16, the reconnect row).
    """
    identity = session.identity
    if not token or token.startswith("sb_") or _is_socket_portal_token(identity, token):
        exp = identity.expires_at
        if exp is not None and exp <= time.time():
            raise SocketTokenExpired(expired_message(exp, time.time()))
        return identity
    return await session.server.auth.identify(token)


def _is_socket_portal_token(identity: Identity, token: str) -> bool:
    """Whether ``token`` is the portal token the socket of ``identity`` connected with."""
    return (
        identity.token_hash is not None
        and is_portal_token(token)
        and hash_portal_token(token) == identity.token_hash
    )
