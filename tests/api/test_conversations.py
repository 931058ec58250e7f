"""Conversations: open, list by cursor (newest first, no duplicates or gaps), get."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from tests.conftest import Seed

from .conftest import UNKNOWN, Http, assert_error, assert_ok, count, insert_message

CONVERSATION_KEYS = {
    "id",
    "customerId",
    "subject",
    "status",
    "assignedUserId",
    "createdAt",
    "updatedAt",
}
#: A conversation as lists and GET show it: with its customer's name and its latest message.
ENTRY_KEYS = CONVERSATION_KEYS | {"customerName", "lastMessage"}


async def test_customer_opens_their_own(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    status, reply, _ = await http.call("POST", "/api/conversations", portal, json={"subject": "Hi"})
    data = assert_ok(status, reply, 201)
    assert set(data) == CONVERSATION_KEYS
    assert data["customerId"] == str(customer) and data["subject"] == "Hi"
    assert data["status"] == "open" and data["assignedUserId"] is None
    datetime.fromisoformat(data["createdAt"]), datetime.fromisoformat(data["updatedAt"])
    row = await pool.fetchrow("SELECT * FROM conversations WHERE id = $1", uuid.UUID(data["id"]))
    assert row["customer_id"] == customer and row["subject"] == "Hi"

    # Naming themselves is fine; no subject is fine.
    status, reply, _ = await http.call(
        "POST", "/api/conversations", portal, json={"customerId": str(customer)}
    )
    assert assert_ok(status, reply, 201)["subject"] is None
    status, reply, _ = await http.call("POST", "/api/conversations", portal)
    assert assert_ok(status, reply, 201)["customerId"] == str(customer)


async def test_customer_naming_another_customer_gets_404(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    _, portal = await seed.customer()
    other, _ = await seed.customer()
    before = await count(pool, "conversations WHERE customer_id = $1", other)
    status, theirs, _ = await http.call(
        "POST", "/api/conversations", portal, json={"customerId": str(other)}
    )
    assert_error(status, theirs, 404, "not_found", "customer not found")
    status, unknown, _ = await http.call(
        "POST", "/api/conversations", portal, json={"customerId": UNKNOWN}
    )
    assert_error(status, unknown, 404, "not_found")
    assert theirs["error"] == unknown["error"]
    assert await count(pool, "conversations WHERE customer_id = $1", other) == before


async def test_staff_open_for_a_named_customer(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, _ = await seed.customer()
    _, staff_token = await seed.staff()
    status, reply, _ = await http.call("POST", "/api/conversations", staff_token, json={})
    assert_error(status, reply, 422, "validation_error", "customerId: required for staff")
    status, reply, _ = await http.call(
        "POST", "/api/conversations", staff_token, json={"customerId": UNKNOWN}
    )
    assert_error(status, reply, 404, "not_found")
    status, reply, _ = await http.call(
        "POST",
        "/api/conversations",
        staff_token,
        json={"customerId": str(customer), "subject": "Refund"},
    )
    data = assert_ok(status, reply, 201)
    assert data["customerId"] == str(customer) and data["subject"] == "Refund"
    assert await count(pool, "conversations WHERE customer_id = $1", customer) == 1


async def test_bad_conversation_bodies(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    for body, fragment in (
        ({"subject": "x" * 501}, "subject: String should have at most 500 characters"),
        ({"subject": 5}, "subject: Input should be a valid string"),
        ({"customerId": "abc"}, "customerId: Input should be a valid UUID"),
        ({"status": "closed"}, "status: Extra inputs are not permitted"),
        ({"assignedUserId": UNKNOWN}, "assignedUserId: Extra inputs are not permitted"),
    ):
        status, reply, _ = await http.call("POST", "/api/conversations", portal, json=body)
        assert_error(status, reply, 422, "validation_error", fragment)
    status, reply, _ = await http.call("POST", "/api/conversations", portal, data=b"{'a': 1}")
    assert_error(status, reply, 400, "invalid_json", "not valid JSON")
    status, reply, _ = await http.call("POST", "/api/conversations", portal, data=b"null")
    assert_error(status, reply, 400, "invalid_body", "must be a JSON object")
    assert await count(pool, "conversations WHERE customer_id = $1", customer) == 0


async def _all_pages(http: Http, token: str, limit: int) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    params = {"limit": str(limit)}
    for _ in range(100):
        status, reply, _ = await http.call("GET", "/api/conversations", token, params=params)
        data = assert_ok(status, reply)
        assert set(data) == {"conversations", "nextCursor"}
        pages.append(data["conversations"])
        if data["nextCursor"] is None:
            return pages
        params = {"limit": str(limit), "before": data["nextCursor"]}
    raise AssertionError("pagination did not end")


async def test_list_pages_newest_first_without_duplicates_or_gaps(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    # 12 in one statement (one created_at: the id breaks ties), 5 more one by one.
    ids = [
        r["id"]
        for r in await pool.fetch(
            "INSERT INTO conversations (customer_id, subject) "
            "SELECT $1, 's' || g FROM generate_series(1, 12) g RETURNING id",
            customer,
        )
    ]
    for _ in range(5):
        ids.append(await seed.conversation(customer))
    expected = [
        str(r["id"])
        for r in await pool.fetch(
            "SELECT id FROM conversations WHERE customer_id = $1 ORDER BY created_at DESC, id DESC",
            customer,
        )
    ]
    assert len(expected) == 17
    for limit in (1, 4, 5, 17, 50):
        pages = await _all_pages(http, portal, limit)
        seen = [c["id"] for page in pages for c in page]
        assert seen == expected, limit
        assert all(len(p) == limit for p in pages[:-1]) and 0 < len(pages[-1]) <= limit
        assert all(set(c) == ENTRY_KEYS for page in pages for c in page)
    # The default page is 50; a page exactly filling the rest has no next cursor.
    status, reply, _ = await http.call("GET", "/api/conversations", portal)
    assert len(assert_ok(status, reply)["conversations"]) == 17
    status, reply, _ = await http.call("GET", "/api/conversations", portal, params={"limit": "17"})
    assert assert_ok(status, reply)["nextCursor"] is None


async def test_list_shows_a_customer_only_their_own_and_staff_everything(
    http: Http, seed: Seed
) -> None:
    a, token_a = await seed.customer()
    b, token_b = await seed.customer()
    conv_a, conv_b = await seed.conversation(a), await seed.conversation(b)
    _, staff_token = await seed.staff()
    for token, mine, theirs in ((token_a, conv_a, conv_b), (token_b, conv_b, conv_a)):
        seen = {c["id"] for page in await _all_pages(http, token, 200) for c in page}
        assert seen == {str(mine)}, (seen, theirs)
    seen = {c["id"] for page in await _all_pages(http, staff_token, 200) for c in page}
    assert {str(conv_a), str(conv_b)} <= seen


async def test_bad_list_queries(http: Http, seed: Seed) -> None:
    _, portal = await seed.customer()
    for params, fragment in (
        ({"limit": "0"}, "limit: Input should be greater than or equal to 1"),
        ({"limit": "201"}, "limit: Input should be less than or equal to 200"),
        ({"limit": "ten"}, "limit: Input should be a valid integer"),
        ({"before": "not-a-cursor"}, "cursor: not a cursor this API returned"),
        ({"before": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "cursor"),
        ({"before": base64.urlsafe_b64encode(b"2024-01-01T00:00:00|x").decode()}, "cursor"),
        ({"sort": "asc"}, "sort: Extra inputs are not permitted"),
    ):
        status, reply, _ = await http.call("GET", "/api/conversations", portal, params=params)
        assert_error(status, reply, 422, "validation_error", fragment)


async def test_forged_cursors_out_of_range_are_refused_not_crashed(http: Http, seed: Seed) -> None:
    """A cursor is client input: a well-formed one whose time PostgreSQL cannot hold is a 422."""
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    for moment in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"):
        cursor = base64.urlsafe_b64encode(f"{moment}|{uuid.uuid4()}".encode()).decode()
        for path in ("/api/conversations", f"/api/conversations/{conv}/messages"):
            status, reply, _ = await http.call("GET", path, portal, params={"before": cursor})
            assert_error(status, reply, 422, "validation_error", "cursor")


async def test_get_one_and_never_a_hint_that_anothers_exists(http: Http, seed: Seed) -> None:
    a, token_a = await seed.customer()
    b, _ = await seed.customer()
    conv_a, conv_b = await seed.conversation(a), await seed.conversation(b)
    status, reply, _ = await http.call("GET", f"/api/conversations/{conv_a}", token_a)
    data = assert_ok(status, reply)
    assert set(data) == ENTRY_KEYS and data["id"] == str(conv_a)
    assert data["customerId"] == str(a)
    assert data["customerName"] == "Customer" and data["lastMessage"] is None

    status, theirs, _ = await http.call("GET", f"/api/conversations/{conv_b}", token_a)
    assert_error(status, theirs, 404, "not_found", "conversation not found")
    status, unknown, _ = await http.call("GET", f"/api/conversations/{UNKNOWN}", token_a)
    assert_error(status, unknown, 404, "not_found")
    assert theirs["error"] == unknown["error"]
    assert str(conv_b) not in str(theirs) and str(b) not in str(theirs)

    status, reply, _ = await http.call("GET", "/api/conversations/12345", token_a)
    assert_error(status, reply, 422, "validation_error", "conversation_id: not a UUID")


async def test_staff_assign_and_change_a_conversation(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    other, other_portal = await seed.customer()
    staff, staff_token = await seed.staff()
    conv = await seed.conversation(customer)
    path = f"/api/conversations/{conv}"
    status, reply, _ = await http.call(
        "PATCH", path, staff_token, json={"assignedUserId": str(staff), "status": "pending"}
    )
    data = assert_ok(status, reply)
    assert data["assignedUserId"] == str(staff) and data["status"] == "pending"
    assert data["subject"] == "Help"  # fields not given are kept
    # Assigned: a customer message now records 'sent' for the assigned staff user.
    status, reply, _ = await http.call(
        "POST", f"{path}/messages", portal, json={"content": "anyone?"}
    )
    message = assert_ok(status, reply, 201)["id"]
    assert (
        await pool.fetchval(
            "SELECT status FROM message_delivery_status WHERE message_id = $1 AND recipient_id = $2",
            uuid.UUID(message),
            staff,
        )
        == "sent"
    )
    # The customer may change the subject and status of their own, not assign it.
    status, reply, _ = await http.call("PATCH", path, portal, json={"subject": "Order 42"})
    assert assert_ok(status, reply)["subject"] == "Order 42"
    status, reply, _ = await http.call("PATCH", path, portal, json={"assignedUserId": None})
    assert_error(status, reply, 403, "forbidden", "cannot assign")
    # Another customer learns nothing; unknown users, bad states and null status are refused.
    status, reply, _ = await http.call("PATCH", path, other_portal, json={"status": "closed"})
    assert_error(status, reply, 404, "not_found", "conversation not found")
    status, reply, _ = await http.call(
        "PATCH", path, staff_token, json={"assignedUserId": str(uuid.uuid4())}
    )
    assert_error(status, reply, 404, "not_found")
    for body, fragment in (
        ({"status": "done"}, "status"),
        ({"status": None}, "status"),
        ({"owner": "me"}, "owner"),
    ):
        status, reply, _ = await http.call("PATCH", path, staff_token, json=body)
        assert_error(status, reply, 422, "validation_error", fragment)
    # Unassigning with null.
    status, reply, _ = await http.call("PATCH", path, staff_token, json={"assignedUserId": None})
    assert assert_ok(status, reply)["assignedUserId"] is None


async def test_entries_carry_the_customers_name_and_the_latest_message(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, staff = await seed.staff()
    conv = await seed.conversation(customer)
    await insert_message(pool, conv, "customer", customer, "first")
    last = await insert_message(pool, conv, "staff", user, "latest")
    for token in (portal, staff):
        status, reply, _ = await http.call("GET", f"/api/conversations/{conv}", token)
        data = assert_ok(status, reply)
        assert data["customerName"] == "Customer"
        assert data["lastMessage"]["id"] == str(last)
        assert data["lastMessage"]["content"] == "latest"
        assert data["lastMessage"]["senderType"] == "staff"
        assert data["lastMessage"]["senderId"] == str(user)
    status, reply, _ = await http.call("GET", "/api/conversations", portal)
    [entry] = [c for c in assert_ok(status, reply)["conversations"] if c["id"] == str(conv)]
    assert entry["lastMessage"]["content"] == "latest"
    assert entry["lastMessage"]["deletedAt"] is None and entry["lastMessage"]["attachments"] == []
    # A deleted latest message says so (a list can then show it as deleted, not as empty).
    status, reply, _ = await http.call("DELETE", f"/api/messages/{last}", staff)
    assert_ok(status, reply)
    for path, pick in (
        (f"/api/conversations/{conv}", lambda d: d),
        (
            "/api/conversations",
            lambda d: next(c for c in d["conversations"] if c["id"] == str(conv)),
        ),
    ):
        status, reply, _ = await http.call("GET", path, staff)
        entry = pick(assert_ok(status, reply))
        assert entry["lastMessage"]["content"] == "" and entry["lastMessage"]["deletedAt"]
