"""Customer A never receives a row of customer B, whatever topic, binding or filter A uses."""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg

from realtime_messaging.protocol.frames import Vsn
from tests.conftest import RunningServer, Seed
from tests.server.wsclient import RawSocket

from .conftest import is_change

TABLES = [
    "conversations",
    "customer_messages",
    "message_read_receipts",
    "message_typing_indicators",
    "user_presence",
    "message_delivery_status",
]


def _own_setup(message: dict[str, Any], customer: Any, conversation: Any) -> bool:
    """A's own rows written around the subscriptions: A's presence (A is online through these
    sockets) and A's conversation, if it was stamped after the sockets joined."""
    data = message["payload"]["data"]
    record = data["record"] or {}
    if data["table"] == "user_presence":
        return bool(record.get("customer_id") == str(customer))
    return bool(data["table"] == "conversations" and record.get("id") == str(conversation))


async def test_customer_a_never_sees_customer_b(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    staff, _ = await seed.staff()
    a, token_a = await seed.customer()
    b, token_b = await seed.customer()
    conv_a = await seed.conversation(a)
    conv_b = await seed.conversation(b)

    # Every binding a curious customer could try: every table, unfiltered and filtered on B's ids.
    bindings: list[dict[str, Any]] = [{"event": "*", "schema": "public"}]
    for table in TABLES:
        bindings.append({"event": "*", "schema": "public", "table": table})
    for table, column in (
        ("conversations", "id"),
        ("conversations", "customer_id"),
        ("customer_messages", "conversation_id"),
        ("customer_messages", "sender_id"),
        ("message_read_receipts", "conversation_id"),
        ("message_read_receipts", "read_by_customer_id"),
        ("message_typing_indicators", "conversation_id"),
        ("message_typing_indicators", "customer_id"),
        ("user_presence", "customer_id"),
        ("user_presence", "user_id"),  # B's agent: not A's, so never A's to follow
        ("message_delivery_status", "conversation_id"),
        ("message_delivery_status", "recipient_id"),
    ):
        target = {"id": conv_b, "conversation_id": conv_b, "user_id": staff}.get(column, b)
        bindings.append(
            {"event": "*", "schema": "public", "table": table, "filter": f"{column}=eq.{target}"}
        )
        bindings.append(
            {"event": "*", "schema": "public", "table": table, "filter": f"{column}=in.({target})"}
        )
        bindings.append(
            {"event": "*", "schema": "public", "table": table, "filter": f"{column}=neq.{a}"}
        )

    topics = ["lobby", f"customer:{a}:messages", f"conversation:{conv_a}", f"presence:{conv_a}"]
    sockets: list[RawSocket] = []
    try:
        for topic, vsn in itertools.product(topics, (Vsn.V1, Vsn.V2)):
            sock = await RawSocket.connect(server.ws_url, token_a, vsn)
            sockets.append(sock)
            reply = await sock.join(topic, {"postgres_changes": bindings})
            assert reply["status"] == "ok", (topic, reply)
            await sock.expect(lambda m: m.get("event") == "system")

        # B's world changes in every table...
        msg_b = await pool.fetchval(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'staff', $2, 'secret for B') RETURNING id",
            conv_b,
            staff,
        )
        await pool.execute("SELECT mark_message_as_read($1, NULL, $2)", msg_b, b)
        await pool.execute("SELECT update_typing_indicator($1, NULL, $2, true, 5)", conv_b, b)
        await pool.execute("SELECT update_user_presence(NULL, $1, 'online', '{}'::jsonb)", b)
        await pool.execute("SELECT update_user_presence($1, NULL, 'away', '{}'::jsonb)", staff)
        await pool.execute("UPDATE conversations SET subject = 'B private' WHERE id = $1", conv_b)
        await pool.execute("DELETE FROM customer_messages WHERE id = $1", msg_b)
        # ...then one change of A's own, which every socket must receive first and only.
        await pool.execute(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'customer', $2, 'marker for A')",
            conv_a,
            a,
        )
        for sock in sockets:
            # A's own rows may come first; nothing of B's may.
            got = await sock.expect(
                lambda m: m.get("event") == "postgres_changes" and not _own_setup(m, a, conv_a)
            )
            data = got["payload"]["data"]
            assert (
                data["table"] == "customer_messages" and data["record"]["content"] == "marker for A"
            ), data
        # B, subscribed the same way, does see B's rows (the matrix above is not vacuous).
        sock_b = await RawSocket.connect(server.ws_url, token_b)
        sockets.append(sock_b)
        await sock_b.join("lobby-b", {"postgres_changes": bindings})
        await sock_b.expect(lambda m: m.get("event") == "system")
        await pool.execute("UPDATE conversations SET subject = 'B again' WHERE id = $1", conv_b)
        got = await sock_b.expect(is_change("conversations"))
        assert got["payload"]["data"]["record"]["subject"] == "B again"
    finally:
        for sock in sockets:
            await sock.close()


async def test_anon_subscriber_receives_no_rows(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    watcher = await RawSocket.connect(server.ws_url, server.service_key)
    try:
        binding = {"event": "*", "schema": "public", "table": "customer_messages"}
        await sock.join("anon-feed", {"postgres_changes": [binding], "broadcast": {"self": True}})
        await watcher.join("svc-feed", {"postgres_changes": [binding]})
        await pool.execute(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, 'customer', $2, 'x')",
            conv,
            customer,
        )
        await watcher.expect(is_change("customer_messages"))
        # The anonymous socket's next message is its own broadcast, not the row.
        await sock.send(
            "realtime:anon-feed",
            "broadcast",
            {"type": "broadcast", "event": "probe", "payload": {}},
            None,
            "1",
        )
        got = await sock.expect(lambda m: m.get("event") in ("postgres_changes", "broadcast"))
        assert got["event"] == "broadcast"
    finally:
        await sock.close()
        await watcher.close()
