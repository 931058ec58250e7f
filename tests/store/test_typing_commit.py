"""The typing write of a socket push (``write_typing``): the indicator as the caller, its owner
row as the server, in one transaction committed asynchronously (docs/realtime.md, "Typing").

Each test has a database of its own: the witness triggers below must not see other tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import pytest

from realtime_messaging.store.caller import Caller
from realtime_messaging.store.liveness import write_typing
from tests.conftest import fresh_database

#: Records, for each indicator and owner row written, who wrote it, in which transaction and
#: with which commit mode (what a client cannot see, but the safety argument rests on).
_WITNESS = """
CREATE TABLE typing_witness (
    tbl text, writer text, xid xid8, sync_commit text, at timestamptz DEFAULT clock_timestamp()
);
CREATE FUNCTION witness() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.typing_witness (tbl, writer, xid, sync_commit)
    VALUES (TG_TABLE_NAME, current_user, pg_current_xact_id(),
            current_setting('synchronous_commit'));
    RETURN NULL;
END $$;
GRANT INSERT ON typing_witness TO authenticated;
CREATE TRIGGER witness AFTER INSERT OR UPDATE ON public.message_typing_indicators
    FOR EACH ROW EXECUTE FUNCTION witness();
CREATE TRIGGER witness AFTER INSERT OR UPDATE ON rtm.typing_owners
    FOR EACH ROW EXECUTE FUNCTION witness();
"""


@pytest.fixture
async def db(admin_url: str) -> AsyncIterator[asyncpg.Connection]:
    async with fresh_database(admin_url) as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(_WITNESS)
            yield conn
        finally:
            await conn.close()


async def _conversation(db: asyncpg.Connection) -> tuple[UUID, UUID]:
    customer: UUID = await db.fetchval("INSERT INTO customers (name) VALUES ('C') RETURNING id")
    conversation: UUID = await db.fetchval(
        "INSERT INTO conversations (customer_id) VALUES ($1) RETURNING id", customer
    )
    return customer, conversation


async def test_indicator_as_the_caller_and_owner_in_one_asynchronous_transaction(
    db: asyncpg.Connection,
) -> None:
    customer, conversation = await _conversation(db)
    session_user = await db.fetchval("SELECT current_user")
    await write_typing(db, Caller.customer(customer), conversation, True, "n1:s1/c")
    owner = await db.fetchval(
        "SELECT o.connection_id FROM rtm.typing_owners AS o "
        "JOIN message_typing_indicators AS t ON t.id = o.indicator_id "
        "WHERE t.conversation_id = $1 AND t.customer_id = $2 AND t.is_typing",
        conversation,
        customer,
    )
    assert owner == "n1:s1/c"
    seen = await db.fetch("SELECT tbl, writer, xid, sync_commit FROM typing_witness ORDER BY at")
    assert [(r["tbl"], r["writer"], r["sync_commit"]) for r in seen] == [
        ("message_typing_indicators", "authenticated", "off"),  # under row-level security
        ("typing_owners", session_user, "off"),
    ]
    assert seen[0]["xid"] == seen[1]["xid"]  # one transaction: one commit, not two
    # Only that transaction: the session is back to its role and synchronous commits.
    assert await db.fetchval("SELECT current_user") == session_user
    assert await db.fetchval("SHOW synchronous_commit") == "on"


async def test_a_refused_indicator_writes_no_owner(db: asyncpg.Connection) -> None:
    _, conversation = await _conversation(db)
    stranger, _ = await _conversation(db)
    with pytest.raises(asyncpg.PostgresError):
        await write_typing(db, Caller.customer(stranger), conversation, True, "s2/c")
    assert await db.fetchval("SELECT count(*) FROM rtm.typing_owners") == 0
    assert await db.fetchval("SELECT count(*) FROM message_typing_indicators") == 0
    assert not db.is_in_transaction()
    assert await db.fetchval("SHOW synchronous_commit") == "on"


async def test_a_later_push_moves_the_indicator_to_the_new_connection(
    db: asyncpg.Connection,
) -> None:
    customer, conversation = await _conversation(db)
    caller = Caller.customer(customer)
    await write_typing(db, caller, conversation, True, "old/c")
    first = await db.fetchval("SELECT id FROM message_typing_indicators")
    await write_typing(db, caller, conversation, False, "new/c")
    assert await db.fetch("SELECT indicator_id, connection_id FROM rtm.typing_owners") == [
        (first, "new/c")
    ]
    assert (
        await db.fetchval("SELECT is_typing FROM message_typing_indicators WHERE id = $1", first)
        is False
    )


async def test_a_connection_id_that_is_no_safe_literal_is_refused(
    db: asyncpg.Connection,
) -> None:
    """The values travel as literals (one round trip): anything that could end one is refused
    before it reaches the database."""
    customer, conversation = await _conversation(db)
    for bad in ("x'); DROP TABLE rtm.typing_owners; --", "a\\b", "a b"):
        with pytest.raises(ValueError):
            await write_typing(db, Caller.customer(customer), conversation, True, bad)
    assert await db.fetchval("SELECT count(*) FROM message_typing_indicators") == 0


async def test_an_unknown_conversation_is_refused(db: asyncpg.Connection) -> None:
    customer, _ = await _conversation(db)
    with pytest.raises(asyncpg.PostgresError):
        await write_typing(db, Caller.customer(customer), uuid.uuid4(), True, "s3/c")
    assert await db.fetchval("SELECT count(*) FROM rtm.typing_owners") == 0
