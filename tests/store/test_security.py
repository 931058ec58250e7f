"""Row-level security, privileges and the callers of the documented functions.

Each test acts through ``as_caller`` exactly as the server does: the database role plus the
claims, in one transaction.
"""

from __future__ import annotations

import re
from uuid import uuid4

import asyncpg
import pytest

from realtime_messaging.store.caller import Caller, as_caller

from .conftest import Rows, Scene, acting, claims_json, naive_unread, pg_error

DENIED, NOT_FOUND = "42501", "P0002"

PUBLIC_TABLES = [
    "customers",
    "users",
    "conversations",
    "customer_messages",
    "message_read_receipts",
    "message_typing_indicators",
    "user_presence",
    "message_delivery_status",
    "portal_tokens",
]
COUNTER_TABLES = ["rtm.conversation_counters", "rtm.reader_counters", "rtm.staff_read_counters"]


@pytest.fixture
async def busy_scene(rows: Rows, scene: Scene) -> Scene:
    """The scene with receipts, typing and presence on both sides of both conversations."""
    call = rows.conn.execute
    await call("SELECT mark_message_as_read($1, $2, NULL)", scene.customer_message, scene.user)
    await call("SELECT mark_message_as_read($1, NULL, $2)", scene.staff_message, scene.customer)
    await call(
        "SELECT mark_message_as_read($1, NULL, $2)",
        scene.other_staff_message,
        scene.other_customer,
    )
    for conversation, customer in (
        (scene.conversation, scene.customer),
        (scene.other_conversation, scene.other_customer),
    ):
        await call("SELECT update_typing_indicator($1, NULL, $2, true)", conversation, customer)
        await call("SELECT update_typing_indicator($1, $2, NULL, true)", conversation, scene.user)
        await call("SELECT update_user_presence(NULL, $1, 'online')", customer)
    await call("SELECT update_user_presence($1, NULL, 'online')", scene.user)
    await call("SELECT update_user_presence($1, NULL, 'away')", scene.other_user)
    return scene


# Caller identity --------------------------------------------------------------------------------

IDENTITY = (
    "SELECT rtm.claims() AS claims, rtm.current_user_id() AS user_id, "
    "rtm.current_customer_id() AS customer_id, rtm.is_staff() AS is_staff, "
    "rtm.is_service() AS is_service"
)


async def test_identity_helpers_read_the_claims(conn: asyncpg.Connection, scene: Scene) -> None:
    owner = await conn.fetchrow(IDENTITY)
    assert owner["claims"] == "{}" and owner["user_id"] is None and not owner["is_staff"]

    async with as_caller(conn, Caller.staff(scene.user)):
        staff = await conn.fetchrow(IDENTITY)
    assert (staff["user_id"], staff["customer_id"], staff["is_staff"], staff["is_service"]) == (
        scene.user,
        None,
        True,
        False,
    )
    async with as_caller(conn, Caller.customer(scene.customer)):
        customer = await conn.fetchrow(IDENTITY)
    assert (customer["user_id"], customer["customer_id"], customer["is_staff"]) == (
        None,
        scene.customer,
        False,
    )
    async with as_caller(conn, Caller.service()):
        assert (await conn.fetchrow(IDENTITY))["is_service"] is True
    async with as_caller(conn, Caller.anon()):
        anon = await conn.fetchrow(IDENTITY)
    assert (anon["user_id"], anon["customer_id"], anon["is_staff"], anon["is_service"]) == (
        None,
        None,
        False,
        False,
    )


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "authenticated", "sub": "not-a-uuid"},
        {"role": "authenticated", "sub": str(uuid4())},  # no such user
        {"role": "anon", "sub": "{user}"},  # a staff sub without the authenticated role
        {"role": "authenticated", "sub": "{user}", "customer_id": "{customer}"},  # a customer
    ],
)
async def test_claims_that_do_not_make_staff(
    conn: asyncpg.Connection, scene: Scene, claims: dict[str, str]
) -> None:
    text = claims_json(claims).replace("{user}", str(scene.user))
    text = text.replace("{customer}", str(scene.customer))
    async with conn.transaction():
        await conn.execute(
            "SELECT set_config('role', 'authenticated', true), "
            "set_config('request.jwt.claims', $1, true)",
            text,
        )
        assert await conn.fetchval("SELECT rtm.is_staff()") is False


