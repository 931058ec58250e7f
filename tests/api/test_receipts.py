"""Read receipts (one and batch), unread counts, and delivered acknowledgements."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from tests.conftest import RunningServer, Seed, running_server

from .conftest import (
    UNKNOWN,
    Http,
    assert_error,
    assert_ok,
    count,
    insert_message,
    insert_messages,
)

RECEIPTS_OF = "message_read_receipts WHERE read_by_customer_id = $1"


@pytest.fixture(scope="module")
async def bulk(database_url: str) -> AsyncIterator[Http]:
    """A server whose receipt limit admits a batch of 500 (the default allows 60 a minute)."""
    async with (
        running_server(database_url, rate_read_receipts="100000/minute") as srv,
        aiohttp.ClientSession() as session,
    ):
        yield Http(session, srv.http_url)


async def test_mark_one_read_is_idempotent(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    user, _ = await seed.staff()
    conv = await seed.conversation(customer)
    message = await insert_message(pool, conv, "staff", user)
    first_read_at = None
    for _ in range(3):
        status, reply, _ = await http.call("POST", f"/api/messages/{message}/read", portal)
        assert assert_ok(status, reply) == {"messageIds": [str(message)]}
        rows = await pool.fetch(
            "SELECT read_at FROM message_read_receipts WHERE message_id = $1", message
        )
        assert len(rows) == 1
        first_read_at = first_read_at or rows[0]["read_at"]
        assert rows[0]["read_at"] == first_read_at
    assert (
        await pool.fetchval(
            "SELECT status FROM message_delivery_status WHERE message_id = $1", message
        )
        == "read"
    )


async def test_mark_one_read_refusals(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    other, _ = await seed.customer()
    user, _ = await seed.staff()
    conv = await seed.conversation(customer)
    own = await insert_message(pool, conv, "customer", customer)
    theirs = await insert_message(pool, await seed.conversation(other), "staff", user)

    status, reply, _ = await http.call("POST", f"/api/messages/{own}/read", portal)
    assert_error(
        status, reply, 422, "validation_error", "message_read_receipts_reader_is_recipient"
    )
    status, theirs_reply, _ = await http.call("POST", f"/api/messages/{theirs}/read", portal)
    assert_error(status, theirs_reply, 404, "not_found", f"message {theirs} not found")
    status, unknown_reply, _ = await http.call("POST", f"/api/messages/{UNKNOWN}/read", portal)
    assert_error(status, unknown_reply, 404, "not_found", f"message {UNKNOWN} not found")
    # The same answer, but for the id the caller sent.
    assert (
        theirs_reply["error"]["message"].replace(str(theirs), UNKNOWN)
        == (unknown_reply["error"]["message"])
    )
    status, reply, _ = await http.call("POST", "/api/messages/xyz/read", portal)
    assert_error(status, reply, 422, "validation_error", "message_id: not a UUID")
    assert await count(pool, "message_read_receipts WHERE message_id = ANY($1)", [own, theirs]) == 0


async def test_a_batch_of_500_is_one_transaction(
    bulk: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, _ = await seed.staff()
    conv = await seed.conversation(customer)
    ids = await insert_messages(pool, conv, "staff", user, 500)
    status, reply, _ = await bulk.call("GET", "/api/unread", portal)
    assert assert_ok(status, reply) == {
        "total": 500,
        "conversations": [{"conversationId": str(conv), "unread": 500}],
    }
    status, reply, _ = await bulk.call(
        "POST", "/api/messages/read", portal, json={"messageIds": [str(i) for i in ids]}
    )
    assert assert_ok(status, reply) == {"messageIds": sorted(str(i) for i in ids)}
    # One transaction: one writing transaction id and one transaction timestamp for all 500.
    row = await pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT xmin::text) AS xids, count(DISTINCT read_at) AS times "
        "FROM message_read_receipts WHERE read_by_customer_id = $1",
        customer,
    )
    assert tuple(row) == (500, 1, 1)
    assert (
        await count(
            pool, "message_delivery_status WHERE conversation_id = $1 AND status = 'read'", conv
        )
        == 500
    )
    status, reply, _ = await bulk.call("GET", "/api/unread", portal)
    assert assert_ok(status, reply) == {"total": 0, "conversations": []}
    # Marking them all again is a no-op.
    status, reply, _ = await bulk.call(
        "POST", "/api/messages/read", portal, json={"messageIds": [str(i) for i in ids]}
    )
    assert len(assert_ok(status, reply)["messageIds"]) == 500
    assert await count(pool, RECEIPTS_OF, customer) == 500


async def test_a_batch_is_all_or_nothing(bulk: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    other, _ = await seed.customer()
    user, _ = await seed.staff()
    conv = await seed.conversation(customer)
    ids = [str(i) for i in await insert_messages(pool, conv, "staff", user, 499)]
    foreign = await insert_message(pool, await seed.conversation(other), "staff", user)
    own = await insert_message(pool, conv, "customer", customer)
    for intruder, expected, code, fragment in (
        (str(foreign), 404, "not_found", f"message {foreign} not found"),
        (UNKNOWN, 404, "not_found", f"message {UNKNOWN} not found"),
        (str(own), 422, "validation_error", "reader_is_recipient"),
    ):
        for position in (0, 250, 499):
            batch = [*ids[:position], intruder, *ids[position:]]
            assert len(batch) == 500
            status, reply, _ = await bulk.call(
                "POST", "/api/messages/read", portal, json={"messageIds": batch}
            )
            assert_error(status, reply, expected, code, fragment)
            assert await count(pool, RECEIPTS_OF, customer) == 0
            assert (
                await count(
                    pool,
                    "message_delivery_status WHERE conversation_id = $1 AND status = 'read'",
                    conv,
                )
                == 0
            )
    assert await count(pool, "message_read_receipts WHERE message_id = $1", foreign) == 0


async def test_batch_input_limits(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    user, _ = await seed.staff()
    conv = await seed.conversation(customer)
    message = await insert_message(pool, conv, "staff", user)
    for body, fragment in (
        ({"messageIds": [str(uuid.uuid4()) for _ in range(501)]}, "List should have at most 500"),
        ({"messageIds": []}, "messageIds: List should have at least 1 item"),
        ({}, "messageIds: Field required"),
        ({"messageIds": ["nope"]}, "messageIds.0: Input should be a valid UUID"),
        ({"messageIds": str(message)}, "messageIds: Input should be a valid"),
        ({"messageIds": [str(message)], "all": True}, "all: Extra inputs are not permitted"),
        ({"message_ids": [str(message)]}, "message_ids: Extra inputs are not permitted"),
    ):
        for path in ("/api/messages/read", "/api/messages/delivered"):
            status, reply, _ = await http.call("POST", path, portal, json=body)
            assert_error(status, reply, 422, "validation_error", fragment)
    assert await count(pool, RECEIPTS_OF, customer) == 0
    # A repeated id counts once.
    status, reply, _ = await http.call(
        "POST", "/api/messages/read", portal, json={"messageIds": [str(message)] * 3}
    )
    assert assert_ok(status, reply) == {"messageIds": [str(message)]}
    assert await count(pool, RECEIPTS_OF, customer) == 1


async def test_unread_counts_total_and_per_conversation_go_to_zero(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, staff_token = await seed.staff()
    conv1, conv2 = await seed.conversation(customer), await seed.conversation(customer)
    first = await insert_messages(pool, conv1, "staff", user, 3)
    second = await insert_messages(pool, conv2, "staff", user, 2)
    await insert_messages(pool, conv1, "customer", customer, 4)  # own messages never count

    async def unread(token: str, conversation: uuid.UUID | None = None) -> dict:  # type: ignore[type-arg]
        params = {"conversationId": str(conversation)} if conversation else None
        status, reply, _ = await http.call("GET", "/api/unread", token, params=params)
        data = assert_ok(status, reply)
        assert set(data) == {"total", "conversations"}
        return data  # type: ignore[no-any-return]

    per_conv = sorted(
        [
            {"conversationId": str(conv1), "unread": 3},
            {"conversationId": str(conv2), "unread": 2},
        ],
        key=lambda c: c["conversationId"],
    )
    assert await unread(portal) == {"total": 5, "conversations": per_conv}
    only_conv2 = [{"conversationId": str(conv2), "unread": 2}]
    assert (await unread(portal, conv2))["conversations"] == only_conv2

    for message in first:
        status, _, _ = await http.call("POST", f"/api/messages/{message}/read", portal)
        assert status == 200
    assert await unread(portal) == {
        "total": 2,
        "conversations": [{"conversationId": str(conv2), "unread": 2}],
    }
    assert (await unread(portal, conv1))["conversations"] == []
    status, _, _ = await http.call(
        "POST", "/api/messages/read", portal, json={"messageIds": [str(m) for m in second]}
    )
    assert status == 200
    assert await unread(portal) == {"total": 0, "conversations": []}

    # Staff: the customer's four messages in conv1 are unread for this agent.
    data = await unread(staff_token, conv1)
    assert data["conversations"] == [{"conversationId": str(conv1), "unread": 4}]
    everything = await unread(staff_token)
    assert everything["total"] == sum(c["unread"] for c in everything["conversations"])

    status, reply, _ = await http.call(
        "GET", "/api/unread", portal, params={"conversationId": "nope"}
    )
    assert_error(
        status, reply, 422, "validation_error", "conversationId: Input should be a valid UUID"
    )


async def test_delivered_moves_the_callers_sent_rows_and_never_moves_read_back(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, staff_token = await seed.staff()
    conv = await seed.conversation(customer)
    sent, to_read, to_fail = await insert_messages(pool, conv, "staff", user, 3)
    status, _, _ = await http.call("POST", f"/api/messages/{to_read}/read", portal)
    assert status == 200
    await pool.execute(
        "UPDATE message_delivery_status SET status = 'failed', failed_reason = 'test' "
        "WHERE message_id = $1",
        to_fail,
    )
    ids = [str(sent), str(to_read), str(to_fail)]
    status, reply, _ = await http.call(
        "POST", "/api/messages/delivered", portal, json={"messageIds": ids}
    )
    assert sorted(assert_ok(status, reply)["messageIds"]) == sorted([str(sent), str(to_fail)])

    async def statuses() -> dict[uuid.UUID, tuple[str, bool, bool]]:
        rows = await pool.fetch(
            "SELECT message_id, status, delivered_at IS NOT NULL AS d, read_at IS NOT NULL AS r "
            "FROM message_delivery_status WHERE conversation_id = $1",
            conv,
        )
        return {r["message_id"]: (r["status"], r["d"], r["r"]) for r in rows}

    expected = {
        sent: ("delivered", True, False),
        to_read: ("read", True, True),
        to_fail: ("delivered", True, False),
    }
    assert await statuses() == expected
    # Acknowledging again changes nothing and moves nothing.
    status, reply, _ = await http.call(
        "POST", "/api/messages/delivered", portal, json={"messageIds": ids}
    )
    assert assert_ok(status, reply)["messageIds"] == []
    assert await statuses() == expected
    # The staff sender has no delivery row of their own for these: nothing moves for them.
    status, reply, _ = await http.call(
        "POST", "/api/messages/delivered", staff_token, json={"messageIds": ids}
    )
    assert assert_ok(status, reply)["messageIds"] == []
    assert await statuses() == expected


async def test_delivered_for_the_assigned_staff_user(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, staff_token = await seed.staff()
    _, bystander_token = await seed.staff()
    conv = await seed.conversation(customer)
    await pool.execute("UPDATE conversations SET assigned_user_id = $1 WHERE id = $2", user, conv)
    status, reply, _ = await http.call(
        "POST", f"/api/conversations/{conv}/messages", portal, json={"content": "help"}
    )
    message = assert_ok(status, reply, 201)["id"]
    status, reply, _ = await http.call(
        "POST", "/api/messages/delivered", bystander_token, json={"messageIds": [message]}
    )
    assert assert_ok(status, reply)["messageIds"] == []
    status, reply, _ = await http.call(
        "POST", "/api/messages/delivered", staff_token, json={"messageIds": [message]}
    )
    assert assert_ok(status, reply)["messageIds"] == [message]
    assert (
        await pool.fetchval(
            "SELECT status FROM message_delivery_status WHERE message_id = $1 "
            "AND recipient_type = 'staff' AND recipient_id = $2",
            uuid.UUID(message),
            user,
        )
        == "delivered"
    )


async def test_delivered_with_unknown_or_foreign_ids_is_refused_whole(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    """Unknown ids are a 4xx everywhere (issue 5, point 7), as they are for the read batch; a
    message of another customer is reported like one that does not exist."""
    customer, portal = await seed.customer()
    other, _ = await seed.customer()
    user, _ = await seed.staff()
    mine = await insert_message(pool, await seed.conversation(customer), "staff", user)
    theirs = await insert_message(pool, await seed.conversation(other), "staff", user)
    for intruder in (UNKNOWN, str(theirs)):
        status, reply, _ = await http.call(
            "POST", "/api/messages/delivered", portal, json={"messageIds": [str(mine), intruder]}
        )
        assert_error(status, reply, 404, "not_found", f"message {intruder} not found")
    assert (
        await count(
            pool,
            "message_delivery_status WHERE message_id = ANY($1) AND status = 'sent'",
            [mine, theirs],
        )
        == 2
    )


async def test_the_service_key_reads_nothing(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, _ = await seed.customer()
    user, _ = await seed.staff()
    message = await insert_message(pool, await seed.conversation(customer), "staff", user)
    for method, path, body in (
        ("POST", f"/api/messages/{message}/read", None),
        ("POST", "/api/messages/read", {"messageIds": [str(message)]}),
        ("POST", "/api/messages/delivered", {"messageIds": [str(message)]}),
        ("GET", "/api/unread", None),
    ):
        status, reply, _ = await http.call(method, path, server.service_key, json=body)
        assert_error(status, reply, 403, "forbidden", "staff user or a customer")
    assert await count(pool, "message_read_receipts WHERE message_id = $1", message) == 0


async def test_concurrent_overlapping_batches_neither_deadlock_nor_duplicate(
    bulk: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    user, _ = await seed.staff()
    conv = await seed.conversation(customer)
    ids = [str(i) for i in await insert_messages(pool, conv, "staff", user, 200)]
    # Overlapping batches in different orders: the server must lock in one order.
    batches = [ids[k * 30 : k * 30 + 80][:: 1 if k % 2 else -1] for k in range(6)]
    results = await asyncio.gather(
        *(bulk.call("POST", "/api/messages/read", portal, json={"messageIds": b}) for b in batches)
    )
    assert [r[0] for r in results] == [200] * 6, [r[1] for r in results]
    covered = {i for b in batches for i in b}
    assert await count(pool, RECEIPTS_OF, customer) == len(covered)
    assert await count(
        pool, "message_delivery_status WHERE conversation_id = $1 AND status = 'read'", conv
    ) == len(covered)
