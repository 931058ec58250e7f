"""One order for a conversation's messages: the commit order (issue 12, finding 8).

The change feed delivers a conversation's messages in commit order (each writer holds the
conversation's row lock until it commits); history and its cursors order them by
``(created_at, id)``. A ``created_at`` taken when the row is formed, before the writer waits for
that lock, let a writer held up in between commit after a writer that came later, with the
earlier time. Migration 0008 takes the time under the lock.

Each test has a database of its own, with a test trigger that holds writers up at that very
point: after their row is formed, before the conversation's lock (it runs before
``zz_lock_conversation``, as triggers run in name order).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
import pytest

from realtime_messaging.store.changefeed import Change, ChangeFeed
from tests.conftest import fresh_database

from .conftest import pg_error

GATE_KEY = 8008

#: With ``rtm_test.gate = on`` a writer waits for the advisory lock the test holds; with
#: ``rtm_test.jitter = s`` it dawdles up to s seconds. Both after its row is formed (created_at
#: defaulted) and before rtm.lock_conversation locks the conversation.
HOLD_UP = f"""
CREATE FUNCTION public.test_hold_up_before_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('rtm_test.gate', true) = 'on' THEN
        PERFORM pg_advisory_xact_lock_shared({GATE_KEY});
    END IF;
    PERFORM pg_sleep(random() * coalesce(nullif(current_setting('rtm_test.jitter', true), ''),
                                         '0')::float8);
    RETURN NEW;
END
$$;
CREATE TRIGGER a_test_hold_up_before_lock BEFORE INSERT ON public.customer_messages
    FOR EACH ROW EXECUTE FUNCTION public.test_hold_up_before_lock();