async def test_service_claims_do_not_lift_an_end_user_role(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute(
            "SELECT set_config('role', 'authenticated', true), "
            "set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true)"
        )
        assert await conn.fetchval("SELECT rtm.is_service()") is False


# Catalog-level guarantees -----------------------------------------------------------------------


async def test_row_level_security_is_enabled_but_not_forced_everywhere(
    conn: asyncpg.Connection,
) -> None:
    flags = {
        r["name"]: (r["relrowsecurity"], r["relforcerowsecurity"])
        for r in await conn.fetch(
            "SELECT c.oid::regclass::text AS name, relrowsecurity, relforcerowsecurity "
            "FROM pg_class c WHERE c.oid = ANY($1::regclass[])",
            PUBLIC_TABLES + COUNTER_TABLES,
        )
    }
    assert flags == {name: (True, False) for name in PUBLIC_TABLES + COUNTER_TABLES}


async def test_security_definer_functions_pin_their_search_path(conn: asyncpg.Connection) -> None:
    definers = await conn.fetch(
        "SELECT p.oid::regprocedure::text AS name, p.proconfig FROM pg_proc p "
        "WHERE p.prosecdef AND p.pronamespace IN ('public'::regnamespace, 'rtm'::regnamespace)"
    )
    assert len(definers) >= 10
    for row in definers:
        settings = [c for c in row["proconfig"] or [] if c.startswith("search_path=")]
        assert settings and settings[0].startswith("search_path=pg_catalog,"), row["name"]
    # Ours also put pg_temp last, so that not even relations can come from it.
    ours = {r["name"]: r["proconfig"] for r in definers if "rtm.is_staff" in r["name"]}
    assert ours == {"rtm.is_staff()": ["search_path=pg_catalog, public, pg_temp"]}


async def test_policies_evaluate_the_caller_helpers_once_per_query(
    conn: asyncpg.Connection,
) -> None:
    """Each rtm.* call in a policy sits in its own sub-SELECT, which PostgreSQL runs once."""
    policies = await conn.fetch(
        "SELECT tablename, policyname, coalesce(qual, '') || ' ' || coalesce(with_check, '') "
        "AS text FROM pg_policies WHERE schemaname IN ('public', 'rtm')"
    )
    assert len(policies) >= 30
    for policy in policies:
        for call in re.finditer(r"rtm\.\w+\(\)", policy["text"]):
            before = policy["text"][: call.start()]
            assert before.endswith("SELECT "), (policy["policyname"], policy["text"])

    scene_user = await conn.fetchval("INSERT INTO users (name) VALUES ('x') RETURNING id")
    async with as_caller(conn, Caller.staff(scene_user)):
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN SELECT * FROM customer_messages"))
    # is_staff() as an InitPlan, the customer's conversations as a hashed SubPlan: both run once
    # per query, never per row.
    row_filter = next(line for line in plan.splitlines() if "Filter:" in line)
    assert "InitPlan" in plan, plan
    assert "SubPlan" not in row_filter.replace("hashed SubPlan", ""), plan


# anon -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", PUBLIC_TABLES + COUNTER_TABLES)
async def test_anon_reads_nothing(conn: asyncpg.Connection, table: str) -> None:
    with pg_error(DENIED, match="permission denied"):
        async with as_caller(conn, Caller.anon()):
            await conn.fetch(f"SELECT * FROM {table}")


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("SELECT mark_message_as_read($1, NULL, $2)", ("staff_message", "customer")),
        ("SELECT update_typing_indicator($1, NULL, $2, true)", ("conversation", "customer")),
        ("SELECT update_user_presence(NULL, $1, 'online')", ("customer",)),
        ("SELECT get_unread_message_count(NULL, $1)", ("customer",)),
        ("SELECT cleanup_expired_typing_indicators()", ()),
    ],
)
async def test_anon_may_call_no_function(
    conn: asyncpg.Connection, scene: Scene, call: str, args: tuple[str, ...]
) -> None:
    with pg_error(DENIED, match="anonymous"):
        async with as_caller(conn, Caller.anon()):
            await conn.execute(call, *(getattr(scene, name) for name in args))


