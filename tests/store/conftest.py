"""Fixtures for the database tests: rows to test with, callers, scratch databases, SQL errors.

Tests share one migrated database (``database_url``), so each creates the rows it needs with
fresh ids and never assumes a table is otherwise empty. Staff unread counts span every
conversation, so tests compare them with the naive query in the same snapshot instead of with
fixed numbers.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import orjson
import pytest

from realtime_messaging.store.caller import Caller

NAIVE_STAFF_UNREAD = """
SELECT count(*) FROM customer_messages AS m
WHERE m.sender_type = 'customer'
  AND NOT EXISTS (SELECT 1 FROM message_read_receipts AS r
                  WHERE r.message_id = m.id AND r.read_by_user_id = $1)
"""
NAIVE_CUSTOMER_UNREAD = """
SELECT count(*) FROM customer_messages AS m
JOIN conversations AS c ON c.id = m.conversation_id
WHERE c.customer_id = $1 AND m.sender_type = 'staff'
  AND NOT EXISTS (SELECT 1 FROM message_read_receipts AS r
                  WHERE r.message_id = m.id AND r.read_by_customer_id = $1)
"""


class Rows:
    """Creates rows directly in SQL, as the owner (no row-level security)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def customer(self, name: str = "Customer") -> UUID:
        customer_id: UUID = await self.conn.fetchval(
            "INSERT INTO customers (name, email) VALUES ($1, 'c@example.com') RETURNING id", name
        )
        return customer_id

    async def user(self, name: str = "Agent") -> UUID:
        user_id: UUID = await self.conn.fetchval(
            "INSERT INTO users (name, email) VALUES ($1, 'a@example.com') RETURNING id", name
        )
        return user_id

    async def conversation(self, customer_id: UUID, assigned_user_id: UUID | None = None) -> UUID:
        conversation_id: UUID = await self.conn.fetchval(
            "INSERT INTO conversations (customer_id, subject, assigned_user_id) "
            "VALUES ($1, 'Help', $2) RETURNING id",
            customer_id,
            assigned_user_id,
        )
        return conversation_id

    async def message(
        self, conversation_id: UUID, sender_type: str, sender_id: UUID, content: str = "hello"
    ) -> UUID:
        message_id: UUID = await self.conn.fetchval(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, $2, $3, $4) RETURNING id",
            conversation_id,
            sender_type,
            sender_id,
            content,
        )
        return message_id

    async def delivery(self, message_id: UUID, recipient_id: UUID) -> asyncpg.Record:
        row: asyncpg.Record = await self.conn.fetchrow(
            "SELECT * FROM message_delivery_status WHERE message_id = $1 AND recipient_id = $2",
            message_id,
            recipient_id,
        )
        return row


@dataclass(frozen=True)
class Scene:
    """Two customers with a conversation each, two staff users; the first is assigned to both.

    ``customer_message`` and ``staff_message`` are in ``conversation`` (customer's);
    ``other_staff_message`` is in ``other_conversation`` (other_customer's).
    """

    customer: UUID
    other_customer: UUID
    user: UUID
    other_user: UUID
    conversation: UUID
    other_conversation: UUID
    customer_message: UUID
    staff_message: UUID
    other_staff_message: UUID


@pytest.fixture
def rows(conn: asyncpg.Connection) -> Rows:
    return Rows(conn)


@pytest.fixture
async def scene(rows: Rows) -> Scene:
    customer, other_customer = await rows.customer("Ann"), await rows.customer("Bob")
    user, other_user = await rows.user("Agent Smith"), await rows.user("Agent Jones")
    conversation = await rows.conversation(customer, user)
    other_conversation = await rows.conversation(other_customer, user)
    return Scene(
        customer=customer,
        other_customer=other_customer,
        user=user,
        other_user=other_user,
        conversation=conversation,
        other_conversation=other_conversation,
        customer_message=await rows.message(conversation, "customer", customer, "my question"),
        staff_message=await rows.message(conversation, "staff", user, "our answer"),
        other_staff_message=await rows.message(other_conversation, "staff", user, "hi Bob"),
    )


