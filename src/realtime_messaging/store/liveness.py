"""The database side of presence from live connections (migration 0006).

Each server process is a row that heartbeats; each live connection of a staff user or a
customer is a row owned by its process. :func:`settle` applies the presence rules in SQL, so
that any process, or a restarted one, settles the presence of participants whose process died.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import orjson

from .caller import Caller


@dataclass(frozen=True, slots=True)
class Participant:
    """A staff user or a customer (exactly one of the two ids)."""

    user_id: UUID | None
    customer_id: UUID | None

    def __str__(self) -> str:
        return f"user:{self.user_id}" if self.user_id else f"customer:{self.customer_id}"


@dataclass(frozen=True, slots=True)
class Connection:
    id: str
    participant: Participant


async def heartbeat(conn: asyncpg.Connection, process_id: str) -> bool:
    """Record that the process is alive; False when it was unknown (new, or declared dead)."""
    found = await conn.fetchval(
        "UPDATE rtm.server_processes SET heartbeat_at = now() WHERE id = $1 RETURNING true",
        process_id,
    )
    if found:
        return True
    await conn.execute(
        "INSERT INTO rtm.server_processes (id) VALUES ($1) ON CONFLICT (id) DO UPDATE "
        "SET heartbeat_at = now()",
        process_id,
    )
    return False


async def other_live_processes(conn: asyncpg.Connection, process_id: str, dead_after: float) -> int:
    """How many other server processes heartbeat on this database."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM rtm.server_processes WHERE id <> $1 "
        "AND heartbeat_at > now() - make_interval(secs => $2)",
        process_id,
        dead_after,
    )
    return count


async def open_connections(
    conn: asyncpg.Connection, process_id: str, connections: Sequence[Connection]
) -> None:
    """Register connections (again, after the process was declared dead: they reopen) and bring
    their participants online."""
    if not connections:
        return
    # Participants deleted meanwhile are left out (their rows would fail the foreign keys).
    rows = await conn.fetch(
        "INSERT INTO rtm.live_connections AS c (id, process_id, user_id, customer_id) "
        "SELECT v.* FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[]) "
        "AS v (id, process_id, user_id, customer_id) "
        "WHERE (v.user_id IS NULL OR EXISTS (SELECT 1 FROM public.users u WHERE u.id = v.user_id)) "
        "AND (v.customer_id IS NULL "
        "OR EXISTS (SELECT 1 FROM public.customers k WHERE k.id = v.customer_id)) "
        "ON CONFLICT (id) DO UPDATE SET closed_at = NULL, process_id = excluded.process_id, "
        "last_active_at = now(), idle_declared_at = NULL "
        "RETURNING c.user_id, c.customer_id",
        [c.id for c in connections],
        [process_id] * len(connections),
        [c.participant.user_id for c in connections],
        [c.participant.customer_id for c in connections],
    )
    await _online(conn, [Participant(r["user_id"], r["customer_id"]) for r in rows])


async def record_activity(conn: asyncpg.Connection, connection_ids: Sequence[str]) -> None:
    """Activity the clients reported: the connections are active, their participants online."""
    if not connection_ids:
        return
    rows = await conn.fetch(
        "UPDATE rtm.live_connections SET last_active_at = now(), idle_declared_at = NULL "
        "WHERE id = ANY($1::text[]) AND closed_at IS NULL RETURNING user_id, customer_id",
        list(connection_ids),
    )
    await _online(conn, [Participant(r["user_id"], r["customer_id"]) for r in rows])


async def record_participant_activity(
    conn: asyncpg.Connection, participants: Sequence[Participant]
) -> None:
    """Activity through the HTTP API: every open connection of the participant is active."""
    if not participants:
        return
    rows = await conn.fetch(
        "UPDATE rtm.live_connections SET last_active_at = now(), idle_declared_at = NULL "
        "WHERE closed_at IS NULL AND (user_id = ANY($1::uuid[]) OR customer_id = ANY($2::uuid[])) "
        "RETURNING user_id, customer_id",
        [p.user_id for p in participants if p.user_id is not None],
        [p.customer_id for p in participants if p.customer_id is not None],
    )
    await _online(conn, [Participant(r["user_id"], r["customer_id"]) for r in rows])


async def close_connections(conn: asyncpg.Connection, connection_ids: Sequence[str]) -> None:
    """Connections gone: typing they reported ends now; presence follows after the grace."""
    if not connection_ids:
        return
    ids = list(connection_ids)
    await conn.execute(
        "UPDATE rtm.live_connections SET closed_at = now() "
        "WHERE id = ANY($1::text[]) AND closed_at IS NULL",
        ids,
    )
    await conn.execute(
        "DELETE FROM public.message_typing_indicators AS t USING rtm.typing_owners AS o "
        "WHERE o.indicator_id = t.id AND o.connection_id = ANY($1::text[])",
        ids,
    )


