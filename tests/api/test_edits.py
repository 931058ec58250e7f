"""Editing and deleting messages (issue 17, point 1): who may, until when, tombstones, and the
same rules through /rest/v1 (docs/api.md, "Editing and deleting")."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import pytest

from realtime_messaging.server.api.edits import MAX_EDIT_WINDOW_SECONDS, apply_edit_window
from tests.conftest import RunningServer, Seed, running_server

from .conftest import (
    UNKNOWN,
    Http,
    assert_error,
    assert_ok,
    assert_postgrest_error,
    count,
)

MESSAGES = "/rest/v1/customer_messages"


async def _send(http: Http, token: str, conversation: uuid.UUID, content: str, **extra: Any) -> Any:
    status, reply, _ = await http.call(
        "POST",
        f"/api/conversations/{conversation}/messages",
        token,
        json={"content": content, **extra},
    )
    return assert_ok(status, reply, 201)


async def _history(http: Http, token: str, conversation: uuid.UUID) -> list[dict[str, Any]]:
    status, reply, _ = await http.call("GET", f"/api/conversations/{conversation}/messages", token)
    messages: list[dict[str, Any]] = assert_ok(status, reply)["messages"]
    return messages


@pytest.fixture
async def closed_window(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """The window set to 0 in the database (what RTM_EDIT_WINDOW_SECONDS=0 does at start), put
    back to the default after the test."""
    await pool.execute("UPDATE rtm.message_rules SET edit_window = interval '0'")
    try:
        yield
    finally:
        await pool.execute("UPDATE rtm.message_rules SET edit_window = interval '15 minutes'")


async def test_the_sender_edits_within_the_window(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, staff = await seed.staff()
    conv = await seed.conversation(customer)
    sent = await _send(http, portal, conv, "helo", clientMessageId="c-1")
    assert sent["editedAt"] is None and sent["deletedAt"] is None
    reply_ = await _send(http, staff, conv, "hi")

    status, reply, _ = await http.call(
        "PATCH", f"/api/messages/{sent['id']}", portal, json={"content": "hello ✓"}
    )
    edited = assert_ok(status, reply)
    assert edited["content"] == "hello ✓" and edited["deletedAt"] is None
    assert datetime.fromisoformat(edited["editedAt"]) >= datetime.fromisoformat(sent["createdAt"])
    # Where, by whom and when it was written do not change.
    for key in ("id", "conversationId", "senderType", "senderId", "createdAt", "clientMessageId"):
        assert edited[key] == sent[key], key
    # History shows the edit in the message's own place.
    history = await _history(http, staff, conv)
    assert [m["id"] for m in history] == [reply_["id"], sent["id"]]
    assert history[1]["content"] == "hello ✓" and history[1]["editedAt"] == edited["editedAt"]
    assert history[0]["editedAt"] is None
    # Staff edit their own messages too.
    status, reply, _ = await http.call(
        "PATCH", f"/api/messages/{reply_['id']}", staff, json={"content": "hi!"}
    )
    assert assert_ok(status, reply)["content"] == "hi!"
    row = await pool.fetchrow(
        "SELECT content, edited_at FROM customer_messages WHERE id = $1", uuid.UUID(sent["id"])
    )
    assert row["content"] == "hello ✓" and row["edited_at"] is not None
    del user


async def test_edit_refusals(http: Http, seed: Seed, server: RunningServer) -> None:
    customer, portal = await seed.customer()
    _, stranger = await seed.customer()
    _, staff = await seed.staff()
    conv = await seed.conversation(customer)
    mine = await _send(http, portal, conv, "mine")
    theirs = await _send(http, staff, conv, "theirs")
    path = f"/api/messages/{mine['id']}"

    # Someone else's message: staff cannot rewrite a customer's words, nor the customer staff's.
    status, reply, _ = await http.call("PATCH", path, staff, json={"content": "x"})
    assert_error(status, reply, 403, "forbidden", "only by its sender")
    status, reply, _ = await http.call(
        "PATCH", f"/api/messages/{theirs['id']}", portal, json={"content": "x"}
    )
    assert_error(status, reply, 403, "forbidden", "only by its sender")
    # A message the caller cannot see, or none at all: 404 (the two are not told apart).
    for token, target in ((stranger, mine["id"]), (portal, UNKNOWN)):
        status, reply, _ = await http.call(
            "PATCH", f"/api/messages/{target}", token, json={"content": "x"}
        )
        assert_error(status, reply, 404, "not_found", "not found")
    # The service role is nobody's sender.
    status, reply, _ = await http.call("PATCH", path, server.service_key, json={"content": "x"})
    assert_error(status, reply, 403, "forbidden", "sender")
    # The same bounds as sending.
    for body, fragment in (
        ({"content": ""}, "content"),
        ({"content": " \n\t"}, "blank"),
        ({}, "content"),
        ({"content": 1}, "content"),
        ({"content": "x", "metadata": {}}, "metadata"),
    ):
        status, reply, _ = await http.call("PATCH", path, portal, json=body)
        assert_error(status, reply, 422, "validation_error", fragment)
    status, reply, _ = await http.call("PATCH", path, portal, json={"content": "é" * 32769})
    assert_error(status, reply, 413, "payload_too_large", "65536 bytes")
    status, reply, _ = await http.call("PATCH", "/api/messages/nope", portal, json={"content": "x"})
    assert_error(status, reply, 422, "validation_error", "message_id")
    status, reply, _ = await http.call("PATCH", path, json={"content": "x"})
    assert_error(status, reply, 401, "unauthorized", "Bearer")
    # Nothing changed.
    assert (await _history(http, portal, conv))[1]["content"] == "mine"


async def test_the_window_closes_edits_and_the_senders_deletes(
    http: Http, seed: Seed, closed_window: None
) -> None:
    customer, portal = await seed.customer()
    user, staff = await seed.staff()
    conv = await seed.conversation(customer)
    mine = await _send(http, portal, conv, "mine")
    own = await _send(http, staff, conv, "staff's own")
    path = f"/api/messages/{mine['id']}"
    status, reply, _ = await http.call("PATCH", path, portal, json={"content": "x"})
    assert_error(status, reply, 409, "edit_window_closed", "window")
    status, reply, _ = await http.call("DELETE", path, portal)
    assert_error(status, reply, 409, "edit_window_closed", "window")
    # Staff handling the conversation (unassigned: any agent handles it) still delete; the
    # window also closes their own edits.
    status, reply, _ = await http.call(
        "PATCH", f"/api/messages/{own['id']}", staff, json={"content": "x"}
    )
    assert_error(status, reply, 409, "edit_window_closed", "window")
    status, reply, _ = await http.call("DELETE", path, staff)
    assert assert_ok(status, reply)["deletedAt"] is not None
    del user


async def test_rtm_edit_window_seconds_is_what_the_database_enforces(
    database_url: str, seed: Seed, pool: asyncpg.Pool
) -> None:
    async with running_server(database_url, edit_window_seconds=0) as srv:
        assert await pool.fetchval("SELECT edit_window FROM rtm.message_rules") == (
            await pool.fetchval("SELECT interval '0'")
        )
        async with aiohttp.ClientSession() as session:
            http = Http(session, srv.http_url)
            customer, portal = await seed.customer()
            conv = await seed.conversation(customer)
            mine = await _send(http, portal, conv, "mine")
            status, reply, _ = await http.call(
                "PATCH", f"/api/messages/{mine['id']}", portal, json={"content": "x"}
            )
            assert_error(status, reply, 409, "edit_window_closed", "window")
    async with running_server(database_url, edit_window_seconds=900):
        assert (
            await pool.fetchval("SELECT extract(epoch FROM edit_window) FROM rtm.message_rules")
            == 900
        )
    for bad in (-1, MAX_EDIT_WINDOW_SECONDS + 1):
        with pytest.raises(ValueError, match="RTM_EDIT_WINDOW_SECONDS"):
            await apply_edit_window(pool, bad)


async def test_delete_leaves_a_tombstone_and_keeps_receipts_delivery_and_counts(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, staff = await seed.staff()
    conv = await seed.conversation(customer)
    await pool.execute("UPDATE conversations SET assigned_user_id = $2 WHERE id = $1", conv, user)
    attachments = [{"name": "a.png", "url": "https://example.com/a.png", "size": 12}]
    first = await _send(http, portal, conv, "first")
    gone = await _send(http, portal, conv, "oops", attachments=attachments)
    last = await _send(http, portal, conv, "last")
    status, reply, _ = await http.call("POST", f"/api/messages/{first['id']}/read", staff)
    assert_ok(status, reply)
    status, reply, _ = await http.call("POST", f"/api/messages/{gone['id']}/read", staff)
    assert_ok(status, reply)

    async def state() -> tuple[Any, ...]:
        status, reply, _ = await http.call("GET", "/api/unread", staff)
        unread = assert_ok(status, reply)
        receipts = await count(
            pool, "message_read_receipts WHERE message_id = $1", uuid.UUID(gone["id"])
        )
        delivery = await pool.fetch(
            "SELECT recipient_type, recipient_id, status FROM message_delivery_status "
            "WHERE message_id = $1",
            uuid.UUID(gone["id"]),
        )
        counters = await pool.fetchrow(
            "SELECT customer_messages, staff_messages FROM rtm.conversation_counters "
            "WHERE conversation_id = $1",
            conv,
        )
        return (
            [c for c in unread["conversations"] if c["conversationId"] == str(conv)],
            receipts,
            [tuple(r) for r in delivery],
            tuple(counters),
        )

    before = await state()
    assert before[0] == [{"conversationId": str(conv), "unread": 1}]  # "last" only
    assert before[1] == 1 and before[2] == [("staff", user, "read")]

    status, reply, _ = await http.call("DELETE", f"/api/messages/{gone['id']}", portal)
    tomb = assert_ok(status, reply)
    assert (tomb["content"], tomb["attachments"]) == ("", [])
    assert tomb["deletedAt"] is not None and tomb["editedAt"] is None
    for key in ("id", "conversationId", "senderType", "senderId", "createdAt"):
        assert tomb[key] == gone[key], key
    # The row and its place stay; receipts, delivery rows and counts are what they were.
    assert await state() == before
    history = await _history(http, portal, conv)
    assert [m["id"] for m in history] == [last["id"], gone["id"], first["id"]]
    assert history[1]["content"] == "" and history[1]["deletedAt"] == tomb["deletedAt"]
    assert history[1]["delivery"] == {"status": "read"}

    # A second delete answers the same tombstone; an edit of it is refused.
    status, reply, _ = await http.call("DELETE", f"/api/messages/{gone['id']}", portal)
    assert assert_ok(status, reply) == tomb
    status, reply, _ = await http.call(
        "PATCH", f"/api/messages/{gone['id']}", portal, json={"content": "back"}
    )
    assert_error(status, reply, 409, "message_deleted", "deleted")
    assert (await _history(http, portal, conv))[1] == history[1]


async def test_who_may_delete(http: Http, seed: Seed, server: RunningServer) -> None:
    customer, portal = await seed.customer()
    _, stranger = await seed.customer()
    assigned, assigned_token = await seed.staff()
    _, other_staff = await seed.staff()
    conv = await seed.conversation(customer)
    status, reply, _ = await http.call(
        "PATCH",
        f"/api/conversations/{conv}",
        assigned_token,
        json={"assignedUserId": str(assigned)},
    )
    assert_ok(status, reply)
    a = await _send(http, portal, conv, "a")
    b = await _send(http, assigned_token, conv, "b")
    c = await _send(http, portal, conv, "c")

    # Not handling the conversation (assigned to someone else): not a customer's message, nor
    # the assigned agent's.
    for target in (a, b):
        status, reply, _ = await http.call("DELETE", f"/api/messages/{target['id']}", other_staff)
        assert_error(status, reply, 403, "forbidden", "handling the conversation")
    # The customer may not delete staff's message; a stranger does not see it at all.
    status, reply, _ = await http.call("DELETE", f"/api/messages/{b['id']}", portal)
    assert_error(status, reply, 403, "forbidden", "its sender or by staff")
    status, reply, _ = await http.call("DELETE", f"/api/messages/{a['id']}", stranger)
    assert_error(status, reply, 404, "not_found", "not found")
    status, reply, _ = await http.call("DELETE", f"/api/messages/{UNKNOWN}", portal)
    assert_error(status, reply, 404, "not_found", "not found")
    # The assigned agent deletes the customer's message; the service role (an administrator's
    # back end) any.
    status, reply, _ = await http.call("DELETE", f"/api/messages/{a['id']}", assigned_token)
    assert assert_ok(status, reply)["deletedAt"] is not None
    status, reply, _ = await http.call("DELETE", f"/api/messages/{c['id']}", server.service_key)
    assert assert_ok(status, reply)["deletedAt"] is not None
    history = await _history(http, portal, conv)
    assert [(m["content"], m["deletedAt"] is not None) for m in history] == [
        ("", True),
        ("b", False),
        ("", True),
    ]


async def test_rest_v1_obeys_the_same_rules(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    user, staff = await seed.staff()
    conv = await seed.conversation(customer)
    mine = await _send(http, portal, conv, "mine")
    theirs = await _send(http, staff, conv, "theirs")
    rep = {"Prefer": "return=representation"}

    # Staff could rewrite anyone's message through /rest/v1 before migration 0014; no more.
    status, reply, _ = await http.call(
        "PATCH", MESSAGES, staff, params={"id": f"eq.{mine['id']}"}, json={"content": "hacked"}
    )
    assert_postgrest_error(status, reply, 403, "42501", "only by its sender")
    # Customers edit their own (edited_at is the database's), not staff's.
    status, reply, _ = await http.call(
        "PATCH",
        MESSAGES,
        portal,
        params={"id": f"eq.{mine['id']}", "select": "content,edited_at,deleted_at"},
        json={"content": "mine, edited"},
        headers=rep,
    )
    assert status == 200 and reply[0]["content"] == "mine, edited"
    assert reply[0]["edited_at"] is not None and reply[0]["deleted_at"] is None
    status, reply, _ = await http.call(
        "PATCH", MESSAGES, portal, params={"id": f"eq.{theirs['id']}"}, json={"content": "x"}
    )
    assert_postgrest_error(status, reply, 403, "42501", "only by its sender")
    status, reply, _ = await http.call(
        "PATCH",
        MESSAGES,
        portal,
        params={"id": f"eq.{mine['id']}"},
        json={"edited_at": "2000-01-01T00:00:00Z"},
    )
    assert_postgrest_error(status, reply, 403, "42501")  # edited_at is the database's to set
    # A delete is setting deleted_at: the database makes the tombstone and picks the time.
    status, reply, _ = await http.call(
        "PATCH",
        MESSAGES,
        portal,
        params={"id": f"eq.{mine['id']}", "select": "content,attachments,deleted_at"},
        json={"deleted_at": "2000-01-01T00:00:00Z"},
        headers=rep,
    )
    assert status == 200 and (reply[0]["content"], reply[0]["attachments"]) == ("", [])
    assert not reply[0]["deleted_at"].startswith("2000")
    # A tombstone stays one, even for staff.
    for body in ({"deleted_at": None}, {"content": "restored"}):
        status, reply, _ = await http.call(
            "PATCH", MESSAGES, staff, params={"id": f"eq.{mine['id']}"}, json=body
        )
        assert_postgrest_error(status, reply, 400, "23514", "deleted")
    assert (
        await pool.fetchval(
            "SELECT content FROM customer_messages WHERE id = $1", uuid.UUID(mine["id"])
        )
        == ""
    )
    del user


async def test_rest_v1_after_the_window(http: Http, seed: Seed, closed_window: None) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    mine = await _send(http, portal, conv, "mine")
    for body in ({"content": "late"}, {"deleted_at": "2000-01-01T00:00:00Z"}):
        status, reply, _ = await http.call(
            "PATCH", MESSAGES, portal, params={"id": f"eq.{mine['id']}"}, json=body
        )
        assert_postgrest_error(status, reply, 400, "23514", "window")
