"""Reading what channels missed: many customers at once equals one at a time."""

from __future__ import annotations

import random
import uuid
from typing import Any

import asyncpg
import pytest

from realtime_messaging.store.changefeed import (
    BATCH,
    History,
    Missed,
    read_broadcasts,
    read_missed,
    read_since,
)
from tests.conftest import RunningServer, Seed

from .test_db_broadcast import send
from .test_resume import INSERT, stamped_head


@pytest.mark.parametrize("page_size", [3, BATCH], ids=["pages-of-3", "whole"])
async def test_the_rejoins_of_one_turn_read_what_each_reading_alone_would(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool, page_size: int
) -> None:
    """Customers' changes, everything or some tables' (staff), only the bounds (no bindings)
    and each topic's broadcasts, for asks at random positions, in pages of 3 rows (some asks
    then read the rest on their own) or whole."""
    start = await stamped_head(pool)
    customers = [(await seed.customer())[0] for _ in range(3)]
    conversations = {c: await seed.conversation(c) for c in customers}
    topics = [f"room-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    rng = random.Random(11)
    for i in range(30):
        if rng.random() < 0.3:
            await send(pool, rng.choice(topics), {"n": i})
        else:
            who = rng.choice(customers)
            await pool.execute(INSERT, conversations[who], who, f"m{i}")
    head = await stamped_head(pool)
    asks = set()
    for _ in range(24):
        customer = rng.choice([*customers, None])
        tables = rng.choice([None, ("customer_messages",)]) if customer is None else None
        asks.add(
            Missed(
                rng.randint(start - 3, head + 1),
                customer,
                rng.choice(topics),
                rng.random() < 0.8,
                tables,
            )
        )
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        many = await read_missed(conn, list(asks), page_size=page_size)
        for ask in asks:
            history, broadcasts = many[ask]
            if ask.bindings:
                one = await read_since(conn, ask.position, customer_id=ask.customer)
            else:
                one = History([], (await read_since(conn, ask.position)).lost, history.head)
            assert (history.lost, history.head) == (one.lost, one.head)
            wanted = [c.pos for c in one.changes if ask.tables is None or c.table in ask.tables]
            assert [c.pos for c in history.changes] == wanted
            alone = await read_broadcasts(conn, ask.position, ask.topic, one.head)
            assert [c.pos for c in broadcasts] == [c.pos for c in alone]
    # Not vacuous: some asks missed more than a page of changes, and some broadcasts; some
    # staff asks of one table missed changes, where the same ask of every table missed more.
    assert any(len(many[a][0].changes) > 3 for a in asks)
    assert any(a.tables and a.bindings and many[a][0].changes for a in asks)
    assert any(many[a][1] for a in asks)


async def test_a_customers_ask_reads_the_presence_changes_of_the_staff_it_follows(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """Besides the customer's own changes, those of the staff named in the ask (and no other
    staff's), merged in feed order; more than the replay limit of them is history lost."""
    start = await stamped_head(pool)
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    followed, _ = await seed.staff()
    other, _ = await seed.staff()
    for i in range(4):
        await pool.execute(
            "SELECT update_user_presence($1, NULL, $2, '{}')", followed, ("away", "online")[i % 2]
        )
        await pool.execute("SELECT update_user_presence($1, NULL, 'away', '{}')", other)
        await pool.execute(INSERT, conv, customer, f"m{i}")
    head = await stamped_head(pool)
    ask = Missed(start, customer, "t", True, None, (str(followed),))
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        history, _ = (await read_missed(conn, [ask]))[ask]
        log = await read_since(conn, start)
        bounded, _ = (await read_missed(conn, [ask], replay_limit=5))[ask]
    wanted = [
        c.pos
        for c in log.changes
        if c.customer_id == customer
        or (c.table == "user_presence" and (c.record or {}).get("user_id") == str(followed))
    ]
    assert [c.pos for c in history.changes] == wanted and not history.lost
    assert history.head == head
    assert sum(c.table == "user_presence" and c.customer_id is None for c in history.changes) == 4
    assert bounded.lost and bounded.changes == []


class _WrittenToAfterTheProbes:
    """A real connection; right after its first query (the probes) more changes are committed
    and stamped, as a concurrent writer may between the probes and a page's follow-up read."""

    def __init__(self, conn: asyncpg.Connection, write: Any) -> None:
        self._conn = conn
        self._write = write
        self.written = False

    async def fetch(self, *args: Any) -> Any:
        rows = await self._conn.fetch(*args)
        if not self.written:
            self.written = True
            await self._write()
        return rows

    async def fetchrow(self, *args: Any) -> Any:
        return await self._conn.fetchrow(*args)


async def test_a_full_page_reads_the_rest_up_to_the_probes_head(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """A customer's page that fills is read on, up to the head the probes read, not to a later
    one: otherwise the channel's position would pass changes committed after that head which
    the replay did not read (a followed staff user's, a broadcast), and they would be skipped."""
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    followed, _ = await seed.staff()
    start = await stamped_head(pool)
    for i in range(5):
        await pool.execute(INSERT, conv, customer, f"m{i}")
    head = await stamped_head(pool)

    async def meanwhile() -> None:
        await pool.execute(INSERT, conv, customer, "later")
        await pool.execute("SELECT update_user_presence($1, NULL, 'away', '{}')", followed)
        await stamped_head(pool)

    ask = Missed(start, customer, "t", True, None, (str(followed),))
    async with pool.acquire() as conn:
        racing = _WrittenToAfterTheProbes(conn, meanwhile)
        history, _ = (await read_missed(racing, [ask], page_size=3))[ask]  # type: ignore[arg-type]
    assert racing.written and history.head == head
    assert [c.record["content"] for c in history.changes if c.record] == [f"m{i}" for i in range(5)]