# What each caller sees --------------------------------------------------------------------------

VISIBLE = {
    "conversations": "SELECT id FROM conversations WHERE id = ANY($1)",
    "messages": "SELECT conversation_id FROM customer_messages WHERE conversation_id = ANY($1)",
    "receipts": "SELECT conversation_id FROM message_read_receipts WHERE conversation_id = ANY($1)",
    "typing": "SELECT conversation_id FROM message_typing_indicators "
    "WHERE conversation_id = ANY($1)",
    "delivery": "SELECT conversation_id FROM message_delivery_status "
    "WHERE conversation_id = ANY($1)",
    "counters": "SELECT conversation_id FROM rtm.conversation_counters "
    "WHERE conversation_id = ANY($1)",
}


@pytest.mark.parametrize("what", sorted(VISIBLE))
async def test_a_customer_sees_only_their_own_conversations(
    conn: asyncpg.Connection, busy_scene: Scene, what: str
) -> None:
    s = busy_scene
    both = [s.conversation, s.other_conversation]
    async with as_caller(conn, Caller.customer(s.customer)):
        seen = {r[0] for r in await conn.fetch(VISIBLE[what], both)}
    assert seen == {s.conversation}
    async with as_caller(conn, Caller.staff(s.other_user)):
        seen = {r[0] for r in await conn.fetch(VISIBLE[what], both)}
    assert seen == set(both)


async def test_a_customer_sees_their_own_customer_row(
    conn: asyncpg.Connection, busy_scene: Scene
) -> None:
    s = busy_scene
    query = "SELECT id FROM customers WHERE id = ANY($1)"
    async with as_caller(conn, Caller.customer(s.customer)):
        assert {r[0] for r in await conn.fetch(query, [s.customer, s.other_customer])} == {
            s.customer
        }
        readers = await conn.fetch(
            "SELECT customer_id, receipts FROM rtm.reader_counters "
            "WHERE customer_id = ANY($1) OR user_id = $2",
            [s.customer, s.other_customer],
            s.user,
        )
    assert [tuple(r) for r in readers] == [(s.customer, 1)]


async def test_a_customer_sees_the_staff_of_their_conversations(
    conn: asyncpg.Connection, rows: Rows, busy_scene: Scene
) -> None:
    s = busy_scene
    users = "SELECT id FROM users WHERE id = ANY($1)"
    presence = "SELECT coalesce(user_id, customer_id) FROM user_presence WHERE " + (
        "user_id = ANY($1) OR customer_id = ANY($1)"
    )
    everyone = [s.user, s.other_user, s.customer, s.other_customer]
    async with as_caller(conn, Caller.customer(s.customer)):
        assert {r[0] for r in await conn.fetch(users, everyone)} == {s.user}
        assert {r[0] for r in await conn.fetch(presence, everyone)} == {s.user, s.customer}
    # Writing in the conversation makes the other agent a participant too.
    await rows.message(s.conversation, "staff", s.other_user)
    async with as_caller(conn, Caller.customer(s.customer)):
        assert {r[0] for r in await conn.fetch(users, everyone)} == {s.user, s.other_user}
    async with as_caller(conn, Caller.staff(s.user)):
        assert {r[0] for r in await conn.fetch(presence, everyone)} == set(everyone)


