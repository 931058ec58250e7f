"""What the capture trigger queues (migration 0013, the current rtm.capture_change).

Each write runs in a transaction that is rolled back: its queue rows are read back by the
transaction itself (no stamper sees them), so the tests share the database with running feeds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from .conftest import Rows, Scene, pg_error

QUEUED = """
SELECT table_name, op, record, old_record, conversation_id, customer_id
FROM rtm.change_queue WHERE xmin = pg_current_xact_id()::xid ORDER BY id
"""


@asynccontextmanager
async def rolled_back(conn: asyncpg.Connection) -> AsyncIterator[None]:
    tx = conn.transaction()
    await tx.start()
    try:
        yield
    finally:
        await tx.rollback()


async def queued(conn: asyncpg.Connection, *tables: str) -> list[dict[str, Any]]:
    """This transaction's queue rows (of these tables: a write's triggers write other rows too),
    records decoded."""
    out = []
    for row in await conn.fetch(QUEUED):
        if tables and row["table_name"] not in tables:
            continue
        change = dict(row)
        for key in ("record", "old_record"):
            if change[key] is not None:
                change[key] = orjson.loads(change[key])
        out.append(change)
    return out


async def as_json(conn: asyncpg.Connection, table: str, row_id: UUID) -> dict[str, Any]:
    """The row as the feed must carry it: every column, as to_jsonb writes it."""
    text = await conn.fetchval(f"SELECT to_jsonb(t) FROM public.{table} AS t WHERE id = $1", row_id)
    decoded: dict[str, Any] = orjson.loads(text)
    return decoded


async def test_a_customers_message_carries_the_row_its_conversation_and_its_customer(
    conn: asyncpg.Connection, rows: Rows, scene: Scene
) -> None:
    async with rolled_back(conn):
        message = await rows.message(scene.conversation, "customer", scene.customer, "hi")
        [change] = await queued(conn, "customer_messages")
        assert change == {
            "table_name": "customer_messages",
            "op": "INSERT",
            "record": await as_json(conn, "customer_messages", message),
            "old_record": None,
            "conversation_id": scene.conversation,
            "customer_id": scene.customer,
        }


async def test_a_staff_message_carries_the_conversations_customer(
    conn: asyncpg.Connection, rows: Rows, scene: Scene
) -> None:
    async with rolled_back(conn):
        message = await rows.message(scene.other_conversation, "staff", scene.user, "hello")
        [change] = await queued(conn, "customer_messages")
        assert change["record"] == await as_json(conn, "customer_messages", message)
        assert (change["conversation_id"], change["customer_id"]) == (
            scene.other_conversation,
            scene.other_customer,
        )


async def test_a_message_is_queued_before_what_it_causes(
    conn: asyncpg.Connection, rows: Rows, scene: Scene
) -> None:
    """A message's own change comes first in the feed, then its delivery row and the end of its
    sender's typing (a client must know the message before its delivery status), for one
    message and for a batch."""
    async with rolled_back(conn):
        await conn.execute(
            "INSERT INTO message_typing_indicators (conversation_id, user_id, is_typing) "
            "VALUES ($1, $2, true)",
            scene.conversation,
            scene.user,
        )
        before = len(await queued(conn))
        message = await rows.message(scene.conversation, "staff", scene.user, "on it")
        caused = [(c["table_name"], c["op"]) for c in (await queued(conn))[before:]]
        assert caused == [
            ("customer_messages", "INSERT"),
            ("message_delivery_status", "INSERT"),
            ("message_typing_indicators", "UPDATE"),
        ]
        [delivery] = await queued(conn, "message_delivery_status")
        assert delivery["record"]["message_id"] == str(message)
    async with rolled_back(conn):
        await conn.execute(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "SELECT $1, 'staff', $2, 'batch ' || g FROM generate_series(1, 3) AS g",
            scene.conversation,
            scene.user,
        )
        order = [(c["table_name"], c["record"]) for c in await queued(conn)]
        seen: set[str] = set()
        for table, record in order:
            if table == "customer_messages":
                seen.add(record["id"])
            else:
                assert record["message_id"] in seen, order
        assert len(seen) == 3


async def test_a_message_from_someone_not_the_conversations_customer_queues_nothing(
    conn: asyncpg.Connection, rows: Rows, scene: Scene
) -> None:
    """The owner of a customer's message is taken from its sender, which the participant check
    at the end of the statement holds to the conversation's customer."""
    async with rolled_back(conn):
        with pg_error("23514", constraint="customer_messages_sender_is_participant"):
            await rows.message(scene.conversation, "customer", scene.other_customer, "psst")
    async with rolled_back(conn):
        assert await queued(conn) == []


