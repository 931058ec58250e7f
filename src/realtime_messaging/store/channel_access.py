"""Private channels authorized by row-level security on ``realtime.messages``, as Supabase does.

The policies on ``realtime.messages`` (migration ``0011_db_broadcast``) decide who may use a
private channel: a SELECT policy lets the caller receive on a topic, an INSERT policy lets them
send. Policies read the topic through ``realtime.topic()``. The check, like Supabase's, runs in
one transaction that is always rolled back, so nothing is stored:

1. a probe row for the topic is inserted with the server's own rights (marked with the
   ``rtm.access_check`` setting, so that the change feed's trigger leaves it alone);
2. as the caller (role, claims) with ``realtime.topic`` set, the probe is selected: visible
   means *read*;
3. under a savepoint, a row for the topic is inserted as the caller: accepted means *write*
   (a policy refusal is SQLSTATE 42501).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import asyncpg
import orjson

from .caller import Caller

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChannelAccess:
    """What the policies allow a caller on one topic."""

    read: bool
    write: bool


class _Rollback(Exception):
    pass


async def channel_access(conn: asyncpg.Connection, caller: Caller, topic: str) -> ChannelAccess:
    """What ``caller`` may do on the private channel ``topic`` (a sub-topic, without
    ``realtime:``). A policy that fails with an error allows nothing (logged)."""
    probe = uuid.uuid4()
    read = write = False
    try:
        async with conn.transaction():
            # Probe rows are not queued for the feed (nor wait on the topic's senders).
            await conn.execute("SELECT set_config('rtm.access_check', 'on', true)")
            await conn.execute(
                "INSERT INTO realtime.messages (id, topic, extension) VALUES ($1, $2, 'broadcast')",
                probe,
                topic,
            )
            await conn.execute(
                "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), "
                "set_config('realtime.topic', $3, true)",
                caller.role,
                orjson.dumps(caller.claims()).decode(),
                topic,
            )
            read = bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM realtime.messages WHERE id = $1)", probe
                )
            )
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO realtime.messages (topic, extension) VALUES ($1, 'broadcast')",
                        topic,
                    )
                write = True
            except asyncpg.InsufficientPrivilegeError:
                write = False
            raise _Rollback
    except _Rollback:
        pass
    except asyncpg.PostgresError as exc:
        # Supabase answers an error in a policy as a refusal (after logging RlsPolicyError).
        log.warning("private channel policy on %r failed: %s", topic, exc)
        return ChannelAccess(False, False)
    return ChannelAccess(read, write)
