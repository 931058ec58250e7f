"""Messages: send (the documented MessageEvent fields), idempotent retries, history by cursor."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from tests.conftest import RunningServer, Seed

from .conftest import UNKNOWN, Http, assert_error, assert_ok, count, insert_messages

# The documented MessageEvent, plus the client message id of the idempotent send and the times
# of an edit and a delete (docs/api.md, "Editing and deleting").
MESSAGE_KEYS = [
    "id",
    "conversationId",
    "content",
    "senderType",
    "senderId",
    "createdAt",
    "attachments",
    "clientMessageId",
    "editedAt",
    "deletedAt",
]


async def test_send_returns_the_documented_message_event(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, staff_token = await seed.staff()
    conv = await seed.conversation(customer)
    path = f"/api/conversations/{conv}/messages"
    attachments = [{"name": "a.png", "url": "https://example.com/a.png", "size": 12}]
    status, reply, _ = await http.call(
        "POST", path, portal, json={"content": "Hello ✓", "attachments": attachments}
    )
    data = assert_ok(status, reply, 201)
    assert list(data) == MESSAGE_KEYS
    uuid.UUID(data["id"])
    assert data["conversationId"] == str(conv)
    assert data["content"] == "Hello ✓"
    assert (data["senderType"], data["senderId"]) == ("customer", str(customer))
    assert datetime.fromisoformat(data["createdAt"]).tzinfo is not None
    assert data["attachments"] == attachments and data["clientMessageId"] is None
    row = await pool.fetchrow(
        "SELECT * FROM customer_messages WHERE id = $1", uuid.UUID(data["id"])
    )
    assert (row["sender_type"], row["sender_id"], row["content"]) == (
        "customer",
        customer,
        "Hello ✓",
    )

    status, reply, _ = await http.call("POST", path, staff_token, json={"content": "Hi there"})
    data = assert_ok(status, reply, 201)
    assert (data["senderType"], data["senderId"]) == ("staff", str(user))
    assert data["attachments"] == []
    # A staff message records 'sent' for the conversation's customer.
    assert (
        await pool.fetchval(
            "SELECT status FROM message_delivery_status WHERE message_id = $1 "
            "AND recipient_type = 'customer' AND recipient_id = $2",
            uuid.UUID(data["id"]),
            customer,
        )
        == "sent"
    )


async def test_content_limits(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    path = f"/api/conversations/{conv}/messages"
    # 64 KiB exactly is accepted, one byte more is 413; the limit counts UTF-8 bytes.
    status, reply, _ = await http.call("POST", path, portal, json={"content": "x" * 65536})
    assert len(assert_ok(status, reply, 201)["content"]) == 65536
    for content in ("x" * 65537, "é" * 32769):
        status, reply, _ = await http.call("POST", path, portal, json={"content": content})
        assert_error(status, reply, 413, "payload_too_large", "content is over 65536 bytes")
    # Ten attachments are fine, eleven are not.
    status, reply, _ = await http.call(
        "POST", path, portal, json={"content": "x", "attachments": [{"n": i} for i in range(10)]}
    )
    assert len(assert_ok(status, reply, 201)["attachments"]) == 10
    status, reply, _ = await http.call(
        "POST", path, portal, json={"content": "x", "attachments": [{"n": i} for i in range(11)]}
    )
    assert_error(
        status, reply, 422, "validation_error", "attachments: List should have at most 10 items"
    )
    assert await count(pool, "customer_messages WHERE conversation_id = $1", conv) == 2


async def test_a_retry_with_the_same_client_message_id_returns_the_first(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    path = f"/api/conversations/{conv}/messages"
    body = {"content": "once", "clientMessageId": "client-1"}
    status, first, _ = await http.call("POST", path, portal, json=body)
    created = assert_ok(status, first, 201)
    assert created["clientMessageId"] == "client-1"
    for _ in range(3):
        status, again, _ = await http.call("POST", path, portal, json=body)
        assert assert_ok(status, again, 200) == created
    # A retry is recognised by its id even if the client changed the content in between.
    status, again, _ = await http.call(
        "POST", path, portal, json={"content": "changed", "clientMessageId": "client-1"}
    )
    assert assert_ok(status, again, 200)["id"] == created["id"]
    assert await count(pool, "customer_messages WHERE conversation_id = $1", conv) == 1

    # Another sender's identical client id is another message.
    _, staff_token = await seed.staff()
    status, reply, _ = await http.call("POST", path, staff_token, json=body)
    assert assert_ok(status, reply, 201)["id"] != created["id"]
    # The same client id in another conversation of the same sender is a conflict.
    other_conv = await seed.conversation(customer)
    status, reply, _ = await http.call(
        "POST", f"/api/conversations/{other_conv}/messages", portal, json=body
    )
    assert_error(status, reply, 409, "conflict", "clientMessageId")
    assert await count(pool, "customer_messages WHERE conversation_id = $1", other_conv) == 0


async def test_concurrent_retries_write_exactly_one_row(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    path = f"/api/conversations/{conv}/messages"
    for attempt in range(3):
        body = {"content": f"race {attempt}", "clientMessageId": f"race-{uuid.uuid4()}"}
        results = await asyncio.gather(
            *(http.call("POST", path, portal, json=body) for _ in range(10))
        )
        statuses = sorted(r[0] for r in results)
        assert statuses == [200] * 9 + [201], [r[1] for r in results]
        assert len({r[1]["data"]["id"] for r in results}) == 1
        assert (
            await count(
                pool,
                "customer_messages WHERE conversation_id = $1 AND client_message_id = $2",
                conv,
                body["clientMessageId"],
            )
            == 1
        )
    assert await count(pool, "customer_messages WHERE conversation_id = $1", conv) == 3


async def _history(
    http: Http, token: str, conv: uuid.UUID, limit: int
) -> tuple[list[dict[str, Any]], int]:
    messages: list[dict[str, Any]] = []
    params = {"limit": str(limit)}
    for pages in range(1, 200):
        status, reply, _ = await http.call(
            "GET", f"/api/conversations/{conv}/messages", token, params=params
        )
        data = assert_ok(status, reply)
        assert set(data) == {"messages", "nextCursor"}
        assert len(data["messages"]) <= limit
        messages += data["messages"]
        if data["nextCursor"] is None:
            return messages, pages
        params = {"limit": str(limit), "before": data["nextCursor"]}
    raise AssertionError("pagination did not end")


async def test_history_pages_newest_first_without_duplicates_or_gaps(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, staff_token = await seed.staff()
    conv = await seed.conversation(customer)
    await insert_messages(pool, conv, "staff", user, 30)
    for i in range(3):
        status, _, _ = await http.call(
            "POST", f"/api/conversations/{conv}/messages", portal, json={"content": f"c{i}"}
        )
        assert status == 201
    # Two rows written in one statement with one old time: the server gives each its own time,
    # in commit order (migration 0008), and the cursor must not skip one.
    await pool.execute(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content, created_at) "
        "SELECT $1, 'staff', $2, 'tie' || g, '2000-01-01T00:00:00Z' FROM generate_series(1, 2) g",
        conv,
        user,
    )
    expected = [
        str(r["id"])
        for r in await pool.fetch(
            "SELECT id FROM customer_messages WHERE conversation_id = $1 "
            "ORDER BY created_at DESC, id DESC",
            conv,
        )
    ]
    assert len(expected) == 35
    for limit in (1, 2, 7, 35, 200):
        for token in (portal, staff_token):
            messages, pages = await _history(http, token, conv, limit)
            assert [m["id"] for m in messages] == expected, limit
            assert pages == -(-35 // limit)
            assert all(list(m) == [*MESSAGE_KEYS, "delivery"] for m in messages)
    newest, _ = await _history(http, portal, conv, 3)
    assert [m["content"] for m in newest[:3]] == ["tie2", "tie1", "c2"]


async def test_history_of_an_empty_conversation(http: Http, seed: Seed) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    status, reply, _ = await http.call("GET", f"/api/conversations/{conv}/messages", portal)
    assert assert_ok(status, reply) == {"messages": [], "nextCursor": None}


async def test_a_customer_cannot_send_into_or_read_anothers_conversation(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    _, portal = await seed.customer()
    other, _ = await seed.customer()
    user, _ = await seed.staff()
    theirs = await seed.conversation(other)
    await insert_messages(pool, theirs, "staff", user, 2)
    path = f"/api/conversations/{theirs}/messages"
    status, reply, _ = await http.call("POST", path, portal, json={"content": "sneaky"})
    assert_error(status, reply, 404, "not_found", "conversation not found")
    status, reply, _ = await http.call(
        "POST", path, portal, json={"content": "sneaky", "clientMessageId": "k"}
    )
    assert_error(status, reply, 404, "not_found", "conversation not found")
    status, reply, _ = await http.call("GET", path, portal)
    assert_error(status, reply, 404, "not_found", "conversation not found")
    assert "m1" not in str(reply)
    status, unknown, _ = await http.call("GET", f"/api/conversations/{UNKNOWN}/messages", portal)
    assert unknown["error"] == reply["error"]
    assert await count(pool, "customer_messages WHERE conversation_id = $1", theirs) == 2


async def test_the_service_key_sends_no_messages(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    status, reply, _ = await http.call(
        "POST", f"/api/conversations/{conv}/messages", server.service_key, json={"content": "x"}
    )
    assert_error(status, reply, 403, "forbidden", "staff user or a customer")
    assert await count(pool, "customer_messages WHERE conversation_id = $1", conv) == 0


async def test_sending_stops_the_senders_typing(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    typing = (
        "message_typing_indicators WHERE conversation_id = $1 AND customer_id = $2 "
        "AND is_typing AND expires_at > now()"
    )
    status, _, _ = await http.call(
        "POST", f"/api/conversations/{conv}/typing", portal, json={"isTyping": True}
    )
    assert status == 200
    assert await count(pool, typing, conv, customer) == 1
    status, _, _ = await http.call(
        "POST", f"/api/conversations/{conv}/messages", portal, json={"content": "done"}
    )
    assert status == 201
    # Stopped at once, not after the 5 s expiry (the cleanup sweep may delete the row).
    assert await count(pool, typing, conv, customer) == 0
