"""Typing indicators, the caller's presence, and the presence of a conversation's participants."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from tests.conftest import Seed

from .conftest import UNKNOWN, Http, assert_error, assert_ok, count, insert_message

PRESENCE_KEYS = ["id", "userId", "customerId", "status", "lastSeenAt", "metadata"]


async def test_typing_starts_expires_in_five_seconds_and_stops(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, staff_token = await seed.staff()
    conv = await seed.conversation(customer)
    path = f"/api/conversations/{conv}/typing"
    for token, column, who in ((portal, "customer_id", customer), (staff_token, "user_id", user)):
        status, reply, _ = await http.call("POST", path, token, json={"isTyping": True})
        assert assert_ok(status, reply) == {"conversationId": str(conv), "isTyping": True}
        row = await pool.fetchrow(
            "SELECT is_typing, extract(epoch FROM expires_at - now()) AS left "
            f"FROM message_typing_indicators WHERE conversation_id = $1 AND {column} = $2",
            conv,
            who,
        )
        assert row["is_typing"] is True and 3 < row["left"] <= 5
        status, reply, _ = await http.call("POST", path, token, json={"isTyping": False})
        assert assert_ok(status, reply) == {"conversationId": str(conv), "isTyping": False}
        # Stopped: the row stays with is_typing false and expired, until the server's cleanup
        # sweep (every 0.5 s in the tests) deletes it; either way nobody is typing.
        row = await pool.fetchrow(
            "SELECT is_typing, expires_at <= now() AS over FROM message_typing_indicators "
            f"WHERE conversation_id = $1 AND {column} = $2",
            conv,
            who,
        )
        assert row is None or (row["is_typing"] is False and row["over"] is True)
    assert (
        await count(
            pool,
            "message_typing_indicators WHERE conversation_id = $1 AND is_typing "
            "AND expires_at > now()",
            conv,
        )
        == 0
    )


async def test_typing_refusals(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    other, _ = await seed.customer()
    conv, theirs = await seed.conversation(customer), await seed.conversation(other)
    status, reply, _ = await http.call(
        "POST", f"/api/conversations/{theirs}/typing", portal, json={"isTyping": True}
    )
    assert_error(status, reply, 404, "not_found", f"conversation {theirs} not found")
    status, reply, _ = await http.call(
        "POST", f"/api/conversations/{UNKNOWN}/typing", portal, json={"isTyping": True}
    )
    assert_error(status, reply, 404, "not_found", f"conversation {UNKNOWN} not found")
    status, reply, _ = await http.call(
        "POST", "/api/conversations/nope/typing", portal, json={"isTyping": True}
    )
    assert_error(status, reply, 422, "validation_error", "conversation_id: not a UUID")
    for body, fragment in (
        ({}, "isTyping: Field required"),
        ({"isTyping": None}, "isTyping: Input should be a valid boolean"),
        ({"isTyping": "maybe"}, "isTyping: Input should be a valid boolean"),
        ({"isTyping": True, "seconds": 9}, "seconds: Extra inputs are not permitted"),
    ):
        status, reply, _ = await http.call(
            "POST", f"/api/conversations/{conv}/typing", portal, json=body
        )
        assert_error(status, reply, 422, "validation_error", fragment)
    assert (
        await count(
            pool, "message_typing_indicators WHERE conversation_id = ANY($1)", [conv, theirs]
        )
        == 0
    )


async def test_set_own_presence(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    user, staff_token = await seed.staff()
    status, reply, _ = await http.call(
        "PUT", "/api/presence", portal, json={"status": "online", "metadata": {"device": "web"}}
    )
    data = assert_ok(status, reply)
    assert list(data) == PRESENCE_KEYS
    assert (data["userId"], data["customerId"]) == (None, str(customer))
    assert data["status"] == "online" and data["metadata"] == {"device": "web"}
    seen = datetime.fromisoformat(data["lastSeenAt"])
    # No metadata keeps the stored metadata; last seen moves on.
    status, reply, _ = await http.call("PUT", "/api/presence", portal, json={"status": "away"})
    again = assert_ok(status, reply)
    assert again["id"] == data["id"] and again["status"] == "away"
    assert again["metadata"] == {"device": "web"}
    assert datetime.fromisoformat(again["lastSeenAt"]) >= seen
    status, reply, _ = await http.call(
        "PUT", "/api/presence", portal, json={"status": "offline", "metadata": {}}
    )
    assert assert_ok(status, reply)["metadata"] == {}
    assert await count(pool, "user_presence WHERE customer_id = $1", customer) == 1

    status, reply, _ = await http.call(
        "PUT", "/api/presence", staff_token, json={"status": "online"}
    )
    data = assert_ok(status, reply)
    assert (data["userId"], data["customerId"], data["metadata"]) == (str(user), None, {})


async def test_bad_presence(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    for body, fragment in (
        ({"status": "busy"}, "status: Input should be 'online', 'away' or 'offline'"),
        ({}, "status: Field required"),
        ({"status": "online", "metadata": [1]}, "metadata: Input should be"),
        ({"status": "online", "metadata": "x"}, "metadata: Input should be"),
        ({"status": "online", "lastSeenAt": "now"}, "lastSeenAt: Extra inputs are not permitted"),
    ):
        status, reply, _ = await http.call("PUT", "/api/presence", portal, json=body)
        assert_error(status, reply, 422, "validation_error", fragment)
    status, reply, _ = await http.call("POST", "/api/presence", portal, json={"status": "online"})
    assert_error(status, reply, 405, "method_not_allowed")
    assert await count(pool, "user_presence WHERE customer_id = $1", customer) == 0


async def test_presence_of_a_conversations_participants(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    other, other_portal = await seed.customer()
    assigned, assigned_token = await seed.staff()
    writer, writer_token = await seed.staff()
    _, bystander_token = await seed.staff()
    conv = await seed.conversation(customer)
    other_conv = await seed.conversation(other)
    await pool.execute(
        "UPDATE conversations SET assigned_user_id = $1 WHERE id = $2", assigned, conv
    )
    await insert_message(pool, conv, "staff", writer)
    # The other customer writes in their own conversation too, and is online.
    await insert_message(pool, other_conv, "customer", other)
    for token, state in (
        (portal, "online"),
        (other_portal, "online"),
        (assigned_token, "away"),
        (writer_token, "online"),
        (bystander_token, "online"),
    ):
        status, _, _ = await http.call("PUT", "/api/presence", token, json={"status": state})
        assert status == 200

    expected = {
        (None, str(customer), "online"),
        (str(assigned), None, "away"),
        (str(writer), None, "online"),
    }
    for token in (portal, assigned_token, bystander_token):
        status, reply, _ = await http.call("GET", f"/api/conversations/{conv}/presence", token)
        data = assert_ok(status, reply)
        assert list(data) == ["conversationId", "participants"]
        assert data["conversationId"] == str(conv)
        assert all(list(p) == PRESENCE_KEYS for p in data["participants"])
        got = {(p["userId"], p["customerId"], p["status"]) for p in data["participants"]}
        assert got == expected
        assert str(other) not in str(reply)

    status, reply, _ = await http.call("GET", f"/api/conversations/{other_conv}/presence", portal)
    assert_error(status, reply, 404, "not_found", "conversation not found")
    status, unknown, _ = await http.call("GET", f"/api/conversations/{UNKNOWN}/presence", portal)
    assert unknown["error"] == reply["error"]
    status, reply, _ = await http.call("GET", "/api/conversations/1/presence", portal)
    assert_error(status, reply, 422, "validation_error", "conversation_id: not a UUID")