"""

INSERT = (
    "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
    "VALUES ($1, 'customer', $2, $3) RETURNING id"
)
HISTORY = "SELECT id FROM customer_messages WHERE conversation_id = $1 ORDER BY created_at, id"


@pytest.fixture
async def url(admin_url: str) -> AsyncIterator[str]:
    async with fresh_database(admin_url) as u:
        conn = await asyncpg.connect(u)
        try:
            await conn.execute(HOLD_UP)
        finally:
            await conn.close()
        yield u


async def _conversation(url: str) -> tuple[UUID, UUID]:
    """A customer and their conversation."""
    conn = await asyncpg.connect(url)
    try:
        customer: UUID = await conn.fetchval(
            "INSERT INTO customers (name) VALUES ('C') RETURNING id"
        )
        conversation: UUID = await conn.fetchval(
            "INSERT INTO conversations (customer_id, subject) VALUES ($1, 'Help') RETURNING id",
            customer,
        )
    finally:
        await conn.close()
    return conversation, customer


async def _delivered(url: str, conversation: UUID, count: int) -> list[UUID]:
    """The conversation's new messages in the order the change feed delivers them (nothing
    stamps this database before: the feed starts at position 0 and stamps them all)."""
    messages: list[UUID] = []
    done = asyncio.Event()

    def deliver(changes: Sequence[Change]) -> None:
        for change in changes:
            if change.table == "customer_messages" and change.op == "INSERT":
                assert change.record is not None
                if change.record["conversation_id"] == str(conversation):
                    messages.append(UUID(change.record["id"]))
        if len(messages) >= count:
            done.set()

    feed = ChangeFeed(url, deliver)
    await feed.start()
    try:
        async with asyncio.timeout(30):
            await done.wait()
    finally:
        await feed.stop()
    return messages


async def _history(url: str, conversation: UUID) -> list[UUID]:
    conn = await asyncpg.connect(url)
    try:
        return [r["id"] for r in await conn.fetch(HISTORY, conversation)]
    finally:
        await conn.close()


async def test_a_writer_held_up_before_the_lock_is_ordered_by_its_commit(url: str) -> None:
    conversation, customer = await _conversation(url)
    gate, held, other = [await asyncpg.connect(url) for _ in range(3)]
    try:
        await gate.execute("SELECT pg_advisory_lock($1)", GATE_KEY)
        await held.execute("SET rtm_test.gate = on")
        first = asyncio.create_task(held.fetchval(INSERT, conversation, customer, "formed first"))
        # Wait until its row is formed and it waits at the gate, before the conversation's lock.
        async with asyncio.timeout(10):
            while not await gate.fetchval(
                "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' "
                "AND NOT granted",
                held.get_server_pid(),
            ):
                await asyncio.sleep(0.01)
        second = await other.fetchval(INSERT, conversation, customer, "committed first")
        await gate.execute("SELECT pg_advisory_unlock($1)", GATE_KEY)
        async with asyncio.timeout(10):
            late = await first
    finally:
        for conn in (gate, held, other):
            await conn.close()
    assert await _delivered(url, conversation, 2) == [second, late]
    assert await _history(url, conversation) == [second, late]


async def test_racing_writers_see_history_in_the_order_the_feed_delivers(url: str) -> None:
    conversation, customer = await _conversation(url)
    writers, per_writer = 20, 30

    async def writer(n: int) -> None:
        conn = await asyncpg.connect(url)
        try:
            # Up to 2 ms between forming the row and locking the conversation.
            await conn.execute("SET rtm_test.jitter = '0.002'")
            for i in range(per_writer):
                await conn.execute(INSERT, conversation, customer, f"{n}.{i}")
        finally:
            await conn.close()

    await asyncio.gather(*(writer(n) for n in range(writers)))
    delivered = await _delivered(url, conversation, writers * per_writer)
    history = await _history(url, conversation)
    assert len(history) == writers * per_writer
    misplaced = sum(a != b for a, b in zip(history, delivered, strict=True))
    assert misplaced == 0, f"{misplaced} of {len(history)} messages at another index in history"


async def test_created_at_is_the_servers_strictly_increasing_and_immutable(url: str) -> None:
    conversation, customer = await _conversation(url)
    conn = await asyncpg.connect(url)
    try:
        times: list[datetime] = []
        # A time given by the writer is not taken (here one long past, as a clock set back).
        times.append(
            await conn.fetchval(
                "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content, "
                "created_at) VALUES ($1, 'customer', $2, 'x', '2000-01-01Z') RETURNING created_at",
                conversation,
                customer,
            )
        )
        assert times[0] > datetime.fromisoformat("2020-01-01T00:00:00+00:00")
        # Rows of one statement, given one time, still get a time each, in order.
        times.extend(
            r["created_at"]
            for r in await conn.fetch(
                "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content, "
                "created_at) SELECT $1, 'customer', $2, 'x' || g, now() "
                "FROM generate_series(1, 5) AS g RETURNING created_at",
                conversation,
                customer,
            )
        )
        # A message ahead of the clock (as one written before the clock stepped back; written
        # here with the triggers off): the next one comes after it all the same.
        ahead = await conn.fetchval("SELECT clock_timestamp() + interval '1 hour'")
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content, "
                "created_at) VALUES ($1, 'customer', $2, 'ahead', $3)",
                conversation,
                customer,
                ahead,
            )
        times.append(ahead)
        times.append(
            await conn.fetchval(
                "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
                "VALUES ($1, 'customer', $2, 'after') RETURNING created_at",
                conversation,
                customer,
            )
        )
        stored = [
            r["created_at"]
            for r in await conn.fetch(
                "SELECT created_at FROM customer_messages WHERE conversation_id = $1 "
                "ORDER BY created_at, id",
                conversation,
            )
        ]
        assert stored == times
        assert all(a < b for a, b in zip(stored, stored[1:], strict=False)), stored
        assert stored[-1] == ahead + timedelta(microseconds=1)
        # And it never changes.
        with pg_error("23514", constraint="customer_messages_immutable"):
            await conn.execute(
                "UPDATE customer_messages SET created_at = clock_timestamp() "
                "WHERE conversation_id = $1",
                conversation,
            )
        await conn.execute(
            "UPDATE customer_messages SET content = 'edited' WHERE conversation_id = $1",
            conversation,
        )
        assert [
            r["created_at"]
            for r in await conn.fetch(
                "SELECT created_at FROM customer_messages WHERE conversation_id = $1 "
                "ORDER BY created_at, id",
                conversation,
            )
        ] == stored
    finally:
        await conn.close()
