"""``migrate`` on a database that is already up to date (every start of ``rtm serve``): one
query, no advisory lock, no DDL; anything pending or edited still goes the full way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from realtime_messaging.exceptions import MigrationError
from realtime_messaging.store import migrate as runner
from realtime_messaging.store.migrate import MIGRATION_LOCK_KEY, load_migrations, migrate

ScratchDatabase = Callable[[], Awaitable[str]]


class Queries:
    """The statements a connection sends, from asyncpg's query logger.

    asyncpg calls the logger with ``loop.call_soon``: leaving the block yields to the loop once,
    which runs every callback already scheduled (FIFO) before this task resumes; no timing."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.sent: list[str] = []

    def __call__(self, record: Any) -> None:
        self.sent.append(record.query)

    async def __aenter__(self) -> list[str]:
        self.conn.add_query_logger(self)
        return self.sent

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)
        self.conn.remove_query_logger(self)


async def test_an_up_to_date_database_is_answered_from_one_query(
    conn: asyncpg.Connection,
) -> None:
    async with Queries(conn) as sent:
        assert await migrate(conn) == []
    assert len(sent) == 1 and "rtm.schema_migrations" in sent[0], sent


async def test_an_up_to_date_database_does_not_wait_for_the_migration_lock(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """A restart beside a process that holds the lock (migrating, or stuck) starts at once."""
    async with pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            assert await asyncio.wait_for(migrate(conn), 5) == []
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def test_an_edited_migration_is_reported_without_the_lock(
    scratch_database: ScratchDatabase,
) -> None:
    url = await scratch_database()
    conn, holder = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute("UPDATE rtm.schema_migrations SET checksum = 'bogus' WHERE version = 3")
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        with pytest.raises(MigrationError, match="0003_security was changed"):
            await asyncio.wait_for(migrate(conn), 5)
    finally:
        await conn.close()
        await holder.close()


async def test_a_pending_migration_is_applied_under_the_lock(
    scratch_database: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await scratch_database()
    conn = await asyncpg.connect(url)
    try:
        shipped = load_migrations()
        monkeypatch.setattr(runner, "load_migrations", lambda: shipped[:-1])
        assert [m.version for m in await migrate(conn)] == [m.version for m in shipped[:-1]]
        monkeypatch.undo()
        async with Queries(conn) as sent:
            assert [m.version for m in await migrate(conn)] == [shipped[-1].version]
        assert "SELECT pg_advisory_lock($1)" in sent
        recorded = await conn.fetch("SELECT version, checksum FROM rtm.schema_migrations")
        assert {r["version"]: r["checksum"] for r in recorded} == {
            m.version: m.checksum for m in shipped
        }
        assert await migrate(conn) == []
    finally:
        await conn.close()


async def test_a_fresh_database_is_migrated(scratch_database: ScratchDatabase) -> None:
    """No rtm schema yet: the quick read fails and the full path creates everything."""
    conn = await asyncpg.connect(await scratch_database())
    try:
        assert [m.version for m in await migrate(conn)] == [m.version for m in load_migrations()]
        assert await conn.fetchval("SELECT to_regclass('public.customer_messages')") is not None
    finally:
        await conn.close()
