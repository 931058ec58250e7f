"""Typing expiry follows the indicators: the next round is due when the next one expires, so
steady typing is cleaned up a few rows at a time instead of in one burst per interval."""

from __future__ import annotations

import asyncio

import asyncpg

from realtime_messaging.server.maintenance import MIN_TYPING_PAUSE, Maintenance, typing_pause
from tests.conftest import Seed


def test_the_pause_is_until_the_next_expiry_within_bounds() -> None:
    assert typing_pause(None, 0.5) == 0.5  # nothing left to expire: the interval
    assert typing_pause(0.2, 0.5) == 0.2
    assert typing_pause(0.001, 0.5) == MIN_TYPING_PAUSE  # never a tight loop
    assert typing_pause(4.0, 0.5) == 0.5  # new indicators may come meanwhile


async def test_an_indicator_is_deleted_at_its_expiry_not_at_the_interval(
    pool: asyncpg.Pool, seed: Seed
) -> None:
    customer, _ = await seed.customer()
    conversation = await seed.conversation(customer)
    indicator = await pool.fetchval(
        "INSERT INTO message_typing_indicators (conversation_id, customer_id, expires_at) "
        "VALUES ($1, $2, now() + interval '0.4 seconds') RETURNING id",
        conversation,
        customer,
    )
    maintenance = Maintenance(pool, typing_interval=60.0)
    await maintenance.start()
    try:
        async with asyncio.timeout(5):  # far less than the interval
            while await pool.fetchval(
                "SELECT count(*) FROM message_typing_indicators WHERE id = $1", indicator
            ):
                await asyncio.sleep(0.02)
    finally:
        await maintenance.stop()
