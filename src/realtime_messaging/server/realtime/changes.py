"""postgres_changes on a channel: subscribe its bindings, replay what it missed on a resume,
send changes in feed order."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from ...protocol.connection import subtopic
from ...store.changefeed import Change, Missed
from ..pgchanges import receives, scope_of
from .channel import Channel
from .session import Session

log = logging.getLogger(__package__)


def bound_tables(channel: Channel) -> tuple[str, ...] | None:
    """The tables a channel's bindings name, or None when one takes any table (or another
    schema than the messaging tables'): a staff user's presence channel that resumes reads
    the presence rows it missed, not every change since (thousands, each decoded)."""
    tables: set[str] = set()
    for binding in channel.config.postgres_changes:
        if binding.schema != "public" or binding.table in (None, "*"):
            return None
        assert binding.table is not None
        tables.add(binding.table)
    return tuple(sorted(tables))


def subscribe(
    session: Session, channel: Channel, resume: int | None, staff: frozenset[str] = frozenset()
) -> None:
    """Route the channel's bindings to it, from now on or (``resume``) from a position;
    ``staff``: whose presence rows a customer's bindings may receive."""
    error = session.server.router.subscribe(
        channel, channel.config.postgres_changes, channel.identity, staff
    )
    if error is not None:
        _system(
            session,
            channel,
            "error",
            f"Unable to subscribe to changes with given parameters: {error}",
        )
        return
    if resume is None:
        # Every change after this position reaches the channel: a client that loses its
        # connection before its first change resumes from here.
        position = session.server.feed_position()
        channel.pg_position = position
        _system(session, channel, "ok", "Subscribed to PostgreSQL", position=position)
        return
    resume_from(session, channel, resume)


def resume_from(session: Session, channel: Channel, position: int) -> None:
    """Replay what the channel missed since ``position``; live changes wait meanwhile.

    Nothing to read when the feed has routed nothing after ``position`` (a channel resuming
    from the head): everything later reaches the channel live, as it is subscribed already.
    """
    head = session.server.feed_position()
    if 0 < head <= position:  # 0: the feed has not started (its head is unknown)
        channel.pg_position = position
        if channel.config.postgres_changes:
            _system(session, channel, "ok", "Subscribed to PostgreSQL", position=position)
        return
    channel.pg_buffer = []
    channel.replay = asyncio.create_task(_replay(session, channel, position))


async def _replay(session: Session, channel: Channel, position: int) -> None:
    """Send what the channel missed since ``position``, then what arrived meanwhile:
    postgres changes its bindings match, and broadcasts from the database to its topic."""
    server = session.server
    sees, customer = scope_of(channel.identity)
    # An identity that sees no change (anon, a user who is not staff) is replayed none: it
    # would read the log since its position, perhaps a day's, to route nothing.
    bindings = bool(channel.config.postgres_changes) and sees  # what the replay reads
    tables = bound_tables(channel) if bindings and customer is None else None
    staff = server.router.staff_of(channel) if bindings and customer else ()
    ask = Missed(position, customer, subtopic(channel.topic), bindings, tables, staff)
    try:
        missed_read = await server.missed.get(ask)
        assert missed_read is not None
        history, broadcasts = missed_read
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("resume of %s failed: %s", channel.topic, exc)
        channel.pg_buffer = None
        if session.channels.get(channel.topic) is channel:
            _system(session, channel, "error", "Unable to resume: the database is unavailable")
        return
    if session.channels.get(channel.topic) is not channel:
        return
    router = server.router
    channel.pg_position = position
    if history.lost:
        _system(
            session,
            channel,
            "ok",
            "History lost: changes after this position are no longer kept, or too many to "
            "replay; reload",
            position=position,
            history_lost=True,
        )
        # The client reloads now, and reads what was committed up to the read's head: what was
        # held for the channel meanwhile up to there is not sent after the reload's cue.
        channel.pg_position = history.head
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
            _send(session, channel, change, ids)
    buffered, channel.pg_buffer = channel.pg_buffer or [], None
    for change, ids in buffered:
        if change.pos > channel.pg_position:
            _send(session, channel, change, ids)
    # Replay covered the log up to its head, the buffer what was routed meanwhile.
    position = max(channel.pg_position, history.head, server.feed_position())
    channel.pg_position = position
    if channel.config.postgres_changes:
        _system(session, channel, "ok", "Subscribed to PostgreSQL", position=position)


def _send(session: Session, channel: Channel, change: Change, ids: list[int]) -> None:
    session.outbox.write(session.server.router.frame(change, channel, ids))
    channel.pg_position = change.pos


def _system(session: Session, channel: Channel, status: str, message: str, **extra: Any) -> None:
    payload = {
        "extension": "postgres_changes",
        "status": status,
        "message": message,
        "channel": subtopic(channel.topic),
        **extra,
    }
    session.outbox.text(session.proto.push(channel.topic, "system", payload, channel.join_ref))