#: A typing write, as one simple-protocol query (so one round trip): PostgreSQL runs the
#: statements of one query as one transaction (the "implicit transaction block"), committed at
#: the end, rolled back whole on an error. Parameters need the extended protocol, one statement
#: per round trip, so the values are literals, which :func:`_literal` admits only when they
#: cannot be anything but what they are (uuids, and ids of safe characters).
_WRITE_TYPING = """\
SELECT set_config('role', {role}, true), set_config('request.jwt.claims', {claims}, true),
    set_config('synchronous_commit', 'off', true);
SELECT set_config('rtm.typing_indicator',
    (public.update_typing_indicator({conversation}::uuid, {user}::uuid, {customer}::uuid,
                                    {is_typing}, 5)).id::text,
    true);
SELECT set_config('role', 'none', true);
INSERT INTO rtm.typing_owners (indicator_id, connection_id)
VALUES (current_setting('rtm.typing_indicator')::uuid, {connection})
ON CONFLICT (indicator_id) DO UPDATE SET connection_id = excluded.connection_id"""

_SAFE = re.compile(r"[A-Za-z0-9:/_.@-]*")


def _literal(value: str | UUID | None) -> str:
    """A SQL literal for a uuid or a string of :data:`_SAFE` characters (no quote, no
    backslash: the same text whatever ``standard_conforming_strings`` says)."""
    if value is None:
        return "NULL"
    text = str(value)
    if not isinstance(value, UUID) and _SAFE.fullmatch(text) is None:
        raise ValueError(f"not a safe literal: {text!r}")
    return f"'{text}'"


async def write_typing(
    conn: asyncpg.Connection,
    caller: Caller,
    conversation_id: UUID,
    is_typing: bool,
    connection_id: str,
) -> None:
    """Write ``caller``'s typing indicator, owned by ``connection_id`` (call it outside a
    transaction).

    One round trip and one transaction, committed without waiting for its WAL to reach the
    disk (``synchronous_commit = off`` for this transaction only), for the typing latency
    (issue 16): a typing push used to take five round trips and wait for two flushes, the
    indicator's and then its owner row's. Why the asynchronous commit is safe:

    * a typing indicator is ephemeral (it expires within seconds, and its owning connection
      does not survive a crash of the database either), so losing the last few on a crash is
      harmless; PostgreSQL never loses part of a transaction, and never a synchronous commit
      written after it;
    * the change feed is untouched: its stamper commits synchronously, and its commit's WAL
      comes after the indicator's (it saw that transaction committed), so a position is handed
      out only for a change that is on disk, and the visibility order the stamper relies on is
      the same as with a synchronous commit (docs/changes.md);
    * the indicator is still written as the caller, under row-level security; only the owner
      row (which the caller's role may not write) is written after switching back to the
      session's role, in the same transaction.
    """
    claims = orjson.dumps(caller.claims()).decode()
    # The claims hold the role and uuids only; checked like any other literal all the same.
    if _SAFE.fullmatch(claims.translate(_JSON_PUNCTUATION)) is None:
        raise ValueError(f"not safe claims: {claims!r}")
    await conn.execute(
        _WRITE_TYPING.format(
            role=_literal(caller.role),
            claims=f"'{claims}'",
            conversation=_literal(conversation_id),
            user=_literal(caller.user_id),
            customer=_literal(caller.customer_id),
            is_typing="true" if is_typing else "false",
            connection=_literal(connection_id),
        )
    )


#: JSON's punctuation, removed before the claims are checked for unsafe characters.
_JSON_PUNCTUATION = str.maketrans("", "", '{}",')


async def settle(
    conn: asyncpg.Connection,
    *,
    now: datetime | None = None,
    away_after: float,
    grace: float,
    dead_after: float,
) -> int:
    """One round of the presence rules; ``now`` defaults to the database's clock."""
    changed: int = await conn.fetchval(
        "SELECT rtm.settle_presence(coalesce($1::timestamptz, now()), $2, $3, $4)",
        now,
        away_after,
        grace,
        dead_after,
    )
    return changed


async def _online(conn: asyncpg.Connection, participants: Sequence[Participant]) -> None:
    """Participants not yet online become online (an unchanged row writes nothing)."""
    users = sorted({p.user_id for p in participants if p.user_id is not None})
    customers = sorted({p.customer_id for p in participants if p.customer_id is not None})
    # Sorted ids: concurrent batches lock the presence rows in one order.
    if users:
        await conn.execute(
            "INSERT INTO public.user_presence AS p (user_id, status, last_seen_at) "
            "SELECT u, 'online', now() FROM unnest($1::uuid[]) AS u "
            "ON CONFLICT ON CONSTRAINT user_presence_user_id_key DO UPDATE "
            "SET status = 'online', last_seen_at = now() WHERE p.status <> 'online'",
            users,
        )
    if customers:
        await conn.execute(
            "INSERT INTO public.user_presence AS p (customer_id, status, last_seen_at) "
            "SELECT c, 'online', now() FROM unnest($1::uuid[]) AS c "
            "ON CONFLICT ON CONSTRAINT user_presence_customer_id_key DO UPDATE "
            "SET status = 'online', last_seen_at = now() WHERE p.status <> 'online'",
            customers,
        )
