"""Rules the database enforces by itself, whoever writes: constraints and triggers.

Every test writes as the owner (no row-level security), so only the schema stands between the
write and the table. Errors are checked by SQLSTATE and constraint name, which is the contract
docs/database.md promises.
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest

from .conftest import Rows, Scene, pg_error

CHECK, UNIQUE, FOREIGN_KEY = "23514", "23505", "23503"

# The columns of the original design's CREATE TABLE statements, with their types.
DOCUMENTED_COLUMNS = {
    "message_read_receipts": {
        "id": "uuid",
        "message_id": "uuid",
        "read_by_user_id": "uuid",
        "read_by_customer_id": "uuid",
        "read_at": "timestamp with time zone",
    },
    "message_typing_indicators": {
        "id": "uuid",
        "conversation_id": "uuid",
        "customer_id": "uuid",
        "user_id": "uuid",
        "is_typing": "boolean",
        "started_at": "timestamp with time zone",
        "expires_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
    },
    "user_presence": {
        "id": "uuid",
        "user_id": "uuid",
        "customer_id": "uuid",
        "status": "text",
        "last_seen_at": "timestamp with time zone",
        "metadata": "jsonb",
    },
    "message_delivery_status": {
        "id": "uuid",
        "message_id": "uuid",
        "status": "text",
        "recipient_type": "text",
        "recipient_id": "uuid",
        "delivered_at": "timestamp with time zone",
        "read_at": "timestamp with time zone",
        "failed_reason": "text",
    },
    "customer_messages": {
        "id": "uuid",
        "conversation_id": "uuid",
        "sender_type": "text",
        "sender_id": "uuid",
        "content": "text",
        "attachments": "jsonb",
        "client_message_id": "text",
        "created_at": "timestamp with time zone",
    },
    "conversations": {
        "id": "uuid",
        "customer_id": "uuid",
        "subject": "text",
        "status": "text",
        "assigned_user_id": "uuid",
        "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
    },
    "portal_tokens": {
        "id": "uuid",
        "token_hash": "text",
        "customer_id": "uuid",
        "expires_at": "timestamp with time zone",
        "revoked_at": "timestamp with time zone",
        "created_at": "timestamp with time zone",
        "last_used_at": "timestamp with time zone",
    },
}


@pytest.mark.parametrize("table", sorted(DOCUMENTED_COLUMNS))
async def test_documented_columns_exist_with_their_types(
    conn: asyncpg.Connection, table: str
) -> None:
    columns = {
        r["column_name"]: r["data_type"]
        for r in await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = $1",
            table,
        )
    }
    for column, data_type in DOCUMENTED_COLUMNS[table].items():
        assert columns.get(column) == data_type, (table, column)


async def test_ids_default_to_random_uuids(conn: asyncpg.Connection) -> None:
    defaults = await conn.fetch(
        "SELECT table_name, column_default FROM information_schema.columns "
        "WHERE table_schema = 'public' AND column_name = 'id'"
    )
    assert len(defaults) >= 9
    assert all(r["column_default"] == "gen_random_uuid()" for r in defaults), defaults


# Conversations ----------------------------------------------------------------------------------


async def test_a_conversations_customer_never_changes(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="conversations_customer_id_immutable"):
        await rows.conn.execute(
            "UPDATE conversations SET customer_id = $2 WHERE id = $1",
            scene.conversation,
            scene.other_customer,
        )
    # Other columns may change, and updated_at follows.
    before = await rows.conn.fetchval(
        "SELECT updated_at FROM conversations WHERE id = $1", scene.conversation
    )
    after = await rows.conn.fetchval(
        "UPDATE conversations SET status = 'closed' WHERE id = $1 RETURNING updated_at",
        scene.conversation,
    )
    assert after > before


async def test_conversation_status_is_checked(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="conversations_status_check"):
        await rows.conn.execute(
            "UPDATE conversations SET status = 'lost' WHERE id = $1", scene.conversation
        )


async def test_a_conversation_needs_an_existing_customer(rows: Rows) -> None:
    with pg_error(FOREIGN_KEY, constraint="conversations_customer_id_fkey"):
        await rows.conversation(uuid4())
    with pg_error("23502"):
        await rows.conn.execute("INSERT INTO conversations (subject) VALUES ('x')")


async def test_deleting_the_assigned_user_unassigns(rows: Rows) -> None:
    customer, user = await rows.customer(), await rows.user()
    conversation = await rows.conversation(customer, user)
    await rows.conn.execute("DELETE FROM users WHERE id = $1", user)
    assert (
        await rows.conn.fetchval(
            "SELECT assigned_user_id FROM conversations WHERE id = $1", conversation
        )
        is None
    )


async def test_deleting_a_customer_deletes_everything_of_theirs(rows: Rows, scene: Scene) -> None:
    await rows.conn.execute(
        "SELECT mark_message_as_read($1, NULL, $2)", scene.staff_message, scene.customer
    )
    await rows.conn.execute(
        "SELECT update_typing_indicator($1, NULL, $2, true)", scene.conversation, scene.customer
    )
    await rows.conn.execute("SELECT update_user_presence(NULL, $1, 'online')", scene.customer)
    await rows.conn.execute(
        "INSERT INTO portal_tokens (token_hash, customer_id, expires_at) "
        "VALUES ($1, $2, now() + interval '1 hour')",
        uuid4().hex,
        scene.customer,
    )
    await rows.conn.execute("DELETE FROM customers WHERE id = $1", scene.customer)
    for table, column in (
        ("conversations", "customer_id"),
        ("message_read_receipts", "read_by_customer_id"),
        ("message_typing_indicators", "customer_id"),
        ("user_presence", "customer_id"),
        ("portal_tokens", "customer_id"),
        ("rtm.reader_counters", "customer_id"),
        ("rtm.conversation_counters", "customer_id"),
    ):
        count = await rows.conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE {column} = $1", scene.customer
        )
        assert count == 0, table
    assert (
        await rows.conn.fetchval(
            "SELECT count(*) FROM customer_messages WHERE conversation_id = $1", scene.conversation
        )
        == 0
    )


# Messages ---------------------------------------------------------------------------------------


async def test_a_customer_sends_only_in_their_own_conversation(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="customer_messages_sender_is_participant"):
        await rows.message(scene.other_conversation, "customer", scene.customer)
    with pg_error(CHECK, constraint="customer_messages_sender_is_participant"):
        await rows.message(scene.conversation, "customer", scene.user)  # a user is no customer


async def test_a_staff_sender_is_an_existing_user(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="customer_messages_sender_is_participant"):
        await rows.message(scene.conversation, "staff", uuid4())
    with pg_error(CHECK, constraint="customer_messages_sender_is_participant"):
        await rows.message(scene.conversation, "staff", scene.customer)
    # Any staff user may write in any conversation, assigned or not.
    await rows.message(scene.conversation, "staff", scene.other_user)


async def test_one_bad_sender_rejects_the_whole_statement(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="customer_messages_sender_is_participant"):
        await rows.conn.execute(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'customer', $2, 'fine'), ($1, 'customer', $3, 'not fine')",
            scene.conversation,
            scene.customer,
            scene.other_customer,
        )
    assert (
        await rows.conn.fetchval(
            "SELECT count(*) FROM customer_messages WHERE content = 'fine' "
            "AND conversation_id = $1",
            scene.conversation,
        )
        == 0
    )


async def test_message_sender_type_and_content_are_checked(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="customer_messages_sender_type_check"):
        await rows.message(scene.conversation, "bot", scene.user)
    with pg_error("23502"):
        await rows.conn.execute(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'staff', $2, NULL)",
            scene.conversation,
            scene.user,
        )
    with pg_error(FOREIGN_KEY, constraint="customer_messages_conversation_id_fkey"):
        await rows.message(uuid4(), "staff", scene.user)


async def test_attachments_default_to_an_empty_list_and_must_be_a_list(
    rows: Rows, scene: Scene
) -> None:
    attachments = await rows.conn.fetchval(
        "SELECT attachments FROM customer_messages WHERE id = $1", scene.customer_message
    )
    assert json.loads(attachments) == []
    with pg_error(CHECK, constraint="customer_messages_attachments_check"):
        await rows.conn.execute(
            "UPDATE customer_messages SET attachments = '{}' WHERE id = $1", scene.customer_message
        )


async def test_where_who_and_when_of_a_message_never_change(rows: Rows, scene: Scene) -> None:
    for assignment, value in (
        ("conversation_id = $2", scene.other_conversation),
        ("sender_id = $2", scene.other_user),
        ("created_at = $2", None),
        ("client_message_id = $2", "again"),
    ):
        with pg_error(CHECK, constraint="customer_messages_immutable"):
            await rows.conn.execute(
                f"UPDATE customer_messages SET {assignment} WHERE id = $1",
                scene.staff_message,
                value,
            )
    with pg_error(CHECK, constraint="customer_messages_immutable"):
        await rows.conn.execute(
            "UPDATE customer_messages SET sender_type = 'customer', sender_id = $2 WHERE id = $1",
            scene.staff_message,
            scene.customer,
        )
    # Content may be edited.
    await rows.conn.execute(
        "UPDATE customer_messages SET content = 'edited', attachments = '[1]' WHERE id = $1",
        scene.staff_message,
    )


async def test_client_message_ids_are_unique_per_sender(rows: Rows, scene: Scene) -> None:
    insert = (
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content, "
        "client_message_id) VALUES ($1, $2, $3, 'x', $4)"
    )
    client_id = f"client-{uuid4()}"
    await rows.conn.execute(insert, scene.conversation, "customer", scene.customer, client_id)
    with pg_error(UNIQUE, constraint="customer_messages_client_message_id_key"):
        await rows.conn.execute(insert, scene.conversation, "customer", scene.customer, client_id)
    # Another sender may use the same client id; messages without one never collide.
    await rows.conn.execute(insert, scene.conversation, "staff", scene.user, client_id)
    await rows.conn.execute(insert, scene.conversation, "staff", scene.user, None)
    await rows.conn.execute(insert, scene.conversation, "staff", scene.user, None)
    with pg_error(CHECK, constraint="customer_messages_client_message_id_check"):
        await rows.conn.execute(insert, scene.conversation, "staff", scene.user, "")


async def test_messages_written_in_one_transaction_keep_their_order(
    rows: Rows, scene: Scene
) -> None:
    async with rows.conn.transaction():
        first = await rows.message(scene.conversation, "staff", scene.user, "1")
        second = await rows.message(scene.conversation, "staff", scene.user, "2")
    times = await rows.conn.fetch(
        "SELECT id, created_at FROM customer_messages WHERE id = ANY($1) ORDER BY created_at",
        [first, second],
    )
    assert [r["id"] for r in times] == [first, second]
    assert times[0]["created_at"] < times[1]["created_at"]


async def test_deleting_a_conversation_deletes_its_messages(rows: Rows, scene: Scene) -> None:
    await rows.conn.execute("DELETE FROM conversations WHERE id = $1", scene.conversation)
    for table in ("customer_messages", "message_delivery_status", "message_read_receipts"):
        assert (
            await rows.conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE conversation_id = $1", scene.conversation
            )
            == 0
        ), table


async def test_sending_stops_the_senders_typing(rows: Rows, scene: Scene) -> None:
    for user_id, customer_id in ((scene.user, None), (None, scene.customer)):
        await rows.conn.execute(
            "SELECT update_typing_indicator($1, $2, $3, true)",
            scene.conversation,
            user_id,
            customer_id,
        )
    await rows.message(scene.conversation, "customer", scene.customer)
    typing = {
        (r["user_id"], r["customer_id"]): r["is_typing"]
        for r in await rows.conn.fetch(
            "SELECT user_id, customer_id, is_typing FROM message_typing_indicators "
            "WHERE conversation_id = $1",
            scene.conversation,
        )
    }
    # The sender's row stops at once (is_typing false, expired now), so a server's sweeper on
    # this shared database may already have deleted it: either way the sender is not typing.
    assert typing.get((None, scene.customer), False) is False
    assert typing[(scene.user, None)] is True


# Read receipts ----------------------------------------------------------------------------------

INSERT_RECEIPT = (
    "INSERT INTO message_read_receipts (message_id, read_by_user_id, read_by_customer_id) "
    "VALUES ($1, $2, $3) RETURNING *"
)


async def test_a_receipt_has_exactly_one_reader(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="message_read_receipts_one_reader"):
        await rows.conn.execute(INSERT_RECEIPT, scene.staff_message, scene.user, scene.customer)
    with pg_error(CHECK, constraint="message_read_receipts_one_reader"):
        await rows.conn.execute(INSERT_RECEIPT, scene.staff_message, None, None)


async def test_one_receipt_per_message_and_staff_reader(rows: Rows, scene: Scene) -> None:
    await rows.conn.execute(INSERT_RECEIPT, scene.customer_message, scene.user, None)
    with pg_error(UNIQUE, constraint="unique_message_reader"):
        await rows.conn.execute(INSERT_RECEIPT, scene.customer_message, scene.user, None)
    # Another reader of the same message is another receipt.
    await rows.conn.execute(INSERT_RECEIPT, scene.customer_message, scene.other_user, None)


async def test_one_receipt_per_message_and_customer_reader(rows: Rows, scene: Scene) -> None:
    await rows.conn.execute(INSERT_RECEIPT, scene.staff_message, None, scene.customer)
    with pg_error(UNIQUE, constraint="unique_message_reader"):
        await rows.conn.execute(INSERT_RECEIPT, scene.staff_message, None, scene.customer)


async def test_receipts_are_by_the_other_side(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="message_read_receipts_reader_is_recipient"):
        await rows.conn.execute(INSERT_RECEIPT, scene.customer_message, None, scene.customer)
    with pg_error(CHECK, constraint="message_read_receipts_reader_is_recipient"):
        await rows.conn.execute(INSERT_RECEIPT, scene.staff_message, scene.other_user, None)


async def test_a_customer_reads_only_in_their_own_conversations(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="message_read_receipts_reader_is_participant"):
        await rows.conn.execute(INSERT_RECEIPT, scene.other_staff_message, None, scene.customer)


async def test_a_receipt_of_a_missing_message_names_the_foreign_key(rows: Rows) -> None:
    user = await rows.user()
    with pg_error(FOREIGN_KEY, constraint="message_read_receipts_message_id_fkey"):
        await rows.conn.execute(INSERT_RECEIPT, uuid4(), user, None)
    with pg_error(FOREIGN_KEY, constraint="message_read_receipts_read_by_user_id_fkey"):
        customer = await rows.customer()
        conversation = await rows.conversation(customer)
        message = await rows.message(conversation, "customer", customer)
        await rows.conn.execute(INSERT_RECEIPT, message, uuid4(), None)


async def test_a_receipt_copies_conversation_and_sender_side_from_its_message(
    rows: Rows, scene: Scene
) -> None:
    receipt = await rows.conn.fetchrow(
        "INSERT INTO message_read_receipts (message_id, read_by_user_id, conversation_id, "
        "message_sender_type) VALUES ($1, $2, $3, 'staff') RETURNING *",
        scene.customer_message,
        scene.user,
        scene.other_conversation,
    )
    assert receipt["conversation_id"] == scene.conversation
    assert receipt["message_sender_type"] == "customer"


async def test_the_message_and_reader_of_a_receipt_never_change(rows: Rows, scene: Scene) -> None:
    receipt = await rows.conn.fetchrow(INSERT_RECEIPT, scene.customer_message, scene.user, None)
    with pg_error(CHECK, constraint="message_read_receipts_immutable"):
        await rows.conn.execute(
            "UPDATE message_read_receipts SET read_by_user_id = $2 WHERE id = $1",
            receipt["id"],
            scene.other_user,
        )
    await rows.conn.execute(
        "UPDATE message_read_receipts SET read_at = read_at - interval '1 minute' WHERE id = $1",
        receipt["id"],
    )


@pytest.mark.parametrize("deleted", ["message", "user", "customer", "conversation"])
async def test_receipts_cascade(rows: Rows, scene: Scene, deleted: str) -> None:
    staff_read = await rows.conn.fetchrow(INSERT_RECEIPT, scene.customer_message, scene.user, None)
    customer_read = await rows.conn.fetchrow(
        INSERT_RECEIPT, scene.staff_message, None, scene.customer
    )
    statement, argument, gone = {
        "message": ("DELETE FROM customer_messages WHERE id = $1", scene.customer_message, 1),
        "user": ("DELETE FROM users WHERE id = $1", scene.user, 1),
        "customer": ("DELETE FROM customers WHERE id = $1", scene.customer, 2),
        "conversation": ("DELETE FROM conversations WHERE id = $1", scene.conversation, 2),
    }[deleted]
    await rows.conn.execute(statement, argument)
    left = await rows.conn.fetchval(
        "SELECT count(*) FROM message_read_receipts WHERE id = ANY($1)",
        [staff_read["id"], customer_read["id"]],
    )
    assert left == 2 - gone


# Typing indicators ------------------------------------------------------------------------------

INSERT_TYPING = (
    "INSERT INTO message_typing_indicators (conversation_id, user_id, customer_id) "
    "VALUES ($1, $2, $3) RETURNING *"
)


async def test_typing_has_exactly_one_participant(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="message_typing_indicators_one_participant"):
        await rows.conn.execute(INSERT_TYPING, scene.conversation, scene.user, scene.customer)
    with pg_error(CHECK, constraint="message_typing_indicators_one_participant"):
        await rows.conn.execute(INSERT_TYPING, scene.conversation, None, None)


async def test_one_typing_row_per_conversation_and_participant(rows: Rows, scene: Scene) -> None:
    for user_id, customer_id in ((scene.user, None), (None, scene.customer)):
        await rows.conn.execute(INSERT_TYPING, scene.conversation, user_id, customer_id)
        with pg_error(UNIQUE, constraint="message_typing_indicators_one_per_participant"):
            await rows.conn.execute(INSERT_TYPING, scene.conversation, user_id, customer_id)
    # The same staff user may type in another conversation.
    await rows.conn.execute(INSERT_TYPING, scene.other_conversation, scene.user, None)


async def test_typing_expires_five_seconds_after_it_starts_by_default(
    rows: Rows, scene: Scene
) -> None:
    async with rows.conn.transaction():
        row = await rows.conn.fetchrow(INSERT_TYPING, scene.conversation, scene.user, None)
        now = await rows.conn.fetchval("SELECT now()")
    assert row["is_typing"] is True
    assert row["expires_at"] - now == timedelta(seconds=5)
    assert row["started_at"] == now


async def test_a_customer_types_only_in_their_own_conversation(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="message_typing_indicators_participant"):
        await rows.conn.execute(INSERT_TYPING, scene.other_conversation, None, scene.customer)
    with pg_error(FOREIGN_KEY, constraint="message_typing_indicators_conversation_id_fkey"):
        await rows.conn.execute(INSERT_TYPING, uuid4(), scene.user, None)


async def test_the_place_and_participant_of_typing_never_change(rows: Rows, scene: Scene) -> None:
    row = await rows.conn.fetchrow(INSERT_TYPING, scene.conversation, scene.user, None)
    with pg_error(CHECK, constraint="message_typing_indicators_immutable"):
        await rows.conn.execute(
            "UPDATE message_typing_indicators SET conversation_id = $2 WHERE id = $1",
            row["id"],
            scene.other_conversation,
        )


async def test_typing_rows_go_with_their_conversation(rows: Rows, scene: Scene) -> None:
    row = await rows.conn.fetchrow(INSERT_TYPING, scene.conversation, scene.user, None)
    await rows.conn.execute("DELETE FROM conversations WHERE id = $1", scene.conversation)
    assert (
        await rows.conn.fetchval(
            "SELECT count(*) FROM message_typing_indicators WHERE id = $1", row["id"]
        )
        == 0
    )


async def test_expired_typing_has_an_index(conn: asyncpg.Connection) -> None:
    definitions = await conn.fetch(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'message_typing_indicators'"
    )
    assert any("(expires_at)" in r["indexdef"] for r in definitions)


# Presence ---------------------------------------------------------------------------------------


async def test_presence_is_of_exactly_one_user_or_customer(rows: Rows, scene: Scene) -> None:
    insert = "INSERT INTO user_presence (user_id, customer_id, status) VALUES ($1, $2, 'online')"
    with pg_error(CHECK, constraint="user_presence_one_subject"):
        await rows.conn.execute(insert, scene.user, scene.customer)
    with pg_error(CHECK, constraint="user_presence_one_subject"):
        await rows.conn.execute(insert, None, None)


async def test_one_presence_row_per_user_and_per_customer(rows: Rows, scene: Scene) -> None:
    insert = "INSERT INTO user_presence (user_id, customer_id, status) VALUES ($1, $2, 'online')"
    await rows.conn.execute(insert, scene.user, None)
    with pg_error(UNIQUE, constraint="user_presence_user_id_key"):
        await rows.conn.execute(insert, scene.user, None)
    await rows.conn.execute(insert, None, scene.customer)
    with pg_error(UNIQUE, constraint="user_presence_customer_id_key"):
        await rows.conn.execute(insert, None, scene.customer)


async def test_presence_status_and_defaults(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="user_presence_status_check"):
        await rows.conn.execute(
            "INSERT INTO user_presence (user_id, status) VALUES ($1, 'busy')", scene.user
        )
    row = await rows.conn.fetchrow(
        "INSERT INTO user_presence (user_id) VALUES ($1) RETURNING *", scene.user
    )
    assert row["status"] == "offline"
    assert json.loads(row["metadata"]) == {}
    assert row["last_seen_at"] is not None
    with pg_error(CHECK, constraint="user_presence_metadata_check"):
        await rows.conn.execute("UPDATE user_presence SET metadata = '[]' WHERE id = $1", row["id"])


# Delivery status --------------------------------------------------------------------------------


async def test_a_message_is_sent_to_the_other_side(rows: Rows, scene: Scene) -> None:
    # Staff message: to the conversation's customer. Customer message: to the assigned user.
    to_customer = await rows.delivery(scene.staff_message, scene.customer)
    assert (to_customer["recipient_type"], to_customer["status"]) == ("customer", "sent")
    assert to_customer["conversation_id"] == scene.conversation
    to_staff = await rows.delivery(scene.customer_message, scene.user)
    assert (to_staff["recipient_type"], to_staff["status"]) == ("staff", "sent")
    assert (to_staff["delivered_at"], to_staff["read_at"]) == (None, None)
    assert (
        await rows.conn.fetchval(
            "SELECT count(*) FROM message_delivery_status WHERE message_id = ANY($1)",
            [scene.staff_message, scene.customer_message],
        )
        == 2
    )


async def test_an_unassigned_conversations_customer_messages_have_no_recipient_yet(
    rows: Rows,
) -> None:
    customer = await rows.customer()
    message = await rows.message(await rows.conversation(customer), "customer", customer)
    assert (
        await rows.conn.fetchval(
            "SELECT count(*) FROM message_delivery_status WHERE message_id = $1", message
        )
        == 0
    )


DELIVERY_STATES = ["sent", "delivered", "read", "failed"]
FORWARD = {
    ("sent", "delivered"),
    ("sent", "read"),
    ("sent", "failed"),
    ("delivered", "read"),
    ("failed", "delivered"),
    ("failed", "read"),
}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(DELIVERY_STATES, repeat=2)))
async def test_delivery_status_only_moves_forward(
    rows: Rows, scene: Scene, old: str, new: str
) -> None:
    message = await rows.message(scene.conversation, "staff", scene.user)
    update = (
        "UPDATE message_delivery_status SET status = $3 "
        "WHERE message_id = $1 AND recipient_id = $2 RETURNING *"
    )
    if old != "sent":
        await rows.conn.execute(update, message, scene.customer, old)
    if old == new or (old, new) in FORWARD:
        row = await rows.conn.fetchrow(update, message, scene.customer, new)
        assert row["status"] == new
    else:
        with pg_error(
            CHECK,
            constraint="message_delivery_status_forward_only",
            match=f"cannot go from {old} to {new}",
        ):
            await rows.conn.execute(update, message, scene.customer, new)


async def test_delivery_timestamps_follow_the_status(rows: Rows, scene: Scene) -> None:
    message = await rows.message(scene.conversation, "staff", scene.user)
    update = (
        "UPDATE message_delivery_status SET status = $3, failed_reason = $4 "
        "WHERE message_id = $1 AND recipient_id = $2 RETURNING *"
    )
    failed = await rows.conn.fetchrow(update, message, scene.customer, "failed", "push bounced")
    assert (failed["delivered_at"], failed["read_at"]) == (None, None)
    assert failed["failed_reason"] == "push bounced"
    delivered = await rows.conn.fetchrow(update, message, scene.customer, "delivered", None)
    assert delivered["delivered_at"] is not None and delivered["read_at"] is None
    assert delivered["failed_reason"] is None
    read = await rows.conn.fetchrow(update, message, scene.customer, "read", None)
    assert read["delivered_at"] == delivered["delivered_at"]
    assert read["read_at"] is not None
    # Straight from sent to read: read implies delivered.
    other = await rows.message(scene.conversation, "staff", scene.user)
    jumped = await rows.conn.fetchrow(update, other, scene.customer, "read", None)
    assert jumped["delivered_at"] is not None and jumped["read_at"] is not None
    # Once reached, a status keeps its time.
    kept = await rows.conn.fetchrow(
        "UPDATE message_delivery_status SET read_at = NULL, delivered_at = now() - interval '1 day' "
        "WHERE id = $1 RETURNING *",
        jumped["id"],
    )
    assert (kept["delivered_at"], kept["read_at"]) == (jumped["delivered_at"], jumped["read_at"])
    # A hand-written row must agree with itself.
    await rows.conn.execute("DELETE FROM message_delivery_status WHERE id = $1", jumped["id"])
    with pg_error(CHECK, constraint="message_delivery_status_timestamps"):
        await rows.conn.execute(
            "INSERT INTO message_delivery_status (message_id, recipient_type, recipient_id, "
            "status, read_at) VALUES ($1, 'customer', $2, 'sent', now())",
            other,
            scene.customer,
        )


async def test_delivery_status_values_and_uniqueness(rows: Rows, scene: Scene) -> None:
    with pg_error(CHECK, constraint="message_delivery_status_status_check"):
        await rows.conn.execute(
            "UPDATE message_delivery_status SET status = 'lost' WHERE message_id = $1",
            scene.staff_message,
        )
    with pg_error(UNIQUE, constraint="message_delivery_status_recipient_key"):
        await rows.conn.execute(
            "INSERT INTO message_delivery_status (message_id, recipient_type, recipient_id) "
            "VALUES ($1, 'customer', $2)",
            scene.staff_message,
            scene.customer,
        )


async def test_delivery_recipients_are_on_the_other_side(rows: Rows, scene: Scene) -> None:
    insert = (
        "INSERT INTO message_delivery_status (message_id, recipient_type, recipient_id) "
        "VALUES ($1, $2, $3) RETURNING *"
    )
    for message, recipient_type, recipient in (
        (scene.staff_message, "staff", scene.other_user),  # same side
        (scene.staff_message, "customer", scene.other_customer),  # not this conversation's
        (scene.customer_message, "staff", uuid4()),  # no such user
        (scene.customer_message, "staff", scene.customer),  # a customer is no user
    ):
        with pg_error(CHECK, constraint="message_delivery_status_recipient"):
            await rows.conn.execute(insert, message, recipient_type, recipient)
    row = await rows.conn.fetchrow(insert, scene.customer_message, "staff", scene.other_user)
    assert row["conversation_id"] == scene.conversation
    with pg_error(FOREIGN_KEY, constraint="message_delivery_status_message_id_fkey"):
        await rows.conn.execute(insert, uuid4(), "staff", scene.user)


async def test_a_delivery_row_that_names_its_conversation_is_still_checked(
    rows: Rows, scene: Scene
) -> None:
    """Only the row a message's own trigger writes skips the recipient check (0021): a client
    that names a conversation itself, even with status 'sent', is checked and corrected."""
    insert = (
        "INSERT INTO message_delivery_status "
        "(message_id, conversation_id, recipient_type, recipient_id, status) "
        "VALUES ($1, $2, $3, $4, 'sent') RETURNING *"
    )
    with pg_error(CHECK, constraint="message_delivery_status_recipient"):
        await rows.conn.execute(
            insert, scene.staff_message, scene.other_conversation, "customer", scene.other_customer
        )
    row = await rows.conn.fetchrow(
        insert, scene.customer_message, scene.other_conversation, "staff", scene.other_user
    )
    assert row["conversation_id"] == scene.conversation  # the message's, not the one named


async def test_a_messages_own_delivery_row_is_what_the_checks_would_make(
    rows: Rows, scene: Scene
) -> None:
    """The row written with a message, past the check: its conversation, 'sent', stamped."""
    message = await rows.message(scene.conversation, "customer", scene.customer)
    row = await rows.delivery(message, scene.user)
    assert (row["conversation_id"], row["recipient_type"], row["status"]) == (
        scene.conversation,
        "staff",
        "sent",
    )
    assert row["updated_at"] is not None and row["delivered_at"] is None
    staff_message = await rows.message(scene.conversation, "staff", scene.user)
    row = await rows.delivery(staff_message, scene.customer)
    assert (row["conversation_id"], row["recipient_type"]) == (scene.conversation, "customer")


async def test_the_message_and_recipient_of_a_delivery_row_never_change(
    rows: Rows, scene: Scene
) -> None:
    with pg_error(CHECK, constraint="message_delivery_status_immutable"):
        await rows.conn.execute(
            "UPDATE message_delivery_status SET recipient_id = $2 WHERE message_id = $1",
            scene.staff_message,
            scene.other_customer,
        )


async def test_a_receipt_marks_the_delivery_read(rows: Rows, scene: Scene) -> None:
    await rows.conn.execute(INSERT_RECEIPT, scene.staff_message, None, scene.customer)
    row = await rows.delivery(scene.staff_message, scene.customer)
    assert row["status"] == "read" and row["read_at"] is not None
    # A staff reader who had no delivery row (not assigned) gets one, read.
    await rows.conn.execute(INSERT_RECEIPT, scene.customer_message, scene.other_user, None)
    row = await rows.delivery(scene.customer_message, scene.other_user)
    assert (row["recipient_type"], row["status"]) == ("staff", "read")


async def test_a_delivery_row_written_after_the_receipt_is_read(rows: Rows, scene: Scene) -> None:
    await rows.conn.execute(INSERT_RECEIPT, scene.staff_message, None, scene.customer)
    await rows.conn.execute(
        "DELETE FROM message_delivery_status WHERE message_id = $1", scene.staff_message
    )
    row = await rows.conn.fetchrow(
        "INSERT INTO message_delivery_status (message_id, recipient_type, recipient_id, status) "
        "VALUES ($1, 'customer', $2, 'sent') RETURNING *",
        scene.staff_message,
        scene.customer,
    )
    assert row["status"] == "read"


async def test_a_read_delivery_stays_read_when_the_receipt_goes(rows: Rows, scene: Scene) -> None:
    await rows.conn.execute(INSERT_RECEIPT, scene.staff_message, None, scene.customer)
    await rows.conn.execute(
        "DELETE FROM message_read_receipts WHERE message_id = $1", scene.staff_message
    )
    assert (await rows.delivery(scene.staff_message, scene.customer))["status"] == "read"


# Portal tokens ----------------------------------------------------------------------------------


async def test_portal_token_hashes_are_unique(rows: Rows) -> None:
    customer = await rows.customer()
    insert = (
        "INSERT INTO portal_tokens (token_hash, customer_id, expires_at) "
        "VALUES ($1, $2, now() + interval '1 day')"
    )
    token_hash = uuid4().hex
    await rows.conn.execute(insert, token_hash, customer)
    with pg_error(UNIQUE, constraint="portal_tokens_token_hash_key"):
        await rows.conn.execute(insert, token_hash, customer)
    with pg_error("23502"):
        await rows.conn.execute(
            "INSERT INTO portal_tokens (token_hash, customer_id) VALUES ($1, $2)",
            uuid4().hex,
            customer,
        )


# Indexes ----------------------------------------------------------------------------------------


async def test_history_by_cursor_uses_the_history_index(conn: asyncpg.Connection) -> None:
    definitions = [
        r["indexdef"]
        for r in await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'customer_messages'"
        )
    ]
    assert any("(conversation_id, created_at, id)" in d for d in definitions), definitions
    async with conn.transaction():
        # With few rows the planner may prefer a bitmap scan of the same index plus a sort;
        # with those off, the index must serve the order by itself.
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = await conn.fetch(
            "EXPLAIN SELECT * FROM customer_messages WHERE conversation_id = $1 "
            "AND (created_at, id) < (now(), $2) ORDER BY created_at DESC, id DESC LIMIT 50",
            UUID(int=1),
            UUID(int=2),
        )
    lines = "\n".join(r[0] for r in plan)
    assert "Index Scan Backward using customer_messages_history_idx" in lines, lines
    assert "Sort" not in lines, lines
