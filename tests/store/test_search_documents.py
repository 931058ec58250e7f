"""rtm.message_search (migration 0018): the stored words of every live message, and search's two
ways to the newest matches.

The table must always equal what it replaces, ``to_tsvector('simple', content)`` of every message
that is not a tombstone, whatever wrote the messages (single and batch inserts, edits, deletes
as tombstones and for real, truncation, a migration over existing messages, a load with
triggers off and the repair after it). Search must answer the same whichever way the planner
takes to the newest matches: the text index, or the walk back in time.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from uuid import UUID

import asyncpg

from realtime_messaging.store.caller import Caller, as_caller
from realtime_messaging.store.migrate import load_migrations, migrate

ScratchDatabase = Callable[[], Awaitable[str]]

# What the table must hold, computed from the messages themselves.
EXPECTED = """
SELECT created_at, id, conversation_id, to_tsvector('simple'::regconfig, content)::text
FROM public.customer_messages WHERE deleted_at IS NULL ORDER BY created_at, id
"""
STORED = """
SELECT created_at, id, conversation_id, document::text
FROM rtm.message_search ORDER BY created_at, id
"""


async def assert_words_match(conn: asyncpg.Connection) -> int:
    expected = [tuple(r) for r in await conn.fetch(EXPECTED)]
    assert [tuple(r) for r in await conn.fetch(STORED)] == expected
    return len(expected)


async def desk(conn: asyncpg.Connection, conversations: int = 3) -> tuple[UUID, list[UUID]]:
    """A staff user and ``conversations`` conversations of one customer each."""
    user = await conn.fetchval(
        "INSERT INTO users (name, email) VALUES ('Agent', 'agent@test.invalid') RETURNING id"
    )
    ids = []
    for i in range(conversations):
        customer = await conn.fetchval(
            "INSERT INTO customers (name, email) VALUES ($1, $1 || '@test.invalid') RETURNING id",
            f"c{i}",
        )
        ids.append(
            await conn.fetchval(
                "INSERT INTO conversations (customer_id, subject, assigned_user_id) "
                "VALUES ($1, 'Help', $2) RETURNING id",
                customer,
                user,
            )
        )
    return user, ids


async def send(conn: asyncpg.Connection, conversation: UUID, user: UUID, *texts: str) -> list[UUID]:
    """Staff messages, all in one INSERT statement (one call of the statement trigger)."""
    rows = await conn.fetch(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "SELECT $1, 'staff', $2, t FROM unnest($3::text[]) WITH ORDINALITY AS x(t, n) "
        "ORDER BY n RETURNING id",
        conversation,
        user,
        list(texts),
    )
    return [r["id"] for r in rows]


async def test_the_words_follow_every_write(scratch_database: ScratchDatabase) -> None:
    conn = await asyncpg.connect(await scratch_database())
    try:
        await migrate(conn)
        user, (first, second, _) = await desk(conn)
        [single] = await send(conn, first, user, "Refund for order 1234")
        batch = await send(conn, second, user, "one apple", "two pears", "three plums", "four")
        assert await assert_words_match(conn) == 5

        # An edit replaces the words; an update that leaves content alone changes nothing.
        await conn.execute(
            "UPDATE customer_messages SET content = 'Refund sent' WHERE id = $1", single
        )
        await conn.execute(
            "UPDATE customer_messages SET attachments = '[]' WHERE id = $1", batch[0]
        )
        assert await assert_words_match(conn) == 5
        assert (
            await conn.fetchval(
                "SELECT document::text FROM rtm.message_search WHERE id = $1", single
            )
            == "'refund':1 'sent':2"
        )

        # A tombstone has no words; a message deleted for real neither.
        await conn.execute(
            "UPDATE customer_messages SET deleted_at = now() WHERE id = $1", batch[1]
        )
        await conn.execute("DELETE FROM customer_messages WHERE id = ANY ($1)", batch[2:])
        assert await assert_words_match(conn) == 2
        # A conversation deleted with its messages.
        await conn.execute("DELETE FROM conversations WHERE id = $1", second)
        assert await assert_words_match(conn) == 1

        await conn.execute("TRUNCATE customer_messages CASCADE")
        assert await conn.fetchval("SELECT count(*) FROM rtm.message_search") == 0

        # A load with triggers off leaves the words behind; the repair catches up.
        await conn.execute("SET session_replication_role = replica")
        await send(conn, first, user, "loaded quietly", "and again")
        await conn.execute("RESET session_replication_role")
        assert await conn.fetchval("SELECT count(*) FROM rtm.message_search") == 0
        assert await conn.fetchval("SELECT rtm.rebuild_message_search()") == 2
        assert await assert_words_match(conn) == 2
    finally:
        await conn.close()


async def test_the_migration_indexes_the_messages_already_there(
    scratch_database: ScratchDatabase,
) -> None:
    conn = await asyncpg.connect(await scratch_database())
    try:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS rtm")
        for migration in load_migrations():
            if migration.version >= 18:
                break
            async with conn.transaction():
                await conn.execute(migration.sql)
        user, (first, _, _) = await desk(conn)
        ids = await send(conn, first, user, "kept words", "a tombstone", "edited before")
        await conn.execute("UPDATE customer_messages SET deleted_at = now() WHERE id = $1", ids[1])
        await conn.execute(
            "UPDATE customer_messages SET content = 'edited after' WHERE id = $1", ids[2]
        )
        [m18] = [m for m in load_migrations() if m.version == 18]
        async with conn.transaction():
            await conn.execute(m18.sql)
        assert await assert_words_match(conn) == 2
    finally:
        await conn.close()


async def test_both_ways_to_the_newest_matches_agree(scratch_database: ScratchDatabase) -> None:
    """A frequent word and a rare one, each searched with the text index forbidden and with the
    walk back in time forbidden: the same newest candidates, ranked the same, as computed from
    the messages' own text."""
    url = await scratch_database()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        user, conversations = await desk(conn, conversations=20)
        rng = random.Random(7)
        vocabulary = ["common"] * 6 + ["word", "other", "thing", "more"]
        for conversation in conversations:
            texts = []
            for _ in range(100):
                words = [rng.choice(vocabulary) for _ in range(rng.randint(1, 8))]
                if rng.random() < 0.01:
                    words.append("rare")
                texts.append(" ".join(words))
            await send(conn, conversation, user, *texts)
        await conn.execute("ANALYZE")

        candidates, page = 60, 1000
        reference = """
            SELECT id, ts_rank(to_tsvector('simple'::regconfig, content), q) AS rank, created_at
            FROM (SELECT m.*, websearch_to_tsquery('simple', $1) AS q
                  FROM customer_messages AS m
                  WHERE to_tsvector('simple'::regconfig, m.content) @@ websearch_to_tsquery('simple', $1)
                  ORDER BY m.created_at DESC, m.id DESC LIMIT $2) AS w
            ORDER BY rank DESC, created_at DESC, id DESC
        """
        search = """
            SELECT id, rank, created_at FROM rtm.search_messages(
                websearch_to_tsquery('simple', $1), NULL, NULL, NULL, NULL, $2, $3)
        """
        ways = {
            "walk back in time": "SET LOCAL enable_bitmapscan = off",
            "text index": "SET LOCAL enable_indexscan = off; SET LOCAL enable_seqscan = off",
        }
        for text in ("common", "rare", "common word"):
            expected = [tuple(r) for r in await conn.fetch(reference, text, candidates)]
            assert len(expected) == (candidates if text != "rare" else len(expected)) > 0
            for way, settings in ways.items():
                async with as_caller(conn, Caller.staff(user)):
                    await conn.execute(settings)
                    found = [tuple(r) for r in await conn.fetch(search, text, page, candidates)]
                assert found == expected, (text, way)
    finally:
        await conn.close()
