"""Customers kept apart on every endpoint: customer A, acting on customer B's conversation,
messages and presence, gets 404 (never a hint that they exist), sees none of B's data, and
changes nothing of B's."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from tests.conftest import Seed

from .conftest import Http, assert_error, assert_ok, assert_postgrest_error, insert_message

SECRET = "b-secret-content"


async def _b_state(pool: asyncpg.Pool, conv: uuid.UUID, b: uuid.UUID) -> dict[str, Any]:
    """Everything of B's that A might change."""
    return {
        "messages": await pool.fetch(
            "SELECT id, content FROM customer_messages WHERE conversation_id = $1 ORDER BY id", conv
        ),
        "receipts": await pool.fetchval(
            "SELECT count(*) FROM message_read_receipts WHERE conversation_id = $1", conv
        ),
        "delivery": await pool.fetch(
            "SELECT message_id, status FROM message_delivery_status WHERE conversation_id = $1 "
            "ORDER BY message_id",
            conv,
        ),
        "typing": await pool.fetch(
            "SELECT customer_id, user_id, is_typing FROM message_typing_indicators "
            "WHERE conversation_id = $1 ORDER BY customer_id",
            conv,
        ),
        "presence": await pool.fetch(
            "SELECT status, metadata FROM user_presence WHERE customer_id = $1", b
        ),
        "conversations": await pool.fetchval(
            "SELECT count(*) FROM conversations WHERE customer_id = $1", b
        ),
    }


async def test_every_endpoint_keeps_customers_apart(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    a, token_a = await seed.customer()
    b, token_b = await seed.customer()
    user, _ = await seed.staff()
    conv_a, conv_b = await seed.conversation(a), await seed.conversation(b)
    await insert_message(pool, conv_a, "staff", user, "for a")
    msg_b = await insert_message(pool, conv_b, "staff", user, SECRET)
    own_b = await insert_message(pool, conv_b, "customer", b, SECRET)
    assert (await http.call("PUT", "/api/presence", token_b, json={"status": "away"}))[0] == 200
    # B is typing (for the longest a row may claim, so that the expiry sweep leaves it alone).
    await pool.execute(
        "INSERT INTO message_typing_indicators (conversation_id, customer_id, is_typing, expires_at) "
        "VALUES ($1, $2, true, now() + interval '30 seconds')",
        conv_b,
        b,
    )
    before = await _b_state(pool, conv_b, b)

    not_found: list[tuple[str, str, Any]] = [
        ("POST", "/api/messages/realtime/subscribe", {"conversationId": str(conv_b)}),
        ("POST", "/api/conversations", {"customerId": str(b)}),
        ("GET", f"/api/conversations/{conv_b}", None),
        ("POST", f"/api/conversations/{conv_b}/messages", {"content": "intrusion"}),
        ("GET", f"/api/conversations/{conv_b}/messages", None),
        ("POST", f"/api/messages/{msg_b}/read", None),
        ("POST", f"/api/messages/{own_b}/read", None),
        ("POST", "/api/messages/read", {"messageIds": [str(msg_b)]}),
        ("POST", f"/api/conversations/{conv_b}/typing", {"isTyping": True}),
        ("GET", f"/api/conversations/{conv_b}/presence", None),
        (
            "POST",
            "/rest/v1/rpc/mark_message_as_read",
            {"message_id": str(msg_b), "customer_id": str(a)},
        ),
        (
            "POST",
            "/rest/v1/rpc/update_typing_indicator",
            {"conversation_id": str(conv_b), "customer_id": str(a), "is_typing": True},
        ),
    ]
    for method, path, body in not_found:
        status, reply, _ = await http.call(method, path, token_a, json=body)
        if path.startswith("/rest/"):  # PostgREST's error shape, the function's SQLSTATE
            assert_postgrest_error(status, reply, 404, "P0002")
        else:
            assert_error(status, reply, 404, "not_found")
        assert SECRET not in str(reply) and str(b) not in str(reply), (path, reply)

    forbidden: list[tuple[str, str, Any]] = [
        ("POST", "/rest/v1/rpc/get_unread_message_count", {"customer_id": str(b)}),
        (
            "POST",
            "/rest/v1/rpc/mark_message_as_read",
            {"message_id": str(msg_b), "customer_id": str(b)},
        ),
        ("POST", "/rest/v1/rpc/update_user_presence", {"customer_id": str(b), "status": "online"}),
        (
            "POST",
            "/rest/v1/rpc/update_typing_indicator",
            {"conversation_id": str(conv_b), "customer_id": str(b), "is_typing": True},
        ),
    ]
    for method, path, body in forbidden:
        status, reply, _ = await http.call(method, path, token_a, json=body)
        assert_postgrest_error(status, reply, 403, "42501")
        assert SECRET not in str(reply)

    # Endpoints that answer, without anything of B's in the answer.
    answers: list[tuple[str, str, Any, dict[str, str] | None]] = [
        ("GET", "/api/conversations", None, {"limit": "200"}),
        ("GET", "/api/unread", None, None),
        ("GET", "/api/unread", None, {"conversationId": str(conv_b)}),
        ("GET", f"/api/conversations/{conv_a}/presence", None, None),
        ("GET", f"/api/conversations/{conv_a}/messages", None, None),
        ("PUT", "/api/presence", {"status": "online"}, None),
        ("POST", "/rest/v1/rpc/cleanup_expired_typing_indicators", {}, None),
        ("POST", "/rest/v1/rpc/get_unread_message_count", {"customer_id": str(a)}, None),
    ]
    for method, path, body, params in answers:
        status, reply, _ = await http.call(method, path, token_a, json=body, params=params)
        assert status == 200, (path, reply)
        text = str(reply)
        assert str(conv_b) not in text and str(b) not in text and SECRET not in text, (path, reply)
        assert str(msg_b) not in text and str(own_b) not in text, (path, reply)
    status, reply, _ = await http.call("GET", "/api/unread", token_a)
    assert assert_ok(status, reply) == {
        "total": 1,
        "conversations": [{"conversationId": str(conv_a), "unread": 1}],
    }
    status, reply, _ = await http.call(
        "GET", "/api/unread", token_a, params={"conversationId": str(conv_b)}
    )
    assert assert_ok(status, reply)["conversations"] == []

    # A delivered acknowledgement of B's message moves nothing of B's (whatever the status).
    status, reply, _ = await http.call(
        "POST", "/api/messages/delivered", token_a, json={"messageIds": [str(msg_b)]}
    )
    assert status in (200, 404) and str(msg_b) not in str(reply.get("data"))

    assert await _b_state(pool, conv_b, b) == before
    # And B still sees their own world unchanged.
    status, reply, _ = await http.call("GET", f"/api/conversations/{conv_b}/messages", token_b)
    assert [m["id"] for m in assert_ok(status, reply)["messages"]] == [str(own_b), str(msg_b)]


async def test_staff_see_every_customer(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    a, _ = await seed.customer()
    b, _ = await seed.customer()
    _, staff_token = await seed.staff()
    for customer in (a, b):
        conv = await seed.conversation(customer)
        await insert_message(pool, conv, "customer", customer, "hello")
        for path in (f"/api/conversations/{conv}", f"/api/conversations/{conv}/messages"):
            status, reply, _ = await http.call("GET", path, staff_token)
            assert_ok(status, reply)
        status, reply, _ = await http.call(
            "POST", f"/api/conversations/{conv}/messages", staff_token, json={"content": "hi"}
        )
        assert_ok(status, reply, 201)
