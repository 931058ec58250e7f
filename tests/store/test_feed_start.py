"""A feed knows where it starts once ``start()`` returns, before its server listens.

The server listens as soon as its application is built; its change feed used to read the log's
head later, in its own task. A client could join in between, and a change committed after the
join and stamped by another process (the stamper of a second server on the same database)
before that read lay behind the head the feed then found: delivered to no one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from uuid import UUID

import asyncpg
import pytest

from realtime_messaging.store.changefeed import Change, ChangeFeed
from tests.conftest import fresh_database


@pytest.fixture
async def url(admin_url: str) -> AsyncIterator[str]:
    async with fresh_database(admin_url) as u:
        yield u


async def test_a_change_stamped_elsewhere_right_after_start_is_delivered(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        customer: UUID = await conn.fetchval(
            "INSERT INTO customers (name) VALUES ('C') RETURNING id"
        )
        conversation: UUID = await conn.fetchval(
            "INSERT INTO conversations (customer_id, subject) VALUES ($1, 'Help') RETURNING id",
            customer,
        )
        stamper = ChangeFeed(url, lambda changes: None)
        await stamper.start()
        async with asyncio.timeout(10):
            await stamper.live.wait()
        assert stamper.stamper  # the first feed stamps for both
        seen: list[Change] = []
        arrived = asyncio.Event()

        def deliver(changes: Sequence[Change]) -> None:
            seen.extend(c for c in changes if c.table == "customer_messages")
            if seen:
                arrived.set()

        late = ChangeFeed(url, deliver)
        await late.start()
        try:
            assert late.position is not None  # known before anything else may happen
            # Committed and stamped by the other feed before this one's task first runs.
            message = await conn.fetchval(
                "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content)"
                " VALUES ($1, 'customer', $2, 'hello') RETURNING id",
                conversation,
                customer,
            )
            async with asyncio.timeout(10):
                while await conn.fetchval("SELECT count(*) FROM rtm.change_queue") > 0:
                    await asyncio.sleep(0.01)
                await arrived.wait()
            assert [c.record["id"] for c in seen] == [str(message)]
        finally:
            await late.stop()
            await stamper.stop()
    finally:
        await conn.close()
