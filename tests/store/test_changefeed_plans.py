"""The change feed's work on a fresh database (issue 16): plans and statistics that do not
depend on what the tables held when a session first planned its statements.

Each test has a database of its own, so that its feed is the stamper and nothing else writes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from realtime_messaging.store import changefeed
from realtime_messaging.store.changefeed import _READ, _STAMP, Change, ChangeFeed, connect_feed
from tests.conftest import fresh_database


@pytest.fixture
async def url(admin_url: str) -> AsyncIterator[str]:
    async with fresh_database(admin_url) as u:
        yield u


async def _queue_changes(conn: asyncpg.Connection, count: int) -> None:
    """``count`` customers with a conversation each: ``count`` changes queued."""
    await conn.execute(
        "WITH c AS (INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, $1) AS g "
        "RETURNING id) INSERT INTO conversations (customer_id) SELECT id FROM c",
        count,
    )


async def _buffers(conn: asyncpg.Connection, statement: str) -> int:
    """Shared buffers one run of ``statement`` touched (EXPLAIN ANALYZE, rolled back)."""
    tx = conn.transaction()
    await tx.start()
    try:
        text = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}")
    finally:
        await tx.rollback()
    plan: dict[str, Any] = json.loads(text)[0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


async def test_a_stamp_after_the_queue_was_analysed_empty_touches_each_row_a_few_times(
    url: str,
) -> None:
    """The statement has no parameters: a session plans it once. Planned with statistics that
    say the queue is empty (autovacuum's ANALYZE between two bursts), ``id IN (subquery)``
    became a nested loop that ran the subquery again for every queued row."""
    conn = await asyncpg.connect(url)
    try:
        await _queue_changes(conn, 1000)
        while await conn.fetch(_STAMP):
            pass
        await conn.execute("ANALYZE rtm.change_queue")
        await _queue_changes(conn, 1000)
        touched = await _buffers(conn, _STAMP)
    finally:
        await conn.close()
    # About 10 per row: the queue's and the log's heap and indexes. The nested loop: ~1,000.
    assert touched < 20 * 1000, touched


async def test_the_feeds_session_reads_the_log_by_its_key_whatever_it_held_when_planned(
    url: str,
) -> None:
    """A generic plan made while the log was empty must not scan the whole log once it is not."""
    feed = await connect_feed(url)
    try:
        await feed.execute("SET plan_cache_mode = force_generic_plan")
        plan = "\n".join(r[0] for r in await feed.fetch(f"EXPLAIN {_READ}", 0))
    finally:
        await feed.close()
    assert "Index Scan using change_log_pkey" in plan, plan
    assert "Seq Scan" not in plan and "Bitmap" not in plan, plan


class CountingConnection(asyncpg.Connection):  # type: ignore[misc]
    """Remembers the statements it was asked to fetch."""

    fetched: list[str]

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[asyncpg.Record]:
        self.fetched.append(query)
        rows: list[asyncpg.Record] = await super().fetch(query, *args, **kwargs)
        return rows


async def test_the_stamper_reads_the_log_only_to_catch_up(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It hands out every position itself, so once it has what the log held when it took over,
    it delivers what it stamps and reads nothing: not on each of its polls while awake."""
    sessions: list[CountingConnection] = []

    async def connect(database_url: str) -> asyncpg.Connection:
        conn: CountingConnection = await asyncpg.connect(
            database_url,
            server_settings=changefeed.FEED_SETTINGS,
            connection_class=CountingConnection,
        )
        conn.fetched = []
        sessions.append(conn)
        return conn

    monkeypatch.setattr(changefeed, "connect_feed", connect)
    # Awake long enough to poll many times even when the machine stalls for tens of ms.
    monkeypatch.setattr(changefeed, "LINGER", 0.5)
    writer = await asyncpg.connect(url)
    try:
        # Stamped by an earlier stamper, after this process's position: read when it takes over.
        await _queue_changes(writer, 3)
        assert len(await writer.fetch(_STAMP)) == 3
        got: list[Change] = []
        enough = asyncio.Event()

        def deliver(changes: Sequence[Change]) -> None:
            got.extend(changes)
            if len(got) >= 6:
                enough.set()

        feed = ChangeFeed(url, deliver, retention_seconds=3600)
        feed.position = 0
        await feed.start()
        try:
            async with asyncio.timeout(20):
                await feed.live.wait()
                while not (feed.stamper and feed.position == 3):
                    await asyncio.sleep(0.005)
                await _queue_changes(writer, 3)
                await enough.wait()
                # until it has polled awake and gone to sleep again
                while await writer.fetchval("SELECT stamper_awake FROM rtm.change_feed_state"):
                    await asyncio.sleep(0.005)
        finally:
            await feed.stop()
    finally:
        await writer.close()
    assert [c.pos for c in got] == [1, 2, 3, 4, 5, 6]
    [session] = sessions
    stamps = session.fetched.count(_STAMP)
    assert stamps > 3, stamps  # it did poll while awake
    assert session.fetched.count(_READ) == 1, session.fetched  # the catch-up only


async def test_the_stamper_analyses_a_table_that_outgrew_its_statistics(url: str) -> None:
    """Until then the planner goes by what the table held at its last ANALYZE, or with no
    statistics at all: on a fresh database, for up to a minute (autovacuum's round)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER TABLE customers SET (autovacuum_enabled = false)")
        await conn.execute(
            "INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 2000) AS g"
        )
        assert (
            await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'customers'::regclass")
            < 0
        )
        feed = ChangeFeed(url, lambda changes: None)
        await feed.start()
        try:
            async with asyncio.timeout(30):
                while (
                    await conn.fetchval(
                        "SELECT reltuples FROM pg_class WHERE oid = 'customers'::regclass"
                    )
                    < 2000
                ):
                    await asyncio.sleep(0.05)
        finally:
            await feed.stop()
        # The session that analyses is the feed's, and it ends with it (its backend exits a
        # moment after the connection closed).
        async with asyncio.timeout(10):
            while await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                changefeed.STATISTICS_APPLICATION_NAME,
            ):
                await asyncio.sleep(0.05)
    finally:
        await conn.close()
