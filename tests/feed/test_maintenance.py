"""Housekeeping the server does by itself: typing expiry and delivery failures."""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg

from tests.conftest import RunningServer, Seed, running_server

from .conftest import is_change, subscribe


async def test_typing_stops_for_subscribers_within_a_second_of_expiry(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    _, staff_token = await seed.staff()
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    binding = {
        "event": "*",
        "schema": "public",
        "table": "message_typing_indicators",
        "filter": f"conversation_id=eq.{conv}",
    }
    sock, _ = await subscribe(server.ws_url, staff_token, "typing-expiry", [binding])
    try:
        await pool.execute("SELECT update_typing_indicator($1, NULL, $2, true, 1)", conv, customer)
        started = await sock.expect(is_change("message_typing_indicators", "INSERT"))
        expires_at = datetime.fromisoformat(started["payload"]["data"]["record"]["expires_at"])
        gone = await sock.expect(is_change("message_typing_indicators", "DELETE"), timeout=5)
        removed_at = datetime.fromisoformat(
            gone["payload"]["data"]["commit_timestamp"].replace("Z", "+00:00")
        )
        assert 0 <= (removed_at - expires_at).total_seconds() <= 1.0
    finally:
        await sock.close()


async def test_undelivered_messages_fail_after_the_deadline(
    database_url: str, seed: Seed, pool: asyncpg.Pool
) -> None:
    async with running_server(database_url, delivery_deadline_seconds=1.0):
        staff, _ = await seed.staff()
        customer, _ = await seed.customer()
        conv = await seed.conversation(customer)
        message = await pool.fetchval(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'staff', $2, 'are you there?') RETURNING id",
            conv,
            staff,
        )
        async with asyncio.timeout(10):
            while True:
                row = await pool.fetchrow(
                    "SELECT status, failed_reason FROM message_delivery_status WHERE message_id = $1",
                    message,
                )
                if row["status"] != "sent":
                    break
                await asyncio.sleep(0.1)
        assert row["status"] == "failed"
        assert row["failed_reason"] == "not delivered within 1 seconds"


async def test_deleting_a_staff_recipient_fails_their_pending_deliveries(
    seed: Seed, pool: asyncpg.Pool
) -> None:
    staff, _ = await seed.staff()
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    await pool.execute("UPDATE conversations SET assigned_user_id = $1 WHERE id = $2", staff, conv)
    message = await pool.fetchval(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "VALUES ($1, 'customer', $2, 'hello') RETURNING id",
        conv,
        customer,
    )
    assert (
        await pool.fetchval(
            "SELECT status FROM message_delivery_status WHERE message_id = $1", message
        )
        == "sent"
    )
    await pool.execute("DELETE FROM users WHERE id = $1", staff)
    row = await pool.fetchrow(
        "SELECT status, failed_reason FROM message_delivery_status WHERE message_id = $1", message
    )
    assert (row["status"], row["failed_reason"]) == ("failed", "recipient deleted")
