"""The messaging API over a real socket: the documented shapes, isolation, idempotency, batches."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from tests.conftest import RunningServer, Seed

from .conftest import Http


async def test_documented_subscribe_request_and_response(
    http: Http, server: RunningServer, seed: Seed
) -> None:
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    body = {
        "conversationId": str(conv),
        "includePresence": True,
        "includeTyping": True,
        "includeReadReceipts": True,
    }
    status, reply, _ = await http.call("POST", "/api/messages/realtime/subscribe", token, json=body)
    assert status == 200
    assert set(reply) == {"success", "version", "timestamp", "data"}
    assert reply["success"] is True and reply["version"] == "v1"
    data = reply["data"]
    assert set(data) == {"supabaseUrl", "supabaseKey", "channels", "features", "filters"}
    assert data["supabaseUrl"] == server.http_url and data["supabaseKey"] == server.anon_key
    assert data["channels"] == [f"conversation:{conv}", f"presence:{conv}"]
    assert data["features"] == {
        "messages": True,
        "readReceipts": True,
        "typing": True,
        "presence": True,
    }
    assert data["filters"] == {
        "userId": None,
        "customerId": str(customer),
        "conversationId": str(conv),
    }

    status, reply, _ = await http.call(
        "POST", "/api/messages/realtime/subscribe", token, json={"includePresence": False}
    )
    assert reply["data"]["channels"] == [f"customer:{customer}:messages"]
    assert reply["data"]["features"]["presence"] is False

    other, _ = await seed.customer()
    status, reply, _ = await http.call(
        "POST",
        "/api/messages/realtime/subscribe",
        token,
        json={"conversationId": str(await seed.conversation(other))},
    )
    assert status == 404 and reply["success"] is False and reply["error"]["code"] == "not_found"

    status, reply, _ = await http.call(
        "DELETE",
        "/api/messages/realtime/subscribe",
        token,
        json={"channels": [f"conversation:{conv}"]},
    )
    assert status == 200
    assert reply["data"] == {
        "message": "Unsubscribed successfully",
        "channels": [f"conversation:{conv}"],
    }


async def test_customers_are_kept_apart(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    a, token_a = await seed.customer()
    b, token_b = await seed.customer()
    conv_b = await seed.conversation(b)
    msg_b = await pool.fetchval(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, 'customer', $2, 'b') RETURNING id",
        conv_b,
        b,
    )
    for method, path, body in (
        ("GET", f"/api/conversations/{conv_b}", None),
        ("GET", f"/api/conversations/{conv_b}/messages", None),
        ("POST", f"/api/conversations/{conv_b}/messages", {"content": "sneaky"}),
        ("GET", f"/api/conversations/{conv_b}/presence", None),
    ):
        status, reply, _ = await http.call(method, path, token_a, json=body)
        assert status == 404, (method, path, reply)
    status, reply, _ = await http.call("GET", "/api/conversations", token_a)
    assert all(c["customerId"] == str(a) for c in reply["data"]["conversations"])
    status, _, _ = await http.call("POST", f"/api/messages/{msg_b}/read", token_a)
    assert status in (403, 404, 422)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM customer_messages WHERE conversation_id = $1", conv_b
        )
        == 1
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM message_read_receipts WHERE message_id = $1", msg_b
        )
        == 0
    )


async def test_send_is_idempotent_under_concurrent_retries(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    body = {"content": "only once", "clientMessageId": f"c-{uuid.uuid4()}"}
    results = await asyncio.gather(
        *(
            http.call("POST", f"/api/conversations/{conv}/messages", token, json=body)
            for _ in range(8)
        )
    )
    ids = {r[1]["data"]["id"] for r in results}
    assert len(ids) == 1
    assert sorted(r[0] for r in results) == [200] * 7 + [201]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM customer_messages WHERE conversation_id = $1", conv
        )
        == 1
    )


async def test_batch_read_of_500_is_one_transaction(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    # With the default receipt limit (60 requests per minute) a batch of 500 is one request.
    await _batch_read(http, seed, pool)


async def test_a_batch_larger_than_the_receipt_limit_is_one_request(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    """The read-receipt limit (60 per minute by default) counts requests, not messages: a batch
    of 61 spends one (tests/api/test_rate_limit_doors.py refuses the request after the limit)."""
    staff, _ = await seed.staff()
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    rows = await pool.fetch(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "SELECT $1, 'staff', $2, 'm' || g FROM generate_series(1, 61) g RETURNING id",
        conv,
        staff,
    )
    ids = [str(r["id"]) for r in rows]
    status, reply, _ = await http.call(
        "POST", "/api/messages/read", token, json={"messageIds": ids}
    )
    assert status == 200, reply
    count = "SELECT count(*) FROM message_read_receipts WHERE read_by_customer_id = $1"
    assert await pool.fetchval(count, customer) == 61


async def _batch_read(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    staff, staff_token = await seed.staff()
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    ids = [
        str(r["id"])
        for r in await pool.fetch(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "SELECT $1, 'staff', $2, 'm' || g FROM generate_series(1, 500) g RETURNING id",
            conv,
            staff,
        )
    ]
    other, _ = await seed.customer()
    foreign = await pool.fetchval(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, 'staff', $2, 'x') RETURNING id",
        await seed.conversation(other),
        staff,
    )
    # All or nothing: one message of another customer fails the whole batch.
    status, reply, _ = await http.call(
        "POST", "/api/messages/read", token, json={"messageIds": [*ids[:499], str(foreign)]}
    )
    assert status == 404 and reply["error"]["code"] == "not_found", reply
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM message_read_receipts WHERE read_by_customer_id = $1", customer
        )
        == 0
    )

    status, reply, _ = await http.call("GET", "/api/unread", token)
    assert reply["data"]["total"] == 500
    status, reply, _ = await http.call(
        "POST", "/api/messages/read", token, json={"messageIds": ids}
    )
    assert status == 200 and len(reply["data"]["messageIds"]) == 500
    status, reply, _ = await http.call("GET", "/api/unread", token)
    assert reply["data"] == {"total": 0, "conversations": []}
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM message_delivery_status WHERE conversation_id = $1 AND status = 'read'",
            conv,
        )
        == 500
    )
    status, reply, _ = await http.call(
        "POST",
        "/api/messages/read",
        token,
        json={"messageIds": [str(uuid.uuid4())] * 2 + ids[:498]},
    )
    assert status == 404  # an unknown id fails the batch; the repeated one counts once


async def test_delivered_ack_moves_forward_only(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    staff, _ = await seed.staff()
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    first = await pool.fetchval(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, 'staff', $2, 'one') RETURNING id",
        conv,
        staff,
    )
    second = await pool.fetchval(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, 'staff', $2, 'two') RETURNING id",
        conv,
        staff,
    )
    await http.call("POST", f"/api/messages/{second}/read", token)
    status, reply, _ = await http.call(
        "POST", "/api/messages/delivered", token, json={"messageIds": [str(first), str(second)]}
    )
    assert status == 200 and reply["data"]["messageIds"] == [str(first)]
    rows = {
        r["message_id"]: r["status"]
        for r in await pool.fetch(
            "SELECT message_id, status FROM message_delivery_status WHERE conversation_id = $1",
            conv,
        )
    }
    assert rows == {first: "delivered", second: "read"}


async def test_bad_input_gets_a_precise_4xx_envelope(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    path = f"/api/conversations/{conv}/messages"
    cases = [
        ("POST", path, None, b"{not json", 400, "invalid_json"),
        ("POST", path, None, b"[1, 2]", 400, "invalid_body"),
        ("POST", path, {"content": "x", "extra": 1}, None, 422, "validation_error"),
        ("POST", path, {"content": 5}, None, 422, "validation_error"),
        ("POST", path, {"content": "   "}, None, 422, "validation_error"),
        ("POST", path, {"content": ""}, None, 422, "validation_error"),
        ("POST", path, {"content": "x" * (64 * 1024 + 1)}, None, 413, "payload_too_large"),
        ("POST", path, {"content": "x", "attachments": [{}] * 11}, None, 422, "validation_error"),
        (
            "POST",
            "/api/conversations/not-a-uuid/messages",
            {"content": "x"},
            None,
            422,
            "validation_error",
        ),
        (
            "POST",
            f"/api/conversations/{uuid.uuid4()}/messages",
            {"content": "x"},
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/messages/read",
            {"messageIds": [str(uuid.uuid4())] * 501},
            None,
            422,
            "validation_error",
        ),
        ("POST", "/api/messages/read", {"messageIds": ["nope"]}, None, 422, "validation_error"),
        ("PUT", "/api/presence", {"status": "busy"}, None, 422, "validation_error"),
        ("GET", "/api/conversations", None, None, 200, None),
        ("PATCH", "/api/conversations", None, None, 405, "method_not_allowed"),
        ("GET", "/api/nowhere", None, None, 404, "not_found"),
    ]
    for method, url, body, raw, expected, code in cases:
        status, reply, _ = await http.call(method, url, token, json=body, data=raw)
        assert status == expected, (method, url, status, reply)
        if code is not None:
            assert reply["success"] is False and reply["error"]["code"] == code, reply
            assert reply["error"]["message"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM customer_messages WHERE conversation_id = $1", conv
        )
        == 0
    )
    status, reply, _ = await http.call("GET", "/api/conversations", None)
    assert status == 401 and reply["error"]["code"] == "unauthorized"


async def test_admin_endpoints_need_the_service_key(
    http: Http, server: RunningServer, seed: Seed
) -> None:
    _, staff_token = await seed.staff()
    _, portal = await seed.customer()
    for token in (staff_token, portal):
        status, reply, _ = await http.call("POST", "/api/admin/users", token, json={"name": "x"})
        assert status == 403 and reply["error"]["code"] == "forbidden"
    status, _, _ = await http.call("POST", "/api/admin/users", server.anon_key, json={"name": "x"})
    assert status in (401, 403)
    status, reply, _ = await http.call(
        "POST", "/api/admin/customers", server.service_key, json={"name": "C"}
    )
    customer = reply["data"]["id"]
    status, reply, _ = await http.call(
        "POST", f"/api/admin/customers/{customer}/portal-tokens", server.service_key, json={}
    )
    assert status == 201 and reply["data"]["token"].startswith("pt_")
    token, token_id = reply["data"]["token"], reply["data"]["id"]
    assert (await http.call("GET", "/api/conversations", token))[0] == 200
    status, _, _ = await http.call(
        "DELETE", f"/api/admin/portal-tokens/{token_id}", server.service_key
    )
    assert status == 200
    status, reply, _ = await http.call("GET", "/api/conversations", token)
    assert status == 401 and "revoked" in reply["error"]["message"]
    status, _, _ = await http.call(
        "POST", f"/api/admin/users/{uuid.uuid4()}/tokens", server.service_key, json={}
    )
    assert status == 404


async def test_rpc_runs_the_documented_functions_as_the_caller(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    staff, staff_token = await seed.staff()
    a, token_a = await seed.customer()
    b, _ = await seed.customer()
    conv = await seed.conversation(a)
    msg = await pool.fetchval(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, 'staff', $2, 'hi') RETURNING id",
        conv,
        staff,
    )
    status, body, _ = await http.call(
        "POST", "/rest/v1/rpc/get_unread_message_count", token_a, json={"customer_id": str(a)}
    )
    assert (status, body) == (200, 1)
    status, body, _ = await http.call(
        "POST", "/rest/v1/rpc/get_unread_message_count", token_a, json={"customer_id": str(b)}
    )
    assert status == 403
    status, _, _ = await http.call(
        "POST",
        "/rest/v1/rpc/mark_message_as_read",
        token_a,
        json={"message_id": str(msg), "customer_id": str(a)},
    )
    assert status == 200
    status, body, _ = await http.call(
        "POST", "/rest/v1/rpc/get_unread_message_count", token_a, json={"customer_id": str(a)}
    )
    assert body == 0
    status, body, _ = await http.call(
        "POST",
        "/rest/v1/rpc/update_typing_indicator",
        staff_token,
        json={"conversation_id": str(conv), "user_id": str(staff), "is_typing": True},
    )
    assert status == 200
    assert (
        await http.call(
            "POST", "/rest/v1/rpc/cleanup_expired_typing_indicators", staff_token, json={}
        )
    )[0] == 200
    assert (await http.call("POST", "/rest/v1/rpc/nope", staff_token, json={}))[0] == 404
    assert (
        await http.call(
            "POST", "/rest/v1/rpc/get_unread_message_count", staff_token, json={"who": 1}
        )
    )[0] == 400
    assert (
        await http.call(
            "POST", "/rest/v1/rpc/get_unread_message_count", staff_token, json={"user_id": 7}
        )
    )[0] == 400
