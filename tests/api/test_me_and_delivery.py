"""What the web pages ask the API: who the token is, and each message's delivery status."""

from __future__ import annotations

import asyncpg

from tests.conftest import RunningServer, Seed

from .conftest import Http, assert_error, assert_ok


async def test_me_names_the_staff_user_or_the_customer(
    http: Http, seed: Seed, server: RunningServer
) -> None:
    user, staff = await seed.staff()
    customer, portal = await seed.customer()
    status, reply, _ = await http.call("GET", "/api/me", staff)
    assert assert_ok(status, reply) == {"kind": "staff", "userId": str(user), "customerId": None}
    status, reply, _ = await http.call("GET", "/api/me", portal)
    assert assert_ok(status, reply) == {
        "kind": "customer",
        "userId": None,
        "customerId": str(customer),
    }
    status, reply, _ = await http.call("GET", "/api/me", server.anon_key)
    assert_error(status, reply, 401, "unauthorized")
    status, reply, _ = await http.call("GET", "/api/me", server.service_key)
    assert_error(status, reply, 403, "forbidden")


async def test_history_carries_each_messages_delivery_status(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    _, staff = await seed.staff()
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    sent = []
    for text in ("one", "two", "three"):
        status, reply, _ = await http.call(
            "POST", f"/api/conversations/{conv}/messages", staff, json={"content": text}
        )
        sent.append(assert_ok(status, reply, 201)["id"])
    status, reply, _ = await http.call(
        "POST", "/api/messages/delivered", portal, json={"messageIds": [sent[1]]}
    )
    assert_ok(status, reply)
    status, reply, _ = await http.call("POST", f"/api/messages/{sent[2]}/read", portal)
    assert_ok(status, reply)
    for token in (staff, portal):
        status, reply, _ = await http.call("GET", f"/api/conversations/{conv}/messages", token)
        messages = assert_ok(status, reply)["messages"]
        assert [(m["content"], m["delivery"]) for m in messages] == [
            ("three", {"status": "read"}),
            ("two", {"status": "delivered"}),
            ("one", {"status": "sent"}),
        ]
    # A message with no recipient row (written by plain SQL with nobody assigned) has none.
    await pool.execute(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "VALUES ($1, 'customer', $2, 'unassigned')",
        conv,
        customer,
    )
    status, reply, _ = await http.call("GET", f"/api/conversations/{conv}/messages?limit=1", staff)
    newest = assert_ok(status, reply)["messages"][0]
    assert newest["content"] == "unassigned" and newest["delivery"] is None
