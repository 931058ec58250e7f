"""Private channels authorized by row-level security on ``realtime.messages``, as Supabase does.

The policies on ``realtime.messages`` (migration ``0011_db_broadcast``) decide who may use a
private channel, for each of its two extensions (the row's ``extension``: ``broadcast`` or
``presence``): a SELECT policy lets the caller receive, an INSERT policy lets them send (a
broadcast) or track (a presence). Policies read the topic through ``realtime.topic()``. The
check, like Supabase's, runs in one transaction that is always rolled back, so nothing is stored:

1. a probe row for the topic is inserted per extension with the server's own rights (marked with
   the ``rtm.access_check`` setting, so that the change feed's trigger leaves them alone);
2. as the caller (role, claims) with ``realtime.topic`` set, the probes are selected: a visible
   one means *read* for its extension;
3. under a savepoint per extension, a row for the topic is inserted as the caller: accepted
   means *write* (a policy refusal is SQLSTATE 42501).
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
    """What the policies allow a caller on one topic: broadcast read and write, and presence
    read (its state and diffs) and write (track)."""

    read: bool
    write: bool
    presence_read: bool = False
    presence_write: bool = False

    @property
    def joins(self) -> bool:
        """A join needs one read, of either extension (Supabase's rule)."""
        return self.read or self.presence_read


NOTHING = ChannelAccess(False, False)
_EXTENSIONS = ("broadcast", "presence")


class _Rollback(Exception):
    pass


async def channel_access(conn: asyncpg.Connection, caller: Caller, topic: str) -> ChannelAccess:
    """What ``caller`` may do on the private channel ``topic`` (a sub-topic, without
    ``realtime:``). A policy that fails with an error allows nothing (logged)."""
    probes = {extension: uuid.uuid4() for extension in _EXTENSIONS}
    read: dict[str, bool] = {}
    write: dict[str, bool] = {}
    try:
        async with conn.transaction():
            # Probe rows are not queued for the feed (nor wait on the topic's senders).
            await conn.execute("SELECT set_config('rtm.access_check', 'on', true)")
            await conn.execute(
                "INSERT INTO realtime.messages (id, topic, extension) "
                "SELECT unnest($1::uuid[]), $2, unnest($3::text[])",
                list(probes.values()),
                topic,
                list(probes),
            )
            await conn.execute(
                "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), "
                "set_config('realtime.topic', $3, true)",
                caller.role,
                orjson.dumps(caller.claims()).decode(),
                topic,
            )
            visible = {
                row[0]
                for row in await conn.fetch(
                    "SELECT id FROM realtime.messages WHERE id = ANY($1::uuid[])",
                    list(probes.values()),
                )
            }
            for extension, probe in probes.items():
                read[extension] = probe in visible
                try:
                    async with conn.transaction():
                        await conn.execute(
                            "INSERT INTO realtime.messages (topic, extension) VALUES ($1, $2)",
                            topic,
                            extension,
                        )
                    write[extension] = True
                except asyncpg.InsufficientPrivilegeError:
                    write[extension] = False
            raise _Rollback
    except _Rollback:
        pass
    except asyncpg.PostgresError as exc:
        # Supabase answers an error in a policy as a refusal (after logging RlsPolicyError).
        log.warning("private channel policy on %r failed: %s", topic, exc)
        return NOTHING
    return ChannelAccess(read["broadcast"], write["broadcast"], read["presence"], write["presence"])
