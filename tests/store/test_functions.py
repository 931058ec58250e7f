"""The five documented SQL functions, called as the owner (a trusted back end).

Caller-specific behaviour (customers, staff, anon) is in test_security.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest

from .conftest import Rows, Scene, naive_unread, pg_error, unread_and_naive

BAD_ARGUMENT, NOT_FOUND = "22023", "P0002"

# The "Database Functions" section of the original design, verbatim; only the placeholder ids
# are replaced with real ones.
DOCUMENTED_SNIPPETS = {
    "mark_message_as_read": """
SELECT mark_message_as_read(
  'message-uuid',
  NULL, -- user_id
  'customer-uuid'
);
""",
    "update_typing_indicator": """
SELECT update_typing_indicator(
  'conversation-uuid',
  'user-uuid',
  NULL, -- customer_id
  true, -- is_typing
  5 -- expires_in_seconds
);
""",
    "update_user_presence": """
SELECT update_user_presence(
  'user-uuid',
  NULL, -- customer_id
  'online',
  '{"device": "mobile"}'::jsonb
);
""",
    "get_unread_message_count": """
SELECT get_unread_message_count(
  'user-uuid',
  NULL -- customer_id
);
""",
    "cleanup_expired_typing_indicators": """
SELECT cleanup_expired_typing_indicators();
-- Returns: number of deleted indicators
""",
    # The same call, from "Troubleshooting" and "High Database Load".
    "cleanup (troubleshooting)": """
-- Manually clean up expired indicators
SELECT cleanup_expired_typing_indicators();
""",
    "cleanup (cron)": """
