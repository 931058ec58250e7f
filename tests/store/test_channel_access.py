"""What the policies on ``realtime.messages`` allow on a private channel, per extension.

``broadcast`` and ``presence`` rows are probed apart (Supabase's ``extension`` column): a caller
may read or write one and not the other, and a join needs a read of either.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from realtime_messaging.store.caller import Caller
from realtime_messaging.store.channel_access import NOTHING, ChannelAccess, channel_access


@pytest.fixture
async def topic(conn: asyncpg.Connection) -> AsyncIterator[str]:
    """A topic of its own, and the policies a test creates on it (dropped afterwards)."""
    name = f"access-{uuid.uuid4().hex[:8]}"
    yield name
    for (policy,) in await conn.fetch(
        "SELECT policyname FROM pg_policies WHERE schemaname = 'realtime' AND policyname LIKE $1",
        f"{name.replace('-', '_')}%",
    ):
        await conn.execute(f"DROP POLICY {policy} ON realtime.messages")


async def _policy(conn: asyncpg.Connection, topic: str, kind: str, sql: str) -> None:
    name = f"{topic.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
    await conn.execute(f"CREATE POLICY {name} ON realtime.messages FOR {kind} TO anon {sql}")


async def test_no_policy_allows_nothing(conn: asyncpg.Connection, topic: str) -> None:
    access = await channel_access(conn, Caller.anon(), topic)
    assert access == NOTHING and not access.joins


async def test_each_extension_is_read_and_written_apart(
    conn: asyncpg.Connection, topic: str
) -> None:
    mine = f"(SELECT realtime.topic()) = '{topic}'"
    await _policy(conn, topic, "SELECT", f"USING ({mine} AND extension = 'presence')")
    access = await channel_access(conn, Caller.anon(), topic)
    assert access == ChannelAccess(False, False, presence_read=True, presence_write=False)
    assert access.joins  # a presence read alone lets the caller join

    await _policy(conn, topic, "INSERT", f"WITH CHECK ({mine} AND extension = 'presence')")
    await _policy(conn, topic, "SELECT", f"USING ({mine} AND extension = 'broadcast')")
    access = await channel_access(conn, Caller.anon(), topic)
    assert access == ChannelAccess(True, False, presence_read=True, presence_write=True)


async def test_the_checks_store_nothing(conn: asyncpg.Connection, topic: str) -> None:
    mine = f"(SELECT realtime.topic()) = '{topic}'"
    await _policy(conn, topic, "INSERT", f"WITH CHECK ({mine})")
    access = await channel_access(conn, Caller.anon(), topic)
    assert (access.write, access.presence_write) == (True, True)
    assert (
        await conn.fetchval("SELECT count(*) FROM realtime.messages WHERE topic = $1", topic) == 0
    )
