"""Reading what channels missed: many customers at once equals one at a time."""

from __future__ import annotations

import random

import asyncpg

from realtime_messaging.store.changefeed import read_since, read_since_many
from tests.conftest import RunningServer, Seed

from .test_resume import INSERT, stamped_head


async def test_many_at_once_equals_one_at_a_time(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """(The running server stamps the log.)"""
    start = await stamped_head(pool)
    customers = [(await seed.customer())[0] for _ in range(4)]
    conversations = {c: await seed.conversation(c) for c in customers}
    rng = random.Random(7)
    for i in range(40):
        who = rng.choice(customers)
        await pool.execute(INSERT, conversations[who], who, f"m{i}")
    head = await stamped_head(pool)
    requests = [(rng.randint(start - 3, head + 1), rng.choice(customers)) for _ in range(12)]
    requests.append((head, customers[0]))
    # One snapshot for both ways of reading: the running server keeps stamping meanwhile.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        many = await read_since_many(conn, requests)
        for position, customer in requests:
            one = await read_since(conn, position, customer_id=customer)
            got = many[(position, customer)]
            assert (got.lost, got.head) == (one.lost, one.head)
            assert [c.pos for c in got.changes] == [c.pos for c in one.changes]
            assert all(c.customer_id == customer and c.pos > position for c in got.changes)
    # Not vacuous: some requests missed messages.
    assert any(many[r].changes for r in requests)