-- Schedule cleanup job
-- Add to cron: */5 * * * * (every 5 minutes)
SELECT cleanup_expired_typing_indicators();
""",
}


def with_ids(snippet: str, scene: Scene) -> str:
    return (
        snippet.replace("message-uuid", str(scene.staff_message))
        .replace("customer-uuid", str(scene.customer))
        .replace("conversation-uuid", str(scene.conversation))
        .replace("user-uuid", str(scene.user))
    )


@pytest.mark.parametrize("name", sorted(DOCUMENTED_SNIPPETS))
async def test_documented_snippets_run_as_written(rows: Rows, scene: Scene, name: str) -> None:
    sql = with_ids(DOCUMENTED_SNIPPETS[name], scene)
    # The simple query protocol, as psql sends it...
    await rows.conn.execute(sql)
    # ...and the extended protocol, to look at the result.
    result = await rows.conn.fetchval(sql)
    if name == "mark_message_as_read":
        assert result["message_id"] == scene.staff_message
        assert result["read_by_customer_id"] == scene.customer
        assert (await rows.delivery(scene.staff_message, scene.customer))["status"] == "read"
    elif name == "update_typing_indicator":
        assert (result["conversation_id"], result["user_id"]) == (scene.conversation, scene.user)
        assert result["is_typing"] is True
    elif name == "update_user_presence":
        assert (result["user_id"], result["status"]) == (scene.user, "online")
        assert json.loads(result["metadata"]) == {"device": "mobile"}
    elif name == "get_unread_message_count":
        assert result == await naive_unread(rows.conn, user=scene.user)
    else:
        assert isinstance(result, int) and result >= 0


async def test_each_function_has_exactly_the_documented_signature(
    conn: asyncpg.Connection,
) -> None:
    """One signature per name, so quoted literals and NULLs resolve without casts."""
    found = {
        r["proname"]: r
        for r in await conn.fetch(
            "SELECT proname, pg_get_function_arguments(oid) AS args, "
            "pg_get_function_result(oid) AS result, count(*) OVER (PARTITION BY proname) AS n "
            "FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND proname = ANY($1)",
            [
                "mark_message_as_read",
                "update_typing_indicator",
                "update_user_presence",
                "get_unread_message_count",
                "cleanup_expired_typing_indicators",
            ],
        )
    }
    assert {name: (r["args"], r["n"]) for name, r in found.items()} == {
        "mark_message_as_read": ("message_id uuid, user_id uuid, customer_id uuid", 1),
        "update_typing_indicator": (
            "conversation_id uuid, user_id uuid, customer_id uuid, is_typing boolean, "
            "expires_in_seconds integer DEFAULT 5",
            1,
        ),
        "update_user_presence": (
            "user_id uuid, customer_id uuid, status text, metadata jsonb DEFAULT NULL::jsonb",
            1,
        ),
        "get_unread_message_count": ("user_id uuid, customer_id uuid DEFAULT NULL::uuid", 1),
        "cleanup_expired_typing_indicators": ("", 1),
    }
    assert found["get_unread_message_count"]["result"] == "bigint"
    assert found["cleanup_expired_typing_indicators"]["result"] == "integer"


async def test_arguments_may_be_passed_by_name(rows: Rows, scene: Scene) -> None:
    """PostgREST-style RPC passes the documented parameter names."""
    receipt = await rows.conn.fetchrow(
        "SELECT * FROM mark_message_as_read(customer_id => $1, user_id => NULL, message_id => $2)",
        scene.customer,
        scene.staff_message,
    )
    assert receipt["read_by_customer_id"] == scene.customer


def reader_args(scene: Scene) -> list[tuple[UUID | None, UUID | None]]:
    return [(scene.user, scene.customer), (None, None)]


# mark_message_as_read ---------------------------------------------------------------------------


async def test_marking_read_records_a_receipt_and_the_delivery(rows: Rows, scene: Scene) -> None:
    receipt = await rows.conn.fetchrow(
        "SELECT * FROM mark_message_as_read($1, $2, NULL)", scene.customer_message, scene.user
    )
    assert (receipt["message_id"], receipt["read_by_user_id"]) == (
        scene.customer_message,
        scene.user,
    )
    assert receipt["read_by_customer_id"] is None and receipt["read_at"] is not None
    delivery = await rows.delivery(scene.customer_message, scene.user)
    assert delivery["status"] == "read"


async def test_marking_read_twice_is_one_receipt(rows: Rows, scene: Scene) -> None:
    mark = "SELECT * FROM mark_message_as_read($1, NULL, $2)"
    first = await rows.conn.fetchrow(mark, scene.staff_message, scene.customer)
    second = await rows.conn.fetchrow(mark, scene.staff_message, scene.customer)
    assert first == second
    assert (
        await rows.conn.fetchval(
            "SELECT count(*) FROM message_read_receipts WHERE message_id = $1",
            scene.staff_message,
        )
        == 1
    )
    assert (
        await rows.conn.fetchval(
            "SELECT receipts FROM rtm.reader_counters WHERE customer_id = $1", scene.customer
        )
        == 1
    )


async def test_marking_read_by_an_unassigned_agent_adds_their_delivery(
    rows: Rows, scene: Scene
) -> None:
    await rows.conn.execute(
        "SELECT mark_message_as_read($1, $2, NULL)", scene.customer_message, scene.other_user
    )
    assert (await rows.delivery(scene.customer_message, scene.other_user))["status"] == "read"
    # The assigned agent's delivery is theirs, untouched.
    assert (await rows.delivery(scene.customer_message, scene.user))["status"] == "sent"


async def test_marking_read_rejects_bad_input(rows: Rows, scene: Scene) -> None:
    mark = "SELECT mark_message_as_read($1, $2, $3)"
    for user_id, customer_id in reader_args(scene):
        with pg_error(BAD_ARGUMENT, match="exactly one of user_id and customer_id"):
            await rows.conn.execute(mark, scene.staff_message, user_id, customer_id)
    with pg_error(BAD_ARGUMENT, match="message_id must be given"):
        await rows.conn.execute(mark, None, None, scene.customer)
    with pg_error(NOT_FOUND, match="message"):
        await rows.conn.execute(mark, uuid4(), None, scene.customer)
    with pg_error(NOT_FOUND, match="customer"):
        await rows.conn.execute(mark, scene.staff_message, None, uuid4())
    with pg_error(NOT_FOUND, match="user"):
        await rows.conn.execute(mark, scene.customer_message, uuid4(), None)


async def test_marking_read_is_for_the_other_sides_messages(rows: Rows, scene: Scene) -> None:
    mark = "SELECT mark_message_as_read($1, $2, $3)"
    with pg_error("23514", constraint="message_read_receipts_reader_is_recipient"):
        await rows.conn.execute(mark, scene.customer_message, None, scene.customer)
    with pg_error("23514", constraint="message_read_receipts_reader_is_recipient"):
        await rows.conn.execute(mark, scene.staff_message, scene.user, None)
    with pg_error("23514", constraint="message_read_receipts_reader_is_participant"):
        await rows.conn.execute(mark, scene.other_staff_message, None, scene.customer)


# update_typing_indicator ------------------------------------------------------------------------


async def test_typing_starts_and_expires(rows: Rows, scene: Scene) -> None:
    async with rows.conn.transaction():
        row = await rows.conn.fetchrow(
            "SELECT * FROM update_typing_indicator($1, NULL, $2, true)",
            scene.conversation,
            scene.customer,
        )
        now = await rows.conn.fetchval("SELECT now()")
    assert row["is_typing"] is True
    assert (row["started_at"], row["expires_at"] - now) == (now, timedelta(seconds=5))
    async with rows.conn.transaction():
        row = await rows.conn.fetchrow(
            "SELECT * FROM update_typing_indicator($1, NULL, $2, true, 30)",
            scene.conversation,
            scene.customer,
        )
        later = await rows.conn.fetchval("SELECT now()")
    # Still typing: the start stays, the expiry moves.
    assert row["started_at"] == now
    assert row["expires_at"] - later == timedelta(seconds=30)
    assert row["updated_at"] == later


async def test_stopping_typing_keeps_a_row_that_reads_as_not_typing(
    rows: Rows, scene: Scene
) -> None:
    typing = "SELECT * FROM update_typing_indicator($1, $2, NULL, $3)"
    started = await rows.conn.fetchrow(typing, scene.conversation, scene.user, True)
    async with rows.conn.transaction():
        stopped = await rows.conn.fetchrow(typing, scene.conversation, scene.user, False)
        now = await rows.conn.fetchval("SELECT now()")
    assert stopped["id"] == started["id"]
    assert stopped["is_typing"] is False
    assert stopped["expires_at"] == now
    assert stopped["started_at"] == started["started_at"]
    restarted = await rows.conn.fetchrow(typing, scene.conversation, scene.user, True)
    assert restarted["is_typing"] is True and restarted["started_at"] > started["started_at"]


async def test_typing_after_expiry_starts_again(rows: Rows, scene: Scene) -> None:
    typing = "SELECT * FROM update_typing_indicator($1, $2, NULL, true)"
    first = await rows.conn.fetchrow(typing, scene.conversation, scene.user)
    await rows.conn.execute(
        "UPDATE message_typing_indicators SET expires_at = now() - interval '1 second' "
        "WHERE id = $1",
        first["id"],
    )
    again = await rows.conn.fetchrow(typing, scene.conversation, scene.user)
    assert again["started_at"] > first["started_at"]


async def test_typing_rejects_bad_input(rows: Rows, scene: Scene) -> None:
    typing = "SELECT update_typing_indicator($1, $2, $3, $4, $5)"
    for user_id, customer_id in reader_args(scene):
        with pg_error(BAD_ARGUMENT, match="exactly one of user_id and customer_id"):
            await rows.conn.execute(typing, scene.conversation, user_id, customer_id, True, 5)
    for seconds in (0, -1, 3601, None):
        with pg_error(BAD_ARGUMENT, match="expires_in_seconds"):
            await rows.conn.execute(typing, scene.conversation, scene.user, None, True, seconds)
    with pg_error(BAD_ARGUMENT, match="is_typing"):
        await rows.conn.execute(typing, scene.conversation, scene.user, None, None, 5)
    with pg_error(BAD_ARGUMENT, match="conversation_id"):
        await rows.conn.execute(typing, None, scene.user, None, True, 5)
    with pg_error(NOT_FOUND, match="conversation"):
        await rows.conn.execute(typing, uuid4(), scene.user, None, True, 5)
    with pg_error("23514", constraint="message_typing_indicators_participant"):
        await rows.conn.execute(typing, scene.other_conversation, None, scene.customer, True, 5)


# update_user_presence ---------------------------------------------------------------------------


async def test_presence_is_upserted_with_last_seen_now(rows: Rows, scene: Scene) -> None:
    presence = "SELECT * FROM update_user_presence($1, $2, $3, $4)"
    async with rows.conn.transaction():
        first = await rows.conn.fetchrow(
            presence, None, scene.customer, "online", json.dumps({"device": "web"})
        )
        now = await rows.conn.fetchval("SELECT now()")
    assert (first["customer_id"], first["status"], first["last_seen_at"]) == (
        scene.customer,
        "online",
        now,
    )
    # No metadata: keep what is stored. New metadata replaces it.
    away = await rows.conn.fetchrow(presence, None, scene.customer, "away", None)
    assert away["id"] == first["id"] and away["status"] == "away"
    assert json.loads(away["metadata"]) == {"device": "web"}
    assert away["last_seen_at"] > first["last_seen_at"]
    offline = await rows.conn.fetchrow(presence, None, scene.customer, "offline", "{}")
    assert json.loads(offline["metadata"]) == {}
    staff = await rows.conn.fetchrow(
        "SELECT * FROM update_user_presence($1, NULL, 'online')", scene.user
    )
    assert json.loads(staff["metadata"]) == {}
    await rows.conn.execute(
        "SELECT update_user_presence($1, NULL, 'online', '{\"desk\": 3}')", scene.user
    )
    staff = await rows.conn.fetchrow(
        "SELECT * FROM update_user_presence($1, NULL, 'away')", scene.user
    )
    assert json.loads(staff["metadata"]) == {"desk": 3}


async def test_presence_rejects_bad_input(rows: Rows, scene: Scene) -> None:
    presence = "SELECT update_user_presence($1, $2, $3, $4)"
    for user_id, customer_id in reader_args(scene):
        with pg_error(BAD_ARGUMENT, match="exactly one of user_id and customer_id"):
            await rows.conn.execute(presence, user_id, customer_id, "online", None)
    for status in ("busy", "ONLINE", None):
        with pg_error(BAD_ARGUMENT, match="status must be online, away or offline"):
            await rows.conn.execute(presence, scene.user, None, status, None)
    with pg_error(BAD_ARGUMENT, match="metadata must be a JSON object"):
        await rows.conn.execute(presence, scene.user, None, "online", "[1]")
    with pg_error(NOT_FOUND, match="user"):
        await rows.conn.execute(presence, uuid4(), None, "online", None)


# get_unread_message_count -----------------------------------------------------------------------


async def test_unread_counts_follow_messages_and_receipts(rows: Rows, scene: Scene) -> None:
    count = "SELECT get_unread_message_count($1, $2)"
    assert await rows.conn.fetchval(count, None, scene.customer) == 1
    assert await rows.conn.fetchval(count, None, scene.other_customer) == 1
    await rows.message(scene.conversation, "staff", scene.other_user)
    assert await rows.conn.fetchval(count, None, scene.customer) == 2
    await rows.conn.execute(
        "SELECT mark_message_as_read($1, NULL, $2)", scene.staff_message, scene.customer
    )
    assert await rows.conn.fetchval(count, None, scene.customer) == 1

    async with rows.conn.transaction(isolation="repeatable_read"):
        before = await rows.conn.fetchval(count, scene.user, None)
        await rows.message(scene.conversation, "customer", scene.customer)
        assert await rows.conn.fetchval(count, scene.user, None) == before + 1
        await rows.conn.execute(
            "SELECT mark_message_as_read($1, $2, NULL)", scene.customer_message, scene.user
        )
        assert await rows.conn.fetchval(count, scene.user, None) == before
        # The other agent has read nothing.
        assert await rows.conn.fetchval(count, scene.other_user, None) == before + 1
    for reader in ({"user": scene.user}, {"customer": scene.customer}):
        counted, naive = await unread_and_naive(rows.conn, **reader)
        assert counted == naive


async def test_unread_count_of_a_staff_user_needs_no_customer_argument(
    rows: Rows, scene: Scene
) -> None:
    one_argument = await rows.conn.fetchval("SELECT get_unread_message_count($1)", scene.user)
    assert one_argument == await naive_unread(rows.conn, user=scene.user)


async def test_unread_count_rejects_bad_input(rows: Rows, scene: Scene) -> None:
    count = "SELECT get_unread_message_count($1, $2)"
    for user_id, customer_id in reader_args(scene):
        with pg_error(BAD_ARGUMENT, match="exactly one of user_id and customer_id"):
            await rows.conn.execute(count, user_id, customer_id)
    with pg_error(NOT_FOUND, match="user"):
        await rows.conn.execute(count, uuid4(), None)
    with pg_error(NOT_FOUND, match="customer"):
        await rows.conn.execute(count, None, uuid4())


# cleanup_expired_typing_indicators --------------------------------------------------------------


async def test_cleanup_deletes_exactly_the_expired_indicators(rows: Rows, scene: Scene) -> None:
    async with rows.conn.transaction():
        await rows.conn.execute("SELECT cleanup_expired_typing_indicators()")  # others' rows
        await rows.conn.execute(
            "INSERT INTO message_typing_indicators (conversation_id, user_id, expires_at) "
            "VALUES ($1, $2, now() - interval '1 second'), ($3, $2, now() + interval '5 s')",
            scene.conversation,
            scene.user,
            scene.other_conversation,
        )
        await rows.conn.execute(
            "SELECT update_typing_indicator($1, NULL, $2, false)",
            scene.conversation,
            scene.customer,
        )
        assert await rows.conn.fetchval("SELECT cleanup_expired_typing_indicators()") == 2
        left = await rows.conn.fetch(
            "SELECT conversation_id FROM message_typing_indicators WHERE conversation_id = ANY($1)",
            [scene.conversation, scene.other_conversation],
        )
        assert [r["conversation_id"] for r in left] == [scene.other_conversation]
        assert await rows.conn.fetchval("SELECT cleanup_expired_typing_indicators()") == 0