async def test_portal_tokens_are_for_the_service_role_only(
    conn: asyncpg.Connection, rows: Rows, scene: Scene
) -> None:
    await conn.execute(
        "INSERT INTO portal_tokens (token_hash, customer_id, expires_at) "
        "VALUES ($1, $2, now() + interval '1 hour')",
        uuid4().hex,
        scene.customer,
    )
    for caller in (Caller.customer(scene.customer), Caller.staff(scene.user)):
        with pg_error(DENIED):
            async with as_caller(conn, caller):
                await conn.fetch("SELECT * FROM portal_tokens")
    async with as_caller(conn, Caller.service()):
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM portal_tokens WHERE customer_id = $1", scene.customer
            )
            == 1
        )


async def test_an_unknown_staff_sub_sees_nothing(conn: asyncpg.Connection, scene: Scene) -> None:
    async with as_caller(conn, Caller.staff(uuid4())):
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM conversations WHERE id = ANY($1)",
                [scene.conversation, scene.other_conversation],
            )
            == 0
        )
        with pg_error(DENIED, match="claims name no staff user or customer"):
            await conn.execute("SELECT get_unread_message_count($1, NULL)", scene.user)


# What each caller may write ---------------------------------------------------------------------

SEND = (
    "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
    "VALUES ($1, $2, $3, 'hi') RETURNING id"
)