async def test_an_update_carries_both_rows_and_a_delete_the_old_one(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    async with rolled_back(conn):
        before = await as_json(conn, "customer_messages", scene.staff_message)
        await conn.execute(
            "UPDATE customer_messages SET content = 'edited' WHERE id = $1", scene.staff_message
        )
        after = await as_json(conn, "customer_messages", scene.staff_message)
        await conn.execute("DELETE FROM customer_messages WHERE id = $1", scene.staff_message)
        changes = await queued(conn, "customer_messages")
    assert [(c["op"], c["record"], c["old_record"]) for c in changes] == [
        ("UPDATE", after, before),
        ("DELETE", None, after),
    ]
    assert {(c["conversation_id"], c["customer_id"]) for c in changes} == {
        (scene.conversation, scene.customer)
    }


async def test_a_conversations_changes_carry_its_own_customer(
    conn: asyncpg.Connection, rows: Rows, scene: Scene
) -> None:
    async with rolled_back(conn):
        conversation = await rows.conversation(scene.customer)
        await conn.execute("UPDATE conversations SET subject = 'new' WHERE id = $1", conversation)
        record = await as_json(conn, "conversations", conversation)
        await conn.execute("DELETE FROM conversations WHERE id = $1", conversation)
        changes = await queued(conn, "conversations")
    assert [(c["op"], c["customer_id"]) for c in changes] == [
        ("INSERT", scene.customer),
        ("UPDATE", scene.customer),
        ("DELETE", scene.customer),
    ]
    assert changes[1]["record"] == changes[2]["old_record"] == record
    assert {c["conversation_id"] for c in changes} == {conversation}


async def test_rows_deleted_with_their_conversation_go_to_staff_only(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    async with rolled_back(conn):
        await conn.execute("DELETE FROM conversations WHERE id = $1", scene.conversation)
        changes = await queued(conn)
    owners = {(c["table_name"], c["op"]): c["customer_id"] for c in changes}
    assert owners[("conversations", "DELETE")] == scene.customer
    assert owners[("customer_messages", "DELETE")] is None
    assert owners[("message_delivery_status", "DELETE")] is None


async def test_presence_goes_to_its_customer_or_to_staff_only(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    async with rolled_back(conn):
        await conn.execute(
            "INSERT INTO user_presence (customer_id, status) VALUES ($1, 'online')",
            scene.customer,
        )
        await conn.execute(
            "INSERT INTO user_presence (user_id, status) VALUES ($1, 'online')", scene.user
        )
        await conn.execute("DELETE FROM user_presence WHERE customer_id = $1", scene.customer)
        changes = await queued(conn, "user_presence")
    assert [(c["op"], c["customer_id"], c["conversation_id"]) for c in changes] == [
        ("INSERT", scene.customer, None),
        ("INSERT", None, None),
        ("DELETE", scene.customer, None),
    ]


async def test_receipts_typing_and_deliveries_carry_their_conversations_customer(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    async with rolled_back(conn):
        await conn.execute(
            "INSERT INTO message_read_receipts (message_id, read_by_user_id) VALUES ($1, $2)",
            scene.customer_message,
            scene.other_user,
        )
        await conn.execute(
            "INSERT INTO message_typing_indicators (conversation_id, user_id, is_typing) "
            "VALUES ($1, $2, true)",
            scene.other_conversation,
            scene.other_user,
        )
        await conn.execute(
            "UPDATE message_delivery_status SET status = 'delivered' WHERE message_id = $1",
            scene.staff_message,
        )
        changes = await queued(conn)
    owners = {(c["table_name"], c["conversation_id"], c["customer_id"]) for c in changes}
    assert owners == {
        ("message_read_receipts", scene.conversation, scene.customer),
        ("message_typing_indicators", scene.other_conversation, scene.other_customer),
        ("message_delivery_status", scene.conversation, scene.customer),
    }
