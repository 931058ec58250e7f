"""The migration runner on the shipped migrations: idempotent, safe to race, and tamper-evident."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from realtime_messaging.exceptions import MigrationError
from realtime_messaging.store.migrate import load_migrations, migrate

ScratchDatabase = Callable[[], Awaitable[str]]


def test_the_shipped_migrations_are_numbered_in_order() -> None:
    migrations = load_migrations()
    assert [(m.version, m.name) for m in migrations][:3] == [
        (1, "schema"),
        (2, "functions"),
        (3, "security"),
    ]


def test_the_migrations_use_only_core_postgresql() -> None:
    """The embedded server has no contrib modules, so no extension may be required."""
    for migration in load_migrations():
        text = migration.sql.lower()
        assert "create extension" not in text, migration.name
        for contrib in ("pgcrypto", "uuid-ossp", "uuid_generate", "gen_random_bytes", "pg_cron"):
            assert contrib not in text, (migration.name, contrib)


async def test_migrating_again_is_a_no_op(conn: asyncpg.Connection) -> None:
    before = await conn.fetch("SELECT * FROM rtm.schema_migrations ORDER BY version")
    assert await migrate(conn) == []
    after = await conn.fetch("SELECT * FROM rtm.schema_migrations ORDER BY version")
    assert after == before
    assert {r["version"]: r["checksum"] for r in after} == {
        m.version: m.checksum for m in load_migrations()
    }


async def test_concurrent_migrations_of_a_fresh_database_both_succeed(
    scratch_database: ScratchDatabase,
) -> None:
    url = await scratch_database()
    first, second = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        applied = await asyncio.gather(migrate(first), migrate(second))
    finally:
        await first.close()
        await second.close()
    versions = [[m.version for m in run] for run in applied]
    # The advisory lock lets one runner apply everything; the other then finds nothing to do.
    assert sorted(versions, key=len) == [[], [m.version for m in load_migrations()]]

    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM rtm.schema_migrations") == len(
            load_migrations()
        )
        assert await conn.fetchval("SELECT to_regclass('public.customer_messages')") is not None
    finally:
        await conn.close()


async def test_an_applied_migration_that_changed_is_reported(
    scratch_database: ScratchDatabase,
) -> None:
    url = await scratch_database()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute("UPDATE rtm.schema_migrations SET checksum = 'bogus' WHERE version = 2")
        with pytest.raises(MigrationError, match="0002_functions was changed"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_the_supabase_roles_exist(conn: asyncpg.Connection) -> None:
    roles = {
        r["rolname"]: r
        for r in await conn.fetch(
            "SELECT rolname, rolcanlogin, rolbypassrls FROM pg_roles "
            "WHERE rolname IN ('anon', 'authenticated', 'service_role')"
        )
    }
    assert set(roles) == {"anon", "authenticated", "service_role"}
    assert not any(r["rolcanlogin"] for r in roles.values())
    assert roles["service_role"]["rolbypassrls"]
    assert not roles["authenticated"]["rolbypassrls"]
    assert not roles["anon"]["rolbypassrls"]


async def test_truncating_messages_and_receipts_resets_the_counters(
    scratch_database: ScratchDatabase,
) -> None:
    """TRUNCATE fires no row triggers; the counters must not keep counting what is gone."""
    url = await scratch_database()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        customer = await conn.fetchval("INSERT INTO customers (name) VALUES ('c') RETURNING id")
        user = await conn.fetchval("INSERT INTO users (name) VALUES ('u') RETURNING id")
        conversation = await conn.fetchval(
            "INSERT INTO conversations (customer_id) VALUES ($1) RETURNING id", customer
        )
        message = await conn.fetchval(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'customer', $2, 'x') RETURNING id",
            conversation,
            customer,
        )
        await conn.execute("SELECT mark_message_as_read($1, $2, NULL)", message, user)
        assert await conn.fetchval("SELECT get_unread_message_count($1, NULL)", user) == 0

        await conn.execute("TRUNCATE message_read_receipts")
        assert await conn.fetchval("SELECT count(*) FROM rtm.reader_counters") == 0
        assert await conn.fetchval("SELECT count(*) FROM rtm.staff_read_counters") == 0
        assert await conn.fetchval("SELECT get_unread_message_count($1, NULL)", user) == 1

        await conn.execute("TRUNCATE customer_messages CASCADE")
        assert await conn.fetchval("SELECT count(*) FROM rtm.conversation_counters") == 0
        assert await conn.fetchval("SELECT get_unread_message_count($1, NULL)", user) == 0
    finally:
        await conn.close()


async def test_the_staff_read_counters_count_the_receipts_written_before_them(
    scratch_database: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 0012 fills rtm.staff_read_counters from the receipts already there."""
    from realtime_messaging.server.api.messaging import staff_unread_sql
    from realtime_messaging.store import migrate as runner

    from .conftest import NAIVE_STAFF_UNREAD_BY_CONVERSATION

    url = await scratch_database()
    conn = await asyncpg.connect(url)
    try:
        shipped = load_migrations()
        monkeypatch.setattr(
            runner, "load_migrations", lambda: [m for m in shipped if m.version < 12]
        )
        await migrate(conn)
        customer = await conn.fetchval("INSERT INTO customers (name) VALUES ('c') RETURNING id")
        users = [
            await conn.fetchval("INSERT INTO users (name) VALUES ($1) RETURNING id", name)
            for name in ("u1", "u2", "u3")
        ]
        conversations = [
            await conn.fetchval(
                "INSERT INTO conversations (customer_id) VALUES ($1) RETURNING id", customer
            )
            for _ in range(3)
        ]
        messages = await conn.fetch(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "SELECT c, 'customer', $2, 'm' FROM unnest($1::uuid[]) AS c, generate_series(1, 5) "
            "RETURNING id",
            conversations,
            customer,
        )
        ids = [r["id"] for r in messages]
        for n, user in enumerate(users[:2]):
            await conn.execute(
                "INSERT INTO message_read_receipts (message_id, read_by_user_id) "
                "SELECT m, $2 FROM unnest($1::uuid[]) AS m",
                ids[n::2],
                user,
            )

        monkeypatch.setattr(
            runner, "load_migrations", lambda: [m for m in shipped if m.version <= 12]
        )
        assert [m.version for m in await migrate(conn)] == [12]
        assert await conn.fetchval("SELECT sum(receipts) FROM rtm.staff_read_counters") == len(
            ids[0::2]
        ) + len(ids[1::2])
        for user in users:
            counted = await conn.fetch(staff_unread_sql(False), user)
            assert counted == await conn.fetch(NAIVE_STAFF_UNREAD_BY_CONVERSATION, user)
            assert sum(r["unread"] for r in counted) == await conn.fetchval(
                "SELECT get_unread_message_count($1, NULL)", user
            )
        # And from then on the triggers keep them.
        await conn.execute("DELETE FROM customer_messages WHERE id = $1", ids[0])
        await conn.execute("SELECT mark_message_as_read($1, $2, NULL)", ids[2], users[2])
        for user in users:
            counted = await conn.fetch(staff_unread_sql(False), user)
            assert counted == await conn.fetch(NAIVE_STAFF_UNREAD_BY_CONVERSATION, user)
    finally:
        await conn.close()
