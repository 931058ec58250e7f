"""get_unread_message_count() and a staff user's per-conversation counts (GET /api/unread) answer
from counters; they must always equal the naive count.

A property test drives random histories (sends from either side, single and bulk reads with
repeats, deletions of messages, conversations and staff users) and compares every reader's count,
and every staff user's count per conversation, with the naive anti-join after each step. A
concurrency test does the same with committed, racing writers; a seeded random desk compares the
per-conversation counts on a larger data set.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime_messaging.store.caller import Caller, as_caller

from .conftest import Rows, acting, staff_unread_by_conversation_and_naive, unread_and_naive

CONVERSATIONS = 3  # 0: customer 0, assigned to user 0; 1: customer 0, unassigned; 2: customer 1
USERS = 3
CUSTOMERS = 2
PICK = st.integers(min_value=0, max_value=1_000)

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("send"),
            st.integers(0, CONVERSATIONS - 1),
            st.sampled_from(["customer", "staff"]),
            st.integers(0, USERS - 1),
        ),
        st.tuples(st.just("send_many"), st.integers(0, CONVERSATIONS - 1), st.integers(1, 4)),
        st.tuples(st.just("read"), PICK, st.integers(0, USERS - 1)),
        st.tuples(st.just("read_all"), st.integers(0, USERS + CUSTOMERS - 1)),
        st.tuples(st.just("delete_message"), PICK),
        st.tuples(st.just("delete_conversation"), st.integers(0, CONVERSATIONS - 1)),
        st.tuples(st.just("delete_user"), st.integers(0, USERS - 1)),
    ),
    min_size=1,
    max_size=25,
)


@dataclass
class World:
    """The rows of one example and what is still alive."""

    customers: list[UUID]
    users: list[UUID]
    conversations: list[UUID]
    owner: list[int]  # conversation index -> customer index
    messages: list[tuple[UUID, int, str]] = field(default_factory=list)  # id, conversation, side
    dead_conversations: set[int] = field(default_factory=set)
    dead_users: set[int] = field(default_factory=set)

    def readers(self) -> list[dict[str, UUID]]:
        staff = [{"user": u} for n, u in enumerate(self.users) if n not in self.dead_users]
        return staff + [{"customer": c} for c in self.customers]


async def build_world(conn: asyncpg.Connection) -> World:
    rows = Rows(conn)
    customers = [await rows.customer() for _ in range(CUSTOMERS)]
    users = [await rows.user() for _ in range(USERS)]
    conversations = [
        await rows.conversation(customers[0], users[0]),
        await rows.conversation(customers[0]),
        await rows.conversation(customers[1], users[1]),
    ]
    return World(customers, users, conversations, owner=[0, 0, 1])


async def apply(conn: asyncpg.Connection, world: World, op: tuple[Any, ...]) -> None:
    """Apply one operation if it still makes sense (its rows are alive); else skip it."""
    kind = op[0]
    if kind == "send":
        _, conv, side, user = op
        if conv in world.dead_conversations or (side == "staff" and user in world.dead_users):
            return
        sender = world.customers[world.owner[conv]] if side == "customer" else world.users[user]
        message = await Rows(conn).message(world.conversations[conv], side, sender)
        world.messages.append((message, conv, side))
    elif kind == "send_many":
        _, conv, n = op
        alive = [u for i, u in enumerate(world.users) if i not in world.dead_users]
        if conv in world.dead_conversations or not alive:
            return
        sides = ["customer" if k % 2 == 0 else "staff" for k in range(n)]
        senders = [
            world.customers[world.owner[conv]] if s == "customer" else alive[0] for s in sides
        ]
        inserted = await conn.fetch(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "SELECT $1, s, id, 'bulk' FROM unnest($2::text[], $3::uuid[]) AS t (s, id) "
            "RETURNING id, sender_type",
            world.conversations[conv],
            sides,
            senders,
        )
        world.messages += [(r["id"], conv, r["sender_type"]) for r in inserted]
    elif kind == "read":
        _, pick, user = op
        if not world.messages:
            return
        message, conv, side = world.messages[pick % len(world.messages)]
        if side == "customer":
            if user in world.dead_users:
                return
            args = (message, world.users[user], None)
        else:
            args = (message, None, world.customers[world.owner[conv]])
        await conn.execute("SELECT mark_message_as_read($1, $2, $3)", *args)
    elif kind == "read_all":
        # One statement inserting many receipts, some already there: the counters must add up
        # only what was inserted.
        _, reader = op
        ours = [c for i, c in enumerate(world.conversations) if i not in world.dead_conversations]
        if reader < USERS:
            if reader in world.dead_users:
                return
            await conn.execute(
                "INSERT INTO message_read_receipts (message_id, read_by_user_id) "
                "SELECT m.id, $2 FROM customer_messages m "
                "WHERE m.conversation_id = ANY($1) AND m.sender_type = 'customer' "
                "ON CONFLICT ON CONSTRAINT unique_message_reader DO NOTHING",
                ours,
                world.users[reader],
            )
        else:
            await conn.execute(
                "INSERT INTO message_read_receipts (message_id, read_by_customer_id) "
                "SELECT m.id, c.customer_id FROM customer_messages m "
                "JOIN conversations c ON c.id = m.conversation_id "
                "WHERE c.id = ANY($1) AND c.customer_id = $2 AND m.sender_type = 'staff' "
                "ON CONFLICT ON CONSTRAINT unique_message_reader DO NOTHING",
                ours,
                world.customers[reader - USERS],
            )
    elif kind == "delete_message":
        if not world.messages:
            return
        message, _, _ = world.messages.pop(op[1] % len(world.messages))
        await conn.execute("DELETE FROM customer_messages WHERE id = $1", message)
    elif kind == "delete_conversation":
        conv = op[1]
        if conv in world.dead_conversations:
            return
        await conn.execute("DELETE FROM conversations WHERE id = $1", world.conversations[conv])
        world.dead_conversations.add(conv)
        world.messages = [m for m in world.messages if m[1] != conv]
    elif kind == "delete_user":
        user = op[1]
        if user in world.dead_users:
            return
        await conn.execute("DELETE FROM users WHERE id = $1", world.users[user])
        world.dead_users.add(user)


async def assert_counts_exact(conn: asyncpg.Connection, world: World, after: object) -> None:
    for reader in world.readers():
        counted, naive = await unread_and_naive(conn, **reader)
        assert counted == naive, (reader, after)
        if "user" in reader:
            by_counters, by_anti_join = await staff_unread_by_conversation_and_naive(
                conn, reader["user"]
            )
            assert by_counters == by_anti_join, (reader, after)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=operations)
async def test_unread_counts_equal_the_naive_count(pool: asyncpg.Pool, ops: list[Any]) -> None:
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            world = await build_world(conn)
            for op in ops:
                await apply(conn, world, op)
                await assert_counts_exact(conn, world, op)
            # The same answer for each reader asking for themselves, under row-level security.
            for reader in world.readers():
                counted, naive = await unread_and_naive(conn, **reader)
                caller = (
                    Caller.staff(reader["user"])
                    if "user" in reader
                    else Caller.customer(reader["customer"])
                )
                async with acting(conn, caller):
                    as_themselves = await conn.fetchval(
                        "SELECT get_unread_message_count($1, $2)",
                        reader.get("user"),
                        reader.get("customer"),
                    )
                assert as_themselves == counted == naive
        finally:
            await transaction.rollback()


async def test_duplicate_receipts_in_one_statement_count_once(rows: Rows) -> None:
    customer, user = await rows.customer(), await rows.user()
    conversation = await rows.conversation(customer, user)
    message = await rows.message(conversation, "customer", customer)
    async with rows.conn.transaction():
        before, _ = await unread_and_naive(rows.conn, user=user)
        await rows.conn.execute(
            "INSERT INTO message_read_receipts (message_id, read_by_user_id) "
            "VALUES ($1, $2), ($1, $2) ON CONFLICT ON CONSTRAINT unique_message_reader DO NOTHING",
            message,
            user,
        )
        after, naive = await unread_and_naive(rows.conn, user=user)
        assert (after, naive) == (before - 1, before - 1)


async def test_staff_counts_per_conversation_equal_the_anti_join_on_a_random_desk(
    conn: asyncpg.Connection,
) -> None:
    """A seeded random desk, larger than the property test's: 4 staff users, 30 conversations,
    1,500 messages, receipts from bulk and single reads, then deletions. GET /api/unread's
    per-conversation answer from the counters equals the old anti-join for every staff user, also
    as the user themselves (row-level security) and for one conversation at a time."""
    import random

    from realtime_messaging.server.api.messaging import staff_unread_sql

    rng = random.Random(16)
    transaction = conn.transaction()  # rolled back: the desk is left to no other test
    await transaction.start()
    try:
        rows = Rows(conn)
        customers = [await rows.customer() for _ in range(8)]
        users = [await rows.user() for _ in range(4)]
        conversations = [
            await rows.conversation(rng.choice(customers), rng.choice([None, *users]))
            for _ in range(30)
        ]
        owners = dict(
            await conn.fetch(
                "SELECT id, customer_id FROM conversations WHERE id = ANY($1)", conversations
            )
        )
        plan = [rng.choice(conversations) for _ in range(1_500)]
        sides = [rng.choice(["customer", "customer", "staff"]) for _ in plan]
        senders = [
            owners[c] if s == "customer" else rng.choice(users)
            for c, s in zip(plan, sides, strict=True)
        ]
        messages = await conn.fetch(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "SELECT c, s, id, 'm' FROM unnest($1::uuid[], $2::text[], $3::uuid[]) AS t (c, s, id) "
            "RETURNING id, sender_type",
            plan,
            sides,
            senders,
        )
        from_customers = [r["id"] for r in messages if r["sender_type"] == "customer"]
        for user in users:
            # A bulk read of a random share (with repeats), then single reads.
            picked = rng.sample(from_customers, k=rng.randrange(len(from_customers)))
            await conn.execute(
                "INSERT INTO message_read_receipts (message_id, read_by_user_id) "
                "SELECT m, $2 FROM unnest($1::uuid[]) AS m "
                "ON CONFLICT ON CONSTRAINT unique_message_reader DO NOTHING",
                picked + picked[: len(picked) // 3],
                user,
            )
            for message in rng.sample(from_customers, k=40):
                await conn.execute("SELECT mark_message_as_read($1, $2, NULL)", message, user)
        await conn.execute(
            "DELETE FROM customer_messages WHERE id = ANY($1)", rng.sample(from_customers, k=200)
        )
        await conn.execute("DELETE FROM conversations WHERE id = ANY($1)", conversations[:3])
        await conn.execute("DELETE FROM users WHERE id = $1", users[3])

        mine = set(conversations)
        for user in users[:3]:
            by_counters, by_anti_join = await staff_unread_by_conversation_and_naive(conn, user)
            assert by_counters == by_anti_join, user
            ours = {c: n for c, n in by_counters.items() if c in mine}
            assert len(ours) > 10 and sum(ours.values()) > 100  # the desk is not trivially read
            async with acting(conn, Caller.staff(user)):
                as_themselves = await conn.fetch(staff_unread_sql(False), user)
                assert {r["conversation_id"]: r["unread"] for r in as_themselves} == by_counters
                for conversation in conversations[:8]:
                    one = await conn.fetch(staff_unread_sql(True), user, conversation)
                    expected = by_anti_join.get(conversation)
                    assert [r["unread"] for r in one] == ([expected] if expected else [])
    finally:
        await transaction.rollback()


async def retrying(pool: asyncpg.Pool, statement: str, *args: object) -> None:
    """Run a statement, retrying when PostgreSQL picks it as a deadlock victim.

    Concurrent cascading deletes may lock the same reader counters in different orders;
    PostgreSQL then aborts one, atomically, and the client retries. Counts stay exact throughout.
    """
    while True:
        try:
            await pool.execute(statement, *args)
            return
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            continue


async def test_racing_writers_keep_counts_exact(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        rows = Rows(conn)
        customer = await rows.customer()
        agent, other_agent = await rows.user(), await rows.user()
        assigned = await rows.conversation(customer, agent)
        unassigned = await rows.conversation(customer)

    async def writer(n: int) -> None:
        for k in range(8):
            conversation = assigned if (n + k) % 2 else unassigned
            if k % 2:
                await pool.execute(
                    "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, "
                    "content) VALUES ($1, 'staff', $2, 'answer')",
                    conversation,
                    agent if n % 2 else other_agent,
                )
            else:
                await pool.execute(
                    "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, "
                    "content) VALUES ($1, 'customer', $2, 'question')",
                    conversation,
                    customer,
                )

    async def reader(caller: Caller, side: str) -> None:
        """Mark every message of the other side read, one call (transaction) each."""
        messages = await pool.fetch(
            "SELECT id FROM customer_messages WHERE conversation_id = ANY($1) "
            "AND sender_type = $2 ORDER BY id",
            [assigned, unassigned],
            side,
        )
        user_id, customer_id = caller.user_id, caller.customer_id
        async with pool.acquire() as conn:
            for message in messages:
                async with as_caller(conn, caller):
                    await conn.execute(
                        "SELECT mark_message_as_read($1, $2, $3)",
                        message["id"],
                        user_id,
                        customer_id,
                    )

    async def check() -> None:
        for who in ({"user": agent}, {"user": other_agent}, {"customer": customer}):
            counted, naive = await unread_and_naive(pool, **who)
            assert counted == naive, who
        async with pool.acquire() as conn:
            for staff in (agent, other_agent):
                by_counters, by_anti_join = await staff_unread_by_conversation_and_naive(
                    conn, staff
                )
                assert by_counters == by_anti_join, staff

    await asyncio.gather(*(writer(n) for n in range(6)))
    await check()

    # The same readers racing each other (duplicate marks) while writers keep writing.
    await asyncio.gather(
        *(reader(Caller.staff(agent), "customer") for _ in range(3)),
        *(reader(Caller.customer(customer), "staff") for _ in range(3)),
        reader(Caller.staff(other_agent), "customer"),
        writer(100),
        writer(101),
    )
    await check()
    receipts = await pool.fetchval(
        "SELECT count(*) FROM message_read_receipts WHERE conversation_id = ANY($1)",
        [assigned, unassigned],
    )
    distinct = await pool.fetchval(
        "SELECT count(DISTINCT (message_id, read_by_user_id, read_by_customer_id)) "
        "FROM message_read_receipts WHERE conversation_id = ANY($1)",
        [assigned, unassigned],
    )
    assert receipts == distinct > 0

    # Deleting messages (and their receipts) concurrently, then a whole conversation.
    doomed = await pool.fetch(
        "SELECT id FROM customer_messages WHERE conversation_id = ANY($1) ORDER BY created_at "
        "LIMIT 30",
        [assigned, unassigned],
    )
    await asyncio.gather(
        *(
            retrying(pool, "DELETE FROM customer_messages WHERE id = $1", row["id"])
            for row in doomed
        ),
        writer(102),
    )
    await check()
    await retrying(pool, "DELETE FROM conversations WHERE id = $1", unassigned)
    await check()