async def test_a_customer_writes_only_as_themselves_in_their_conversations(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    me = Caller.customer(scene.customer)
    async with as_caller(conn, me):
        await conn.fetchval(SEND, scene.conversation, "customer", scene.customer)
    for conversation, sender_type, sender in (
        (scene.other_conversation, "customer", scene.customer),
        (scene.other_conversation, "customer", scene.other_customer),
        (scene.conversation, "staff", scene.user),
    ):
        with pg_error(DENIED, match="row-level security"):
            async with as_caller(conn, me):
                await conn.fetchval(SEND, conversation, sender_type, sender)


async def test_staff_write_messages_only_as_themselves(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    async with as_caller(conn, Caller.staff(scene.user)):
        await conn.fetchval(SEND, scene.other_conversation, "staff", scene.user)
    for sender_type, sender in (("staff", scene.other_user), ("customer", scene.customer)):
        with pg_error(DENIED, match="row-level security"):
            async with as_caller(conn, Caller.staff(scene.user)):
                await conn.fetchval(SEND, scene.conversation, sender_type, sender)


async def test_senders_edit_only_their_own_and_only_staff_remove_rows(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    # Editing is the sender's, within the window (migration 0014, tests/api/test_edits.py).
    async with as_caller(conn, Caller.customer(scene.customer)):
        assert (
            await conn.execute(
                "UPDATE customer_messages SET content = 'x' WHERE id = $1", scene.customer_message
            )
            == "UPDATE 1"
        )
    with pg_error(DENIED, match="only by its sender"):
        async with as_caller(conn, Caller.customer(scene.customer)):
            await conn.execute(
                "UPDATE customer_messages SET content = 'x' WHERE id = $1", scene.staff_message
            )
    async with as_caller(conn, Caller.customer(scene.customer)):
        assert (
            await conn.execute("DELETE FROM customer_messages WHERE id = $1", scene.staff_message)
            == "DELETE 0"
        )
    async with as_caller(conn, Caller.staff(scene.other_user)):
        assert (
            await conn.execute("DELETE FROM customer_messages WHERE id = $1", scene.staff_message)
            == "DELETE 1"
        )


async def test_a_customer_opens_and_closes_but_never_assigns_conversations(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    me = Caller.customer(scene.customer)
    open_ = "INSERT INTO conversations (customer_id, assigned_user_id) VALUES ($1, $2)"
    async with as_caller(conn, me):
        await conn.execute(open_, scene.customer, None)
        await conn.execute(
            "UPDATE conversations SET status = 'closed' WHERE id = $1", scene.conversation
        )
        assert (
            await conn.execute(
                "UPDATE conversations SET status = 'closed' WHERE id = $1",
                scene.other_conversation,
            )
            == "UPDATE 0"
        )
    for customer, user in ((scene.other_customer, None), (scene.customer, scene.user)):
        with pg_error(DENIED, match="row-level security"):
            async with as_caller(conn, me):
                await conn.execute(open_, customer, user)
    with pg_error(DENIED, match="cannot assign"):
        async with as_caller(conn, me):
            await conn.execute(
                "UPDATE conversations SET assigned_user_id = $2 WHERE id = $1",
                scene.conversation,
                scene.other_user,
            )
    async with as_caller(conn, Caller.staff(scene.other_user)):
        await conn.execute(
            "UPDATE conversations SET assigned_user_id = $2 WHERE id = $1",
            scene.conversation,
            scene.other_user,
        )


async def test_receipts_typing_and_presence_are_written_only_for_oneself(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    attempts = [
        (
            Caller.customer(scene.other_customer),
            "INSERT INTO message_read_receipts (message_id, read_by_customer_id) VALUES ($1, $2)",
            (scene.staff_message, scene.customer),
        ),
        (
            Caller.staff(scene.other_user),
            "INSERT INTO message_read_receipts (message_id, read_by_user_id) VALUES ($1, $2)",
            (scene.customer_message, scene.user),
        ),
        (
            Caller.customer(scene.customer),
            "INSERT INTO message_typing_indicators (conversation_id, customer_id) VALUES ($1, $2)",
            (scene.other_conversation, scene.other_customer),
        ),
        (
            Caller.staff(scene.other_user),
            "INSERT INTO message_typing_indicators (conversation_id, user_id) VALUES ($1, $2)",
            (scene.conversation, scene.user),
        ),
        (
            Caller.customer(scene.customer),
            "INSERT INTO user_presence (customer_id, status) VALUES ($1, 'online')",
            (scene.other_customer,),
        ),
        (
            Caller.staff(scene.other_user),
            "INSERT INTO user_presence (user_id, status) VALUES ($1, 'online')",
            (scene.user,),
        ),
    ]
    for caller, statement, args in attempts:
        with pg_error(DENIED, match="row-level security"):
            async with as_caller(conn, caller):
                await conn.execute(statement, *args)


async def test_a_recipient_acknowledges_only_their_own_delivery(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    ack = (
        "UPDATE message_delivery_status SET status = 'delivered' "
        "WHERE message_id = $1 AND recipient_id = $2"
    )
    async with as_caller(conn, Caller.customer(scene.customer)):
        assert await conn.execute(ack, scene.staff_message, scene.customer) == "UPDATE 1"
    async with as_caller(conn, Caller.staff(scene.other_user)):
        assert await conn.execute(ack, scene.customer_message, scene.user) == "UPDATE 0"
    async with as_caller(conn, Caller.staff(scene.user)):
        assert await conn.execute(ack, scene.customer_message, scene.user) == "UPDATE 1"
    # Times are the database's to set.
    with pg_error(DENIED, match="permission denied"):
        async with as_caller(conn, Caller.customer(scene.customer)):
            await conn.execute(
                "UPDATE message_delivery_status SET delivered_at = now() WHERE message_id = $1",
                scene.staff_message,
            )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE rtm.reader_counters SET receipts = 0",
        "UPDATE rtm.staff_read_counters SET receipts = 0",
        "UPDATE rtm.conversation_counters SET staff_messages = 0",
        "INSERT INTO users (name) VALUES ('me too')",
        "INSERT INTO customers (name) VALUES ('me too')",
        "UPDATE customer_messages SET created_at = now()",
    ],
)
async def test_staff_cannot_write_what_is_not_theirs(
    conn: asyncpg.Connection, scene: Scene, statement: str
) -> None:
    with pg_error(DENIED, match="permission denied"):
        async with as_caller(conn, Caller.staff(scene.user)):
            await conn.execute(statement)


# The documented functions, as each caller -------------------------------------------------------


async def test_a_customer_marks_read_only_as_themselves_in_their_conversations(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    me = Caller.customer(scene.customer)
    async with as_caller(conn, me):
        receipt = await conn.fetchrow(
            "SELECT * FROM mark_message_as_read($1, NULL, $2)", scene.staff_message, scene.customer
        )
    assert receipt["read_by_customer_id"] == scene.customer
    # Someone else's conversation: the message is as unknown as one that does not exist.
    with pg_error(NOT_FOUND, match="not found"):
        async with as_caller(conn, me):
            await conn.execute(
                "SELECT mark_message_as_read($1, NULL, $2)",
                scene.other_staff_message,
                scene.customer,
            )
    for user_id, customer_id in ((None, scene.other_customer), (scene.user, None)):
        with pg_error(DENIED, match="a customer can act only as themselves"):
            async with as_caller(conn, me):
                await conn.execute(
                    "SELECT mark_message_as_read($1, $2, $3)",
                    scene.staff_message,
                    user_id,
                    customer_id,
                )


async def test_staff_mark_read_only_as_themselves(conn: asyncpg.Connection, scene: Scene) -> None:
    async with as_caller(conn, Caller.staff(scene.other_user)):
        await conn.execute(
            "SELECT mark_message_as_read($1, $2, NULL)", scene.customer_message, scene.other_user
        )
    for user_id, customer_id in ((scene.user, None), (None, scene.customer)):
        with pg_error(DENIED, match="a staff user can act only as themselves"):
            async with as_caller(conn, Caller.staff(scene.other_user)):
                await conn.execute(
                    "SELECT mark_message_as_read($1, $2, $3)",
                    scene.staff_message,
                    user_id,
                    customer_id,
                )


async def test_unread_counts_a_customer_may_and_may_not_ask_for(
    conn: asyncpg.Connection, busy_scene: Scene
) -> None:
    s = busy_scene
    count = "SELECT get_unread_message_count($1, $2)"
    async with as_caller(conn, Caller.customer(s.customer)):
        own = await conn.fetchval(count, None, s.customer)
    assert own == await naive_unread(conn, customer=s.customer)
    for user_id, customer_id in ((None, s.other_customer), (s.user, None)):
        with pg_error(DENIED, match="a customer can act only as themselves"):
            async with as_caller(conn, Caller.customer(s.customer)):
                await conn.execute(count, user_id, customer_id)


async def test_staff_may_ask_for_anyones_unread_count(
    conn: asyncpg.Connection, busy_scene: Scene
) -> None:
    s = busy_scene
    count = "SELECT get_unread_message_count($1, $2)"
    for user_id, customer_id in ((s.user, None), (s.other_user, None), (None, s.customer)):
        async with conn.transaction(isolation="repeatable_read"):
            async with acting(conn, Caller.staff(s.user)):
                counted = await conn.fetchval(count, user_id, customer_id)
            assert counted == await naive_unread(conn, user=user_id, customer=customer_id)


async def test_typing_and_presence_are_only_ones_own(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    me = Caller.customer(scene.customer)
    async with as_caller(conn, me):
        await conn.execute(
            "SELECT update_typing_indicator($1, NULL, $2, true)", scene.conversation, scene.customer
        )
        await conn.execute("SELECT update_user_presence(NULL, $1, 'online')", scene.customer)
    async with as_caller(conn, Caller.staff(scene.other_user)):
        await conn.execute(
            "SELECT update_typing_indicator($1, $2, NULL, true)",
            scene.other_conversation,
            scene.other_user,
        )
        await conn.execute("SELECT update_user_presence($1, NULL, 'away')", scene.other_user)
    with pg_error(NOT_FOUND, match="conversation"):
        async with as_caller(conn, me):
            await conn.execute(
                "SELECT update_typing_indicator($1, NULL, $2, true)",
                scene.other_conversation,
                scene.customer,
            )
    staff = Caller.staff(scene.user)
    typing = "SELECT update_typing_indicator($1, $2, $3, true)"
    presence = "SELECT update_user_presence($1, $2, 'online')"
    forbidden = [
        (me, typing, (scene.conversation, None, scene.other_customer)),
        (me, presence, (None, scene.other_customer)),
        (staff, typing, (scene.conversation, scene.other_user, None)),
        (staff, presence, (scene.other_user, None)),
    ]
    for caller, call, args in forbidden:
        with pg_error(DENIED, match="act only as themselves"):
            async with as_caller(conn, caller):
                await conn.execute(call, *args)


async def test_cleanup_removes_what_the_caller_may_remove(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    expired = "now() - interval '1 minute'"
    async with conn.transaction():
        await conn.execute("SELECT cleanup_expired_typing_indicators()")
        await conn.execute(
            "INSERT INTO message_typing_indicators (conversation_id, customer_id, expires_at) "
            f"VALUES ($1, $2, {expired}), ($3, $4, {expired})",
            scene.conversation,
            scene.customer,
            scene.other_conversation,
            scene.other_customer,
        )
        await conn.execute(
            "INSERT INTO message_typing_indicators (conversation_id, user_id, expires_at) "
            f"VALUES ($1, $2, {expired})",
            scene.conversation,
            scene.user,
        )
        # A customer cleans up their own expired indicators only.
        async with acting(conn, Caller.customer(scene.customer)):
            assert await conn.fetchval("SELECT cleanup_expired_typing_indicators()") == 1
        # Staff clean up all the rest.
        async with acting(conn, Caller.staff(scene.other_user)):
            assert await conn.fetchval("SELECT cleanup_expired_typing_indicators()") == 2
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM message_typing_indicators WHERE expires_at <= now()"
            )
            == 0
        )


async def test_the_service_role_acts_for_anyone(conn: asyncpg.Connection, scene: Scene) -> None:
    async with as_caller(conn, Caller.service()):
        await conn.execute(
            "SELECT mark_message_as_read($1, NULL, $2)", scene.staff_message, scene.customer
        )
        await conn.execute(
            "SELECT mark_message_as_read($1, $2, NULL)", scene.customer_message, scene.other_user
        )
        await conn.execute(
            "SELECT update_typing_indicator($1, $2, NULL, false)", scene.conversation, scene.user
        )
        await conn.execute("SELECT update_user_presence(NULL, $1, 'away')", scene.customer)
        counted = await conn.fetchval("SELECT get_unread_message_count(NULL, $1)", scene.customer)
        assert counted == 0
        await conn.fetchval("SELECT cleanup_expired_typing_indicators()")
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM conversations WHERE id = ANY($1)",
                [scene.conversation, scene.other_conversation],
            )
            == 2
        )


async def test_function_results_respect_row_level_security(
    conn: asyncpg.Connection, scene: Scene
) -> None:
    """A staff user's receipt in a customer's conversation is visible to that customer."""
    async with as_caller(conn, Caller.staff(scene.user)):
        receipt = await conn.fetchrow(
            "SELECT * FROM mark_message_as_read($1, $2, NULL)", scene.customer_message, scene.user
        )
    async with as_caller(conn, Caller.customer(scene.customer)):
        seen = await conn.fetchval(
            "SELECT count(*) FROM message_read_receipts WHERE id = $1", receipt["id"]
        )
    async with as_caller(conn, Caller.customer(scene.other_customer)):
        unseen = await conn.fetchval(
            "SELECT count(*) FROM message_read_receipts WHERE id = $1", receipt["id"]
        )
    assert (seen, unseen) == (1, 0)