@contextmanager
def pg_error(
    sqlstate: str, *, constraint: str | None = None, match: str | None = None
) -> Iterator[pytest.ExceptionInfo[asyncpg.PostgresError]]:
    """Expect a PostgreSQL error with this SQLSTATE (and constraint name, and message part)."""
    with pytest.raises(asyncpg.PostgresError) as info:
        yield info
    error = info.value
    assert error.sqlstate == sqlstate, f"{error.sqlstate}: {error}"
    if constraint is not None:
        assert error.constraint_name == constraint, f"{error.constraint_name}: {error}"
    if match is not None:
        assert match in str(error), str(error)


@asynccontextmanager
async def acting(conn: asyncpg.Connection, caller: Caller) -> AsyncIterator[asyncpg.Connection]:
    """Act as ``caller`` inside the transaction already open on ``conn``, then be the owner again.

    ``as_caller`` opens a transaction of its own; this is for tests that interleave owner and
    caller steps in one transaction that is rolled back at the end.
    """
    await conn.execute(
        "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
        caller.role,
        orjson.dumps(caller.claims()).decode(),
    )
    try:
        yield conn
    finally:
        await conn.execute("RESET ROLE; SELECT set_config('request.jwt.claims', '', true)")


# The per-conversation staff query GET /api/unread ran before migration 0012 (the anti-join).
NAIVE_STAFF_UNREAD_BY_CONVERSATION = """
SELECT m.conversation_id, count(*) AS unread FROM customer_messages AS m
WHERE m.sender_type = 'customer'
  AND NOT EXISTS (SELECT 1 FROM message_read_receipts AS r
                  WHERE r.message_id = m.id AND r.read_by_user_id = $1)
GROUP BY m.conversation_id ORDER BY m.conversation_id
"""


async def staff_unread_by_conversation_and_naive(
    conn: asyncpg.Connection, user: UUID
) -> tuple[dict[UUID, int], dict[UUID, int]]:
    """A staff user's per-conversation unread counts as GET /api/unread answers them (from the
    counters) and by the anti-join, in one snapshot."""
    from realtime_messaging.server.api.messaging import staff_unread_sql

    if conn.is_in_transaction():  # the caller's transaction holds the writes: see them
        counted = await conn.fetch(staff_unread_sql(False), user)
        naive = await conn.fetch(NAIVE_STAFF_UNREAD_BY_CONVERSATION, user)
    else:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            counted = await conn.fetch(staff_unread_sql(False), user)
            naive = await conn.fetch(NAIVE_STAFF_UNREAD_BY_CONVERSATION, user)
    return (
        {r["conversation_id"]: int(r["unread"]) for r in counted},
        {r["conversation_id"]: int(r["unread"]) for r in naive},
    )


async def naive_unread(
    conn: asyncpg.Connection, *, user: UUID | None = None, customer: UUID | None = None
) -> int:
    """The count by definition: other-side messages without this reader's receipt."""
    if user is not None:
        return int(await conn.fetchval(NAIVE_STAFF_UNREAD, user))
    return int(await conn.fetchval(NAIVE_CUSTOMER_UNREAD, customer))


async def unread_and_naive(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    user: UUID | None = None,
    customer: UUID | None = None,
) -> tuple[int, int]:
    """get_unread_message_count and the naive count, in one statement (one snapshot)."""
    naive = NAIVE_STAFF_UNREAD if user is not None else NAIVE_CUSTOMER_UNREAD
    reader = user if user is not None else customer
    row = await conn.fetchrow(
        f"SELECT get_unread_message_count($1, $2) AS counted, ({naive.replace('$1', '$3')}) "
        "AS naive",
        user,
        customer,
        reader,
    )
    return int(row["counted"]), int(row["naive"])


def _with_database(url: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@pytest.fixture
async def scratch_database(admin_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """A factory of empty (not migrated) databases on the test server, dropped afterwards."""
    created: list[str] = []

    async def create() -> str:
        name = f"rtm_scratch_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        created.append(name)
        return _with_database(admin_url, name)

    yield create
    admin = await asyncpg.connect(admin_url)
    try:
        for name in created:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def claims_json(claims: dict[str, Any]) -> str:
    return orjson.dumps(claims).decode()
