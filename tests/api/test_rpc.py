"""PostgREST-style RPC: the five documented functions, named JSON arguments, run as the caller."""

from __future__ import annotations

import aiohttp
import asyncpg

from tests.conftest import RunningServer, Seed, fresh_database, running_server

from .conftest import UNKNOWN, Http, assert_postgrest_error, count, insert_message

RPC = "/rest/v1/rpc/"


async def test_each_function_with_named_arguments(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, staff_token = await seed.staff()
    conv = await seed.conversation(customer)
    message = await insert_message(pool, conv, "staff", user, "hi")

    status, body, response = await http.call(
        "POST", RPC + "get_unread_message_count", portal, json={"customer_id": str(customer)}
    )
    assert (status, body) == (200, 1) and response.content_type == "application/json"
    # user_id may be given as null explicitly, as the documented call does.
    status, body, _ = await http.call(
        "POST",
        RPC + "get_unread_message_count",
        portal,
        json={"user_id": None, "customer_id": str(customer)},
    )
    assert (status, body) == (200, 1)

    # The receipt comes back as the row, PostgREST style; marking again returns the same one.
    status, receipt, _ = await http.call(
        "POST",
        RPC + "mark_message_as_read",
        portal,
        json={"message_id": str(message), "user_id": None, "customer_id": str(customer)},
    )
    assert status == 200
    assert receipt["message_id"] == str(message)
    assert receipt["read_by_customer_id"] == str(customer) and receipt["read_by_user_id"] is None
    status, again, _ = await http.call(
        "POST",
        RPC + "mark_message_as_read",
        portal,
        json={"customer_id": str(customer), "message_id": str(message)},
    )
    assert (status, again) == (200, receipt)
    status, body, _ = await http.call(
        "POST", RPC + "get_unread_message_count", portal, json={"customer_id": str(customer)}
    )
    assert (status, body) == (200, 0)

    status, row, _ = await http.call(
        "POST",
        RPC + "update_typing_indicator",
        staff_token,
        json={
            "conversation_id": str(conv),
            "user_id": str(user),
            "customer_id": None,
            "is_typing": True,
            "expires_in_seconds": 30,
        },
    )
    assert status == 200 and row["conversation_id"] == str(conv) and row["is_typing"] is True
    assert row["user_id"] == str(user) and row["customer_id"] is None
    # expires_in_seconds defaults to 5 when left out.
    status, row, _ = await http.call(
        "POST",
        RPC + "update_typing_indicator",
        portal,
        json={"conversation_id": str(conv), "customer_id": str(customer), "is_typing": True},
    )
    assert status == 200 and row["customer_id"] == str(customer)
    left = await pool.fetchval(
        "SELECT extract(epoch FROM expires_at - now()) FROM message_typing_indicators "
        "WHERE conversation_id = $1 AND customer_id = $2",
        conv,
        customer,
    )
    assert 3 < left <= 5

    status, row, _ = await http.call(
        "POST",
        RPC + "update_user_presence",
        portal,
        json={"customer_id": str(customer), "status": "away", "metadata": {"tab": 2}},
    )
    assert status == 200
    assert (row["customer_id"], row["status"], row["metadata"]) == (
        str(customer),
        "away",
        {"tab": 2},
    )

    await pool.execute(
        "UPDATE message_typing_indicators SET expires_at = now() - interval '1 second' "
        "WHERE conversation_id = $1",
        conv,
    )
    # The count is what this call deleted (the server's own sweep may have taken some first).
    status, body, _ = await http.call(
        "POST", RPC + "cleanup_expired_typing_indicators", staff_token, json={}
    )
    assert status == 200 and isinstance(body, int) and body >= 0
    assert await count(pool, "message_typing_indicators WHERE conversation_id = $1", conv) == 0
    # No body at all is an empty set of arguments.
    status, body, _ = await http.call(
        "POST", RPC + "cleanup_expired_typing_indicators", staff_token
    )
    assert status == 200 and isinstance(body, int)


async def test_functions_run_as_the_caller(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    a, token_a = await seed.customer()
    b, _ = await seed.customer()
    user, staff_token = await seed.staff()
    conv_b = await seed.conversation(b)
    message_b = await insert_message(pool, conv_b, "staff", user)

    # A customer is only ever themselves.
    status, reply, _ = await http.call(
        "POST", RPC + "get_unread_message_count", token_a, json={"customer_id": str(b)}
    )
    assert_postgrest_error(status, reply, 403, "42501", "a customer can act only as themselves")
    status, reply, _ = await http.call(
        "POST", RPC + "get_unread_message_count", token_a, json={"user_id": str(user)}
    )
    assert_postgrest_error(status, reply, 403, "42501")
    status, reply, _ = await http.call(
        "POST",
        RPC + "mark_message_as_read",
        token_a,
        json={"message_id": str(message_b), "customer_id": str(b)},
    )
    assert_postgrest_error(status, reply, 403, "42501")
    # As themselves, another customer's message is as unknown as one that does not exist.
    status, theirs, _ = await http.call(
        "POST",
        RPC + "mark_message_as_read",
        token_a,
        json={"message_id": str(message_b), "customer_id": str(a)},
    )
    assert_postgrest_error(status, theirs, 404, "P0002", f"message {message_b} not found")
    status, reply, _ = await http.call(
        "POST",
        RPC + "update_typing_indicator",
        token_a,
        json={"conversation_id": str(conv_b), "customer_id": str(a), "is_typing": True},
    )
    assert_postgrest_error(status, reply, 404, "P0002", f"conversation {conv_b} not found")
    assert await count(pool, "message_read_receipts WHERE message_id = $1", message_b) == 0
    assert await count(pool, "message_typing_indicators WHERE conversation_id = $1", conv_b) == 0

    # Staff may ask for anyone's unread count; the anon key may call nothing.
    status, body, _ = await http.call(
        "POST", RPC + "get_unread_message_count", staff_token, json={"customer_id": str(b)}
    )
    assert (status, body) == (200, 1)
    for name, args in (
        ("get_unread_message_count", {"customer_id": str(b)}),
        ("cleanup_expired_typing_indicators", {}),
        ("update_user_presence", {"customer_id": str(b), "status": "online"}),
    ):
        status, reply, _ = await http.call("POST", RPC + name, server.anon_key, json=args)
        # PostgREST: 42501 is a 401 for the anonymous role.
        assert_postgrest_error(status, reply, 401, "42501", "anonymous")
    status, reply, _ = await http.call(
        "POST", RPC + "cleanup_expired_typing_indicators", None, json={}
    )
    assert_postgrest_error(status, reply, 401, "PGRST301")
    assert await count(pool, "user_presence WHERE customer_id = $1", b) == 0


async def test_bad_calls(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    cases: list[tuple[str, object, int, str, str]] = [
        ("nope", {}, 404, "PGRST202", "function nope not found"),
        ("pg_sleep", {"seconds": 1}, 404, "PGRST202", "function pg_sleep not found"),
        (
            "get_unread_message_count",
            {"who": 1},
            400,
            "22023",
            "unknown argument(s): who",
        ),
        (
            "get_unread_message_count",
            {"customer_id": 7},
            400,
            "22023",
            "customer_id: not a UUID",
        ),
        (
            "get_unread_message_count",
            {"customer_id": "x"},
            400,
            "22023",
            "customer_id: not a UUID",
        ),
        (
            "get_unread_message_count",
            [str(customer)],
            400,
            "PGRST102",
            "object of named arguments",
        ),
        (
            "mark_message_as_read",
            {"customer_id": str(customer)},
            400,
            "22023",
            "message_id: required",
        ),
        (
            "update_typing_indicator",
            {"conversation_id": str(conv), "customer_id": str(customer), "is_typing": "yes"},
            400,
            "22023",
            "is_typing: not a boolean",
        ),
        (
            "update_typing_indicator",
            {
                "conversation_id": str(conv),
                "customer_id": str(customer),
                "is_typing": True,
                "expires_in_seconds": "5",
            },
            400,
            "22023",
            "expires_in_seconds: not an integer",
        ),
        (
            "update_typing_indicator",
            {
                "conversation_id": str(conv),
                "customer_id": str(customer),
                "is_typing": True,
                "expires_in_seconds": 2**40,
            },
            400,
            "22023",
            "expires_in_seconds: not an integer",
        ),
        (
            "update_typing_indicator",
            {
                "conversation_id": str(conv),
                "customer_id": str(customer),
                "is_typing": True,
                "expires_in_seconds": 0,
            },
            400,
            "22023",
            "expires_in_seconds must be between 1 and 3600",
        ),
        (
            "update_user_presence",
            {"customer_id": str(customer), "status": 1},
            400,
            "22023",
            "status: not a string",
        ),
        (
            "update_user_presence",
            {"customer_id": str(customer), "status": "busy"},
            400,
            "22023",
            "status must be online, away or offline",
        ),
        (
            "update_user_presence",
            {"customer_id": str(customer), "status": "online", "metadata": [1]},
            400,
            "22023",
            "metadata must be a JSON object",
        ),
        (
            "get_unread_message_count",
            {},
            400,
            "22023",
            "exactly one of user_id and customer_id",
        ),
        (
            "cleanup_expired_typing_indicators",
            {"now": True},
            400,
            "22023",
            "unknown argument(s): now",
        ),
    ]
    for name, body, expected, code, fragment in cases:
        status, reply, _ = await http.call("POST", RPC + name, portal, json=body)
        assert_postgrest_error(status, reply, expected, code, fragment)
    status, reply, _ = await http.call("POST", RPC + "get_unread_message_count", portal, data=b"{")
    assert_postgrest_error(status, reply, 400, "PGRST102", "not valid JSON")
    status, reply, _ = await http.call("GET", RPC + "get_unread_message_count", portal)
    assert_postgrest_error(status, reply, 405, "PGRST117")
    assert await count(pool, "user_presence WHERE customer_id = $1", customer) == 0
    assert await count(pool, "message_typing_indicators WHERE conversation_id = $1", conv) == 0


async def test_unknown_function_names_do_not_reach_the_database(http: Http, seed: Seed) -> None:
    _, portal = await seed.customer()
    for name in (
        "get_unread_message_count;drop",
        "GET_UNREAD_MESSAGE_COUNT",
        "rtm.claims",
        UNKNOWN,
    ):
        status, reply, _ = await http.call("POST", RPC + name, portal, json={})
        assert_postgrest_error(status, reply, 404, "PGRST202", "not found")


async def test_cleanup_deletes_only_what_the_caller_may_delete(admin_url: str) -> None:
    """A customer's cleanup deletes their own expired rows, never another customer's; staff
    delete every expired row. (A database of its own, and a server whose own expiry sweep does
    not run, so that expired rows stay until a caller cleans them up.)"""
    async with (
        fresh_database(admin_url) as url,
        running_server(url, typing_cleanup_interval=3600) as srv,
        asyncpg.create_pool(url, min_size=1, max_size=2) as pool,
        aiohttp.ClientSession() as session,
    ):
        http, seed = Http(session, srv.http_url), Seed(pool)
        a, token_a = await seed.customer()
        b, _ = await seed.customer()
        user, staff_token = await seed.staff()
        conv_a, conv_b = await seed.conversation(a), await seed.conversation(b)
        await pool.execute(
            "INSERT INTO message_typing_indicators "
            "(conversation_id, customer_id, user_id, is_typing, expires_at) VALUES "
            "($1, $2, NULL, true, now() - interval '1 minute'), "
            "($3, $4, NULL, true, now() - interval '1 minute'), "
            "($3, NULL, $5, true, now() - interval '1 minute'), "
            "($1, NULL, $5, true, now() + interval '30 seconds')",
            conv_a,
            a,
            conv_b,
            b,
            user,
        )
        cleanup = RPC + "cleanup_expired_typing_indicators"
        status, body, _ = await http.call("POST", cleanup, token_a, json={})
        assert (status, body) == (200, 1)
        remaining = "message_typing_indicators WHERE customer_id = $1"
        assert (await count(pool, remaining, a), await count(pool, remaining, b)) == (0, 1)
        status, body, _ = await http.call("POST", cleanup, staff_token, json={})
        assert (status, body) == (200, 2)
        assert await count(pool, "message_typing_indicators") == 1  # the one still typing
