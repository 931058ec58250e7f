"""The inbox's queues: GET /api/conversations filtered by status, assignee (an id, mine,
unassigned) and unread, ordered by last activity; GET /api/conversations/counts."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from tests.conftest import Seed

from .conftest import Http, assert_error, assert_ok, insert_message


async def listed(http: Http, token: str, **params: str) -> list[str]:
    """Every id the filter lists, following the cursor, in order."""
    ids: list[str] = []
    query = {"limit": "200", **params}
    for _ in range(100):
        status, reply, _ = await http.call("GET", "/api/conversations", token, params=query)
        data = assert_ok(status, reply)
        ids += [c["id"] for c in data["conversations"]]
        if data["nextCursor"] is None:
            return ids
        query["before"] = data["nextCursor"]
    raise AssertionError("pagination did not end")


async def counts(http: Http, token: str, **params: str) -> dict[str, Any]:
    status, reply, _ = await http.call("GET", "/api/conversations/counts", token, params=params)
    data: dict[str, Any] = assert_ok(status, reply)
    assert set(data) == {"status", "all", "mine", "unassigned", "unread", "byStatus"}
    return data


async def set_conversation(pool: asyncpg.Pool, conversation: uuid.UUID, **values: Any) -> None:
    for column, value in values.items():
        await pool.execute(
            f"UPDATE conversations SET {column} = $2 WHERE id = $1", conversation, value
        )


async def test_status_filter(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    by_status = {}
    for status in ("open", "pending", "resolved", "closed"):
        by_status[status] = await seed.conversation(customer)
        await set_conversation(pool, by_status[status], status=status)
    for status, conversation in by_status.items():
        assert await listed(http, portal, status=status) == [str(conversation)]
    assert len(await listed(http, portal)) == 4
    status, reply, _ = await http.call(
        "GET", "/api/conversations", portal, params={"status": "archived"}
    )
    assert_error(status, reply, 422, "validation_error", "status")


async def test_assignee_mine_unassigned_and_a_user(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    a, token_a = await seed.staff()
    b, token_b = await seed.staff()
    to_a, to_b, nobody = [await seed.conversation(customer) for _ in range(3)]
    await set_conversation(pool, to_a, assigned_user_id=a)
    await set_conversation(pool, to_b, assigned_user_id=b)

    assert await listed(http, token_a, assignee="mine") == [str(to_a)]
    assert await listed(http, token_b, assignee="mine") == [str(to_b)]
    assert await listed(http, token_b, assignee=str(a)) == [str(to_a)]
    assert await listed(http, portal, assignee="unassigned") == [str(nobody)]
    unassigned = await listed(http, token_a, assignee="unassigned")
    assert str(nobody) in unassigned and not {str(to_a), str(to_b)} & set(unassigned)
    # Combined with a status: nothing of A's is pending.
    assert await listed(http, token_a, assignee="mine", status="pending") == []

    status, reply, _ = await http.call(
        "GET", "/api/conversations", portal, params={"assignee": "mine"}
    )
    assert_error(status, reply, 422, "validation_error", "'mine' needs a staff token")
    for bad in ("me", "1234", "x" * 37):
        status, reply, _ = await http.call(
            "GET", "/api/conversations", token_a, params={"assignee": bad}
        )
        assert_error(status, reply, 422, "validation_error", "assignee")


async def test_unread_for_staff_and_customers(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    agent, staff = await seed.staff()
    unread, read, quiet = [await seed.conversation(customer) for _ in range(3)]
    for conversation in (unread, read, quiet):
        await set_conversation(pool, conversation, assigned_user_id=agent)
    await insert_message(pool, unread, "customer", customer)
    seen = await insert_message(pool, read, "customer", customer)
    await pool.execute("SELECT mark_message_as_read($1, $2, NULL)", seen, agent)
    # Staff messages: the customer has one unread in `read`, none in `unread` (read it).
    theirs = await insert_message(pool, unread, "staff", agent)
    await pool.execute("SELECT mark_message_as_read($1, NULL, $2)", theirs, customer)
    await insert_message(pool, read, "staff", agent)

    assert await listed(http, staff, assignee="mine", unread="true") == [str(unread)]
    assert set(await listed(http, staff, assignee="mine", unread="false")) == {
        str(read),
        str(quiet),
    }
    assert await listed(http, portal, unread="true") == [str(read)]
    assert set(await listed(http, portal, unread="false")) == {str(unread), str(quiet)}

    # Reading it empties the queue.
    [message] = await pool.fetch(
        "SELECT id FROM customer_messages WHERE conversation_id = $1 AND sender_type = 'customer'",
        unread,
    )
    status, reply, _ = await http.call("POST", f"/api/messages/{message['id']}/read", staff)
    assert_ok(status, reply)
    assert await listed(http, staff, assignee="mine", unread="true") == []
    status, reply, _ = await http.call(
        "GET", "/api/conversations", staff, params={"unread": "maybe"}
    )
    assert_error(status, reply, 422, "validation_error", "unread")


async def test_sorted_by_last_activity_and_paged(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    first, second, third = [await seed.conversation(customer) for _ in range(3)]
    assert await listed(http, portal) == [str(third), str(second), str(first)]
    # A message is activity: the oldest conversation comes first.
    await insert_message(pool, first, "customer", customer)
    assert await listed(http, portal) == [str(first), str(third), str(second)]
    # So is a change to the conversation (its status, through the API).
    status, reply, _ = await http.call(
        "PATCH", f"/api/conversations/{second}", portal, json={"status": "resolved"}
    )
    assert_ok(status, reply)
    order = [str(second), str(first), str(third)]
    assert await listed(http, portal) == order
    # One per page, by cursor: the same order, no duplicates or gaps.
    pages: list[str] = []
    params = {"limit": "1"}
    for _ in range(5):
        status, reply, _ = await http.call("GET", "/api/conversations", portal, params=params)
        data = assert_ok(status, reply)
        pages += [c["id"] for c in data["conversations"]]
        if data["nextCursor"] is None:
            break
        params["before"] = data["nextCursor"]
    assert pages == order


async def test_counts_per_filter(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    agent, staff = await seed.staff()
    before = await counts(http, staff)
    mine_open = await seed.conversation(customer)
    mine_pending = await seed.conversation(customer)
    unassigned = await seed.conversation(customer)
    await set_conversation(pool, mine_open, assigned_user_id=agent)
    await set_conversation(pool, mine_pending, assigned_user_id=agent, status="pending")
    await insert_message(pool, mine_open, "customer", customer)
    await insert_message(pool, unassigned, "staff", agent)

    after = await counts(http, staff)
    assert after["status"] == "open"
    assert after["mine"] == 1  # a new agent: only this test's conversations are theirs
    assert after["all"] - before["all"] == 2
    assert after["unassigned"] - before["unassigned"] == 1
    assert after["unread"] - before["unread"] == 1  # mine_open's customer message
    assert after["byStatus"]["open"] - before["byStatus"]["open"] == 2
    assert after["byStatus"]["pending"] - before["byStatus"]["pending"] == 1
    pending = await counts(http, staff, status="pending")
    assert pending["status"] == "pending" and pending["mine"] == 1

    # A customer counts their own; "mine" is a staff notion.
    theirs = await counts(http, portal)
    assert theirs == {
        "status": "open",
        "all": 2,
        "mine": None,
        "unassigned": 1,
        "unread": 1,  # the staff message in `unassigned`
        "byStatus": {"open": 2, "pending": 1, "resolved": 0, "closed": 0},
    }
    # The counts and the lists agree.
    assert len(await listed(http, portal, status="open", unread="true")) == theirs["unread"]
    assert len(await listed(http, staff, status="open", assignee="mine")) == after["mine"]
    status, reply, _ = await http.call(
        "GET", "/api/conversations/counts", staff, params={"status": "nope"}
    )
    assert_error(status, reply, 422, "validation_error", "status")


async def test_staff_lists_follow_last_activity_across_pages(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    """A staff list is cut from two walks (by message time, by updated_at): in every page
    size the order is the one of the later of the two, as a sort of all would give."""
    customer, _ = await seed.customer()
    agent, staff = await seed.staff()
    conversations = [await seed.conversation(customer) for _ in range(7)]
    for conversation in conversations:
        await set_conversation(pool, conversation, assigned_user_id=agent)
    # Activity interleaved: messages in some, later updates in others, some both.
    for i in (0, 3, 5):
        await insert_message(pool, conversations[i], "customer", customer)
    for i in (1, 3, 6):
        await set_conversation(pool, conversations[i], subject=f"s{i}")
    await insert_message(pool, conversations[6], "staff", agent)
    await set_conversation(pool, conversations[2], status="pending")
    expected = [
        str(r["id"])
        for r in await pool.fetch(
            "SELECT c.id FROM conversations c LEFT JOIN rtm.conversation_counters cc "
            "ON cc.conversation_id = c.id WHERE c.assigned_user_id = $1 "
            "ORDER BY greatest(c.updated_at, cc.last_message_at) DESC, c.id DESC",
            agent,
        )
    ]
    assert len(expected) == 7 and expected[0] == str(conversations[2])
    for limit in (1, 2, 3, 7):
        assert await listed(http, staff, assignee="mine", limit=str(limit)) == expected, limit
    assert await listed(http, staff, assignee=str(agent), limit="2") == expected
