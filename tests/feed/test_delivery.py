"""Every committed change reaches subscribers, in the shape the official clients expect."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from tests.conftest import RunningServer, Seed

from .conftest import is_change, subscribe

ALL_TABLES = [
    "conversations",
    "customer_messages",
    "message_read_receipts",
    "message_typing_indicators",
    "user_presence",
    "message_delivery_status",
]


def _binding(table: str, event: str = "*", filter_: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"event": event, "schema": "public", "table": table}
    if filter_ is not None:
        b["filter"] = filter_
    return b


async def test_plain_sql_inserts_updates_and_deletes_reach_staff(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    staff, staff_token = await seed.staff()
    customer, _ = await seed.customer()
    sock, reply = await subscribe(
        server.ws_url, staff_token, "feed-all", [_binding(t) for t in ALL_TABLES]
    )
    ids = {e["table"]: e["id"] for e in reply["response"]["postgres_changes"]}
    try:
        conv = await seed.conversation(customer)
        got = await sock.expect(is_change("conversations", "INSERT"))
        payload = got["payload"]
        assert got["ref"] is None
        assert payload["ids"] == [ids["conversations"]]
        data = payload["data"]
        assert data["schema"] == "public" and data["errors"] is None
        assert data["record"]["id"] == str(conv) and "old_record" not in data
        assert {"name": "customer_id", "type": "uuid"} in data["columns"]
        assert data["commit_timestamp"].endswith("Z") and "T" in data["commit_timestamp"]
        assert isinstance(data["position"], int)

        msg = await pool.fetchval(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'staff', $2, 'hello') RETURNING id",
            conv,
            staff,
        )
        inserted = (await sock.expect(is_change("customer_messages", "INSERT")))["payload"]["data"]
        assert inserted["record"]["content"] == "hello"
        # The staff message recorded 'sent' for the customer: delivery status arrives too.
        status = (await sock.expect(is_change("message_delivery_status", "INSERT")))["payload"][
            "data"
        ]
        assert status["record"]["status"] == "sent" and status["record"]["message_id"] == str(msg)

        await pool.execute("UPDATE customer_messages SET content = 'edited' WHERE id = $1", msg)
        updated = (await sock.expect(is_change("customer_messages", "UPDATE")))["payload"]["data"]
        assert (
            updated["record"]["content"] == "edited" and updated["old_record"]["content"] == "hello"
        )

        await pool.execute("SELECT mark_message_as_read($1, NULL, $2)", msg, customer)
        receipt = (await sock.expect(is_change("message_read_receipts", "INSERT")))["payload"][
            "data"
        ]
        assert receipt["record"]["read_by_customer_id"] == str(customer)
        read = (await sock.expect(is_change("message_delivery_status", "UPDATE")))["payload"][
            "data"
        ]
        assert read["record"]["status"] == "read"

        await pool.execute("SELECT update_typing_indicator($1, $2, NULL, true, 5)", conv, staff)
        typing = (await sock.expect(is_change("message_typing_indicators")))["payload"]["data"]
        assert typing["record"]["is_typing"] is True

        await pool.execute("SELECT update_user_presence(NULL, $1, 'online', '{}'::jsonb)", customer)
        presence = (await sock.expect(is_change("user_presence")))["payload"]["data"]
        assert presence["record"]["status"] == "online"

        await pool.execute("DELETE FROM customer_messages WHERE id = $1", msg)
        deleted = (await sock.expect(is_change("customer_messages", "DELETE")))["payload"]["data"]
        assert deleted["old_record"]["id"] == str(msg) and "record" not in deleted
    finally:
        await sock.close()


async def test_event_filter_routes_only_that_operation(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    _, staff_token = await seed.staff()
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    sock, reply = await subscribe(
        server.ws_url,
        staff_token,
        "feed-events",
        [
            _binding("conversations", "UPDATE", f"id=eq.{conv}"),
            _binding("conversations", "*", f"id=eq.{conv}"),
        ],
    )
    update_id, star_id = (e["id"] for e in reply["response"]["postgres_changes"])
    try:
        await pool.execute("UPDATE conversations SET subject = 'changed' WHERE id = $1", conv)
        got = await sock.expect(is_change("conversations", "UPDATE"))
        assert sorted(got["payload"]["ids"]) == sorted([update_id, star_id])
        await pool.execute("DELETE FROM conversations WHERE id = $1", conv)
        got = await sock.expect(is_change("conversations", "DELETE"))
        assert got["payload"]["data"]["type"] == "DELETE" and got["payload"]["ids"] == [star_id]
    finally:
        await sock.close()


async def test_filters_route_by_value(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    _, staff_token = await seed.staff()
    customer, _ = await seed.customer()
    convs = [await seed.conversation(customer) for _ in range(3)]
    target = convs[1]
    filters = {
        "eq": f"conversation_id=eq.{target}",
        "neq": f"conversation_id=neq.{target}",
        "in": f"conversation_id=in.({convs[0]},{convs[2]})",
        "gt": "content=gt.m",
        "gte": "content=gte.m",
        "lt": "content=lt.m",
        "lte": "content=lte.m",
    }
    sock, reply = await subscribe(
        server.ws_url,
        staff_token,
        "feed-filters",
        [_binding("customer_messages", "INSERT", f) for f in filters.values()],
    )
    by_id = {
        e["id"]: name
        for e, name in zip(reply["response"]["postgres_changes"], filters, strict=True)
    }
    try:
        cases = [(convs[0], "a"), (target, "m"), (convs[2], "z")]
        for conv, content in cases:
            await pool.execute(
                "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, 'customer', $2, $3)",
                conv,
                customer,
                content,
            )
        seen: dict[str, set[str]] = {}
        for _ in cases:
            got = (await sock.expect(is_change("customer_messages")))["payload"]
            seen[got["data"]["record"]["content"]] = {by_id[i] for i in got["ids"]}
        assert seen == {
            "a": {"neq", "in", "lt", "lte"},
            "m": {"eq", "gte", "lte"},
            "z": {"neq", "in", "gt", "gte"},
        }
    finally:
        await sock.close()


async def test_invalid_filter_gets_a_system_error_and_the_channel_stays(
    server: RunningServer,
) -> None:
    from tests.server.wsclient import RawSocket

    sock = await RawSocket.connect(server.ws_url, server.service_key)
    try:
        reply = await sock.join(
            "feed-bad-filter",
            {
                "postgres_changes": [_binding("customer_messages", "*", "nosuchcolumn=eq.1")],
                "broadcast": {"self": True},
            },
        )
        assert reply["status"] == "ok"
        system = await sock.expect(lambda m: m.get("event") == "system")
        assert system["payload"]["status"] == "error"
        assert system["payload"]["extension"] == "postgres_changes"
        assert system["payload"]["message"].startswith(
            "Unable to subscribe to changes with given parameters"
        )
        assert "nosuchcolumn" in system["payload"]["message"]
        await sock.send(
            "realtime:feed-bad-filter",
            "broadcast",
            {"type": "broadcast", "event": "still", "payload": {}},
            None,
            "1",
        )
        assert (await sock.expect(lambda m: m.get("event") == "broadcast"))["payload"][
            "event"
        ] == "still"
        reply = await sock.join("feed-bad-table", {"postgres_changes": [_binding("pg_authid")]})
        system = await sock.expect(lambda m: m.get("event") == "system")
        assert (
            system["payload"]["status"] == "error"
            and "unknown table" in system["payload"]["message"]
        )
    finally:
        await sock.close()


async def test_change_committed_right_after_the_join_reply_is_delivered(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    _, staff_token = await seed.staff()
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    from tests.server.wsclient import RawSocket

    for i in range(10):
        sock = await RawSocket.connect(server.ws_url, staff_token)
        try:
            reply = await sock.join(
                f"feed-race-{i}",
                {
                    "postgres_changes": [
                        _binding("customer_messages", "INSERT", f"conversation_id=eq.{conv}")
                    ]
                },
            )
            assert reply["status"] == "ok"
            content = f"race-{i}-{uuid.uuid4()}"
            await pool.execute(
                "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, 'customer', $2, $3)",
                conv,
                customer,
                content,
            )
            got = await sock.expect(is_change("customer_messages"))
            assert got["payload"]["data"]["record"]["content"] == content
        finally:
            await sock.close()


async def test_out_of_order_commits_lose_nothing(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool, database_url: str
) -> None:
    _, staff_token = await seed.staff()
    customer, _ = await seed.customer()
    conv_a, conv_b = await seed.conversation(customer), await seed.conversation(customer)
    sock, _ = await subscribe(
        server.ws_url, staff_token, "feed-reverse", [_binding("customer_messages", "INSERT")]
    )
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    try:
        tx1, tx2 = first.transaction(), second.transaction()
        await tx1.start()
        await tx2.start()
        insert = "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, 'customer', $2, $3)"
        await first.execute(insert, conv_a, customer, "started first")
        await second.execute(insert, conv_b, customer, "started second")
        await tx2.commit()
        got = await sock.expect(is_change("customer_messages"))
        assert got["payload"]["data"]["record"]["content"] == "started second"
        await tx1.commit()
        got = await sock.expect(is_change("customer_messages"))
        assert got["payload"]["data"]["record"]["content"] == "started first"
    finally:
        await first.close()
        await second.close()
        await sock.close()


async def test_many_concurrent_writers_lose_nothing_and_keep_commit_order(
    server: RunningServer, seed: Seed, database_url: str
) -> None:
    _, staff_token = await seed.staff()
    customer, _ = await seed.customer()
    convs = [await seed.conversation(customer) for _ in range(4)]
    sock, _ = await subscribe(
        server.ws_url, staff_token, "feed-many", [_binding("customer_messages", "INSERT")]
    )
    writers, per_writer = 12, 25

    async def writer(n: int) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            for i in range(per_writer):
                conv = convs[(n + i) % len(convs)]
                async with conn.transaction():
                    # A per-conversation sequence taken under the conversation's row lock: its
                    # order is the commit order of the conversation's messages.
                    seq = await conn.fetchval(
                        "UPDATE conversations SET subject = (coalesce(nullif(subject, 'Help'), '0')::int + 1)::text "
                        "WHERE id = $1 RETURNING subject::int",
                        conv,
                    )
                    await conn.execute(
                        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
                        "VALUES ($1, 'customer', $2, $3)",
                        conv,
                        customer,
                        f"{seq}",
                    )
        finally:
            await conn.close()

    try:
        await asyncio.gather(*(writer(n) for n in range(writers)))
        received: dict[str, list[int]] = {str(c): [] for c in convs}
        positions: list[int] = []
        for _ in range(writers * per_writer):
            data = (await sock.expect(is_change("customer_messages"), timeout=10))["payload"][
                "data"
            ]
            received[data["record"]["conversation_id"]].append(int(data["record"]["content"]))
            positions.append(data["position"])
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        for seqs in received.values():
            assert seqs == list(range(1, len(seqs) + 1))
        assert sum(len(s) for s in received.values()) == writers * per_writer
    finally:
        await sock.close()


async def test_concurrent_deletes_in_one_conversation_do_not_deadlock(
    seed: Seed, pool: asyncpg.Pool, database_url: str
) -> None:
    staff, _ = await seed.staff()
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    messages = []
    for i in range(24):
        sender_type, sender = ("staff", staff) if i % 2 else ("customer", customer)
        msg = await pool.fetchval(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, $2, $3, 'm') RETURNING id",
            conv,
            sender_type,
            sender,
        )
        if i % 2:
            await pool.execute("SELECT mark_message_as_read($1, NULL, $2)", msg, customer)
        else:
            await pool.execute("SELECT mark_message_as_read($1, $2, NULL)", msg, staff)
        messages.append(msg)
    conns = [await asyncpg.connect(database_url) for _ in range(6)]
    try:

        async def delete(conn: asyncpg.Connection, ids: list[object]) -> None:
            for msg in ids:
                await conn.execute("DELETE FROM customer_messages WHERE id = $1", msg)

        await asyncio.gather(*(delete(c, messages[i::6]) for i, c in enumerate(conns)))
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM customer_messages WHERE conversation_id = $1", conv
            )
            == 0
        )
    finally:
        for c in conns:
            await c.close()
