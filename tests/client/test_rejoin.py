"""``on_rejoin`` / ``RejoinEvent``: a subscription tells when it joined again after a reconnect,
and whether every change it missed was replayed."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from realtime_messaging import RealtimeMessagingManager
from realtime_messaging.client import (
    HistoryLostError,
    MessageEvent,
    RealtimeError,
    RejoinEvent,
    Subscription,
)
from tests.client.test_manager import FAST, insert_message, next_of
from tests.conftest import Seed, fresh_database, running_server


async def drained(pool: asyncpg.Pool) -> None:
    """Every committed change has been stamped into the log (by a running server)."""
    async with asyncio.timeout(10):
        while await pool.fetchval("SELECT count(*) FROM rtm.change_queue"):
            await asyncio.sleep(0.02)


async def until_rejoined(sub: Subscription, timeout: float = 15.0) -> list[Any]:
    """What the iterator yields up to and including the next RejoinEvent."""
    seen: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            try:
                async for item in sub:
                    seen.append(item)
                    if isinstance(item, RejoinEvent):
                        return seen
            except RealtimeError as exc:  # errors that need attention are raised in place
                seen.append(exc)


async def test_rejoin_after_a_restart_is_complete(
    database_url: str, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer_id, _ = await seed.customer()
    _, staff_jwt = await seed.staff()
    conversation = await seed.conversation(customer_id)
    rejoins: list[RejoinEvent] = []

    async def on_rejoin(event: RejoinEvent) -> None:  # async handlers are awaited
        rejoins.append(event)

    async with running_server(database_url) as first:
        port = urlsplit(first.http_url).port
        manager = RealtimeMessagingManager(
            first.http_url, first.anon_key, access_token=staff_jwt, on_error=lambda e: None, **FAST
        )
        sub = await manager.subscribe_to_conversation(
            conversation, on_rejoin=on_rejoin, on_error=lambda e: None
        )
        m0 = await insert_message(pool, conversation, customer_id, "before")
        await next_of(sub, MessageEvent, id=m0)
        assert rejoins == []  # not on the first join
    try:
        missed = await insert_message(pool, conversation, customer_id, "while down")
        async with running_server(database_url, port=port):
            seen = await until_rejoined(sub)
            # The replay comes first, then the rejoin.
            assert [e.id for e in seen if isinstance(e, MessageEvent)] == [missed]
            event = seen[-1]
            assert isinstance(event, RejoinEvent)
            assert event.complete is True
            assert event.topic == f"conversation:{conversation}"
            assert event.conversation_id == str(conversation)
            assert event.position is not None
            live = await insert_message(pool, conversation, customer_id, "live")
            await next_of(sub, MessageEvent, id=live)
            assert rejoins == [event]  # once per rejoin
            assert manager.socket.connections == 2
    finally:
        await manager.close()


async def test_rejoin_past_the_retention_is_incomplete(admin_url: str) -> None:
    settings = {"change_retention_seconds": 1.0}
    async with fresh_database(admin_url) as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            seed = Seed(pool)
            customer_id, portal = await seed.customer()
            conversation = await seed.conversation(customer_id)
            rejoins: list[RejoinEvent] = []
            errors: list[Exception] = []
            async with running_server(url, **settings) as first:
                port = urlsplit(first.http_url).port
                manager = RealtimeMessagingManager(
                    first.http_url, first.anon_key, access_token=portal, **FAST
                )
                sub = await manager.subscribe_to_customer_messages(
                    customer_id, on_rejoin=rejoins.append, on_error=errors.append
                )
                m0 = await insert_message(pool, conversation, customer_id, "before")
                await next_of(sub, MessageEvent, id=m0)
            try:
                await insert_message(pool, conversation, customer_id, "forgotten")
                # Another server (another port: the client cannot reach it) stamps the change
                # into the log and prunes it before the client is back.
                async with running_server(url, **settings):
                    await drained(pool)
                    async with asyncio.timeout(15):
                        while await pool.fetchval("SELECT count(*) FROM rtm.change_log"):
                            await asyncio.sleep(0.1)
                async with running_server(url, port=port, **settings):
                    seen = await until_rejoined(sub)
                    assert any(isinstance(e, HistoryLostError) for e in seen)
                    assert not any(isinstance(e, MessageEvent) for e in seen)
                    event = seen[-1]
                    assert isinstance(event, RejoinEvent) and event.complete is False
                    assert event.topic == f"customer:{customer_id}:messages"
                    assert event.conversation_id is None
                    live = await insert_message(pool, conversation, customer_id, "live")
                    await next_of(sub, MessageEvent, id=live)
                    assert rejoins == [event]
                    assert any(isinstance(e, HistoryLostError) for e in errors)
            finally:
                await manager.close()
        finally:
            await pool.close()
