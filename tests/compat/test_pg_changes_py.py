"""realtime-py 2.34.1 (``AsyncRealtimeClient``, vsn 1.0.0) receiving postgres_changes.

Every change is written with plain SQL on the test database, so what reaches the client went
through the change feed. realtime-py hands its callback the raw payload: ``{"ids": [...],
"data": {"schema", "table", "commit_timestamp", "type", "columns", "record"?, "old_record"?,
"errors"}}`` (it drops keys it does not model, such as ``data.position``).
"""

from __future__ import annotations

import json
from typing import Any

from .clients import (
    COMMIT_TIMESTAMP,
    Clients,
    PyClient,
    binding,
    first_status,
    insert_message,
    routed_head,
    sql_row,
    stamped_head,
    unique,
)

SUBSCRIBED_TO_POSTGRES = "Subscribed to PostgreSQL"

#: The columns of customer_messages, in table order, as the change carries them.
MESSAGE_COLUMNS = [
    {"name": "id", "type": "uuid"},
    {"name": "conversation_id", "type": "uuid"},
    {"name": "sender_type", "type": "text"},
    {"name": "sender_id", "type": "uuid"},
    {"name": "content", "type": "text"},
    {"name": "attachments", "type": "jsonb"},
    {"name": "client_message_id", "type": "text"},
    {"name": "created_at", "type": "timestamptz"},
    {"name": "edited_at", "type": "timestamptz"},
    {"name": "deleted_at", "type": "timestamptz"},
]


def messages_of(conversation_id: Any, event: str = "INSERT") -> dict[str, Any]:
    return binding(event, "customer_messages", f"conversation_id=eq.{conversation_id}")


def changes(py: PyClient, channel: str, until: int | None = None) -> list[tuple[int, Any]]:
    """The (binding index, raw payload) of every postgres_changes callback so far (or before
    the log position ``until``)."""
    events = py.log.events[:until]
    return [
        (e["binding"], e["payload"]) for e in events if e["ev"] == "pg" and e["channel"] == channel
    ]


def contents(py: PyClient, channel: str) -> list[str]:
    return [p["data"]["record"]["content"] for _, p in changes(py, channel)]


async def subscribed_to_postgres(py: PyClient, channel: str) -> dict[str, Any]:
    """SUBSCRIBED, then the ``system`` message saying the bindings are live."""
    status = await first_status(py, channel)
    assert status["status"] == "SUBSCRIBED", status
    system = await py.log.expect(ev="system", channel=channel)
    assert system["payload"]["message"] == SUBSCRIBED_TO_POSTGRES, system
    return system


def other_statuses(py: PyClient) -> list[dict[str, Any]]:
    return [e for e in py.log.find(ev="status") if e["status"] != "SUBSCRIBED"]


# -- 1. delivery of INSERT, UPDATE, DELETE ----------------------------------------------------


async def test_changes_written_with_sql_reach_the_callbacks(
    clients: Clients, server: Any, seed: Any, pool: Any
) -> None:
    customer_id, _ = await seed.customer()
    conv = await seed.conversation(customer_id)
    _, staff_jwt = await seed.staff()
    topic = f"conversation:{conv}"
    # The conversation's own INSERT is routed before the join: the changes below come alone.
    await routed_head(pool, server.http_url)

    py = clients.py(server.anon_key)
    await py.set_auth(staff_jwt)
    await py.join(
        "conv",
        topic,
        postgres=[messages_of(conv), binding("*", "conversations", f"id=eq.{conv}")],
    )
    system = await subscribed_to_postgres(py, "conv")
    payload = dict(system["payload"])
    # The server adds the feed position the channel is live from (clients may drop it).
    assert isinstance(payload.pop("position", 0), int)
    assert payload == {
        "extension": "postgres_changes",
        "status": "ok",
        "message": SUBSCRIBED_TO_POSTGRES,
        "channel": topic,
    }
    messages_id, conversations_id = py.postgres_ids("conv")
    assert isinstance(messages_id, int) and isinstance(conversations_id, int)
    assert 0 < messages_id != conversations_id > 0

    # INSERT: data.record, no old_record.
    message = await insert_message(pool, conv, customer_id, "héllo from psql ✓")
    inserted = (await py.log.expect(ev="pg", channel="conv", binding=0))["payload"]
    assert inserted["ids"] == [messages_id], inserted
    data = inserted["data"]
    assert (data["schema"], data["table"], data["type"]) == (
        "public",
        "customer_messages",
        "INSERT",
    )
    assert data["record"] == message
    assert "old_record" not in data, data
    assert data["columns"] == MESSAGE_COLUMNS
    assert data["errors"] is None
    assert COMMIT_TIMESTAMP.match(data["commit_timestamp"]), data["commit_timestamp"]

    # UPDATE (the "*" binding on another table): record and old_record.
    before = await sql_row(pool, "SELECT to_jsonb(c) FROM conversations c WHERE id = $1", conv)
    after = await sql_row(
        pool,
        "UPDATE conversations SET status = 'pending' WHERE id = $1 RETURNING to_jsonb(conversations)",
        conv,
    )
    updated = (await py.log.expect(ev="pg", channel="conv", binding=1))["payload"]
    assert updated["ids"] == [conversations_id], updated
    data = updated["data"]
    assert (data["schema"], data["table"], data["type"]) == ("public", "conversations", "UPDATE")
    assert (data["record"], data["old_record"]) == (after, before)
    assert [c["name"] for c in data["columns"]] == list(
        await pool.fetchval(
            "SELECT array_agg(attname ORDER BY attnum) FROM pg_attribute "
            "WHERE attrelid = 'public.conversations'::regclass AND attnum > 0 AND NOT attisdropped"
        )
    )
    assert set(after) == {c["name"] for c in data["columns"]}

    # DELETE: old_record, no record.
    await pool.execute("DELETE FROM conversations WHERE id = $1", conv)
    deleted = (
        await py.log.expect(
            ev="pg",
            channel="conv",
            binding=1,
            where=lambda e: e["payload"]["data"]["type"] != "UPDATE",
        )
    )["payload"]
    data = deleted["data"]
    assert data["type"] == "DELETE", deleted
    assert data["old_record"] == after
    assert "record" not in data, data
    assert COMMIT_TIMESTAMP.match(data["commit_timestamp"]), data["commit_timestamp"]

    assert [(b, p["data"]["type"]) for b, p in changes(py, "conv")] == [
        (0, "INSERT"),
        (1, "UPDATE"),
        (1, "DELETE"),
    ]
    assert other_statuses(py) == []


# -- 2. event filters -------------------------------------------------------------------------


async def test_each_binding_fires_only_for_its_event_and_filter(
    clients: Clients, server: Any, seed: Any, pool: Any
) -> None:
    customer_id, _ = await seed.customer()
    conv = await seed.conversation(customer_id)
    other_conv = await seed.conversation(customer_id)
    _, staff_jwt = await seed.staff()

    py = clients.py(staff_jwt)
    await py.join(
        "conv",
        f"conversation:{conv}",
        postgres=[messages_of(conv, "UPDATE"), messages_of(conv, "DELETE"), messages_of(conv)],
    )
    await subscribed_to_postgres(py, "conv")
    update_id, delete_id, insert_id = py.postgres_ids("conv")

    # Outside the filter (another conversation), then inside it: insert, update, delete.
    await insert_message(pool, other_conv, customer_id, "elsewhere")
    message = await insert_message(pool, conv, customer_id, "first")
    edited = await sql_row(
        pool,
        "UPDATE customer_messages SET content = 'edited' WHERE id = $1 "
        "RETURNING to_jsonb(customer_messages)",
        message["id"],
    )
    await pool.execute("DELETE FROM customer_messages WHERE id = $1", message["id"])

    # The socket delivers in order: once the DELETE is in, every earlier change has arrived.
    await py.log.expect(ev="pg", channel="conv", binding=1)
    seen = changes(py, "conv")
    # One callback per change, the server naming only the binding that asked for it.
    assert [(b, p["data"]["type"], p["ids"]) for b, p in seen] == [
        (2, "INSERT", [insert_id]),
        (0, "UPDATE", [update_id]),
        (1, "DELETE", [delete_id]),
    ]
    by_binding = {b: p["data"] for b, p in seen}
    assert by_binding[2]["record"] == message  # the other conversation's message never fired
    assert (by_binding[0]["record"], by_binding[0]["old_record"]) == (edited, message)
    assert by_binding[1]["old_record"] == edited


# -- 3. a customer sees only their own rows ---------------------------------------------------


async def test_customer_receives_only_their_own_messages(
    clients: Clients, server: Any, seed: Any, pool: Any
) -> None:
    customer_a, portal_a = await seed.customer()
    conv_a = await seed.conversation(customer_a)
    customer_b, _ = await seed.customer()
    conv_b = await seed.conversation(customer_b)

    py = clients.py(server.anon_key)
    await py.set_auth(portal_a)
    await py.join("mine", f"conversation:{conv_a}", postgres=[binding("*", "customer_messages")])
    await subscribed_to_postgres(py, "mine")

    theirs = await insert_message(pool, conv_b, customer_b, "not for A")
    mine = await insert_message(pool, conv_a, customer_a, "for A")

    first = (await py.log.expect(ev="pg", channel="mine"))["payload"]["data"]
    assert (first["type"], first["record"]) == ("INSERT", mine), (first, theirs["id"])
    assert contents(py, "mine") == ["for A"]


# -- 4. the resume join extension -------------------------------------------------------------


async def _history(seed: Any, pool: Any) -> tuple[Any, Any, Any, str, int, list[dict[str, Any]]]:
    """A conversation with one message before ``head`` and two committed after it."""
    customer_id, _ = await seed.customer()
    conv = await seed.conversation(customer_id)
    user_id, staff_jwt = await seed.staff()
    await insert_message(pool, conv, customer_id, "before")
    head = await stamped_head(pool)
    missed = [await insert_message(pool, conv, customer_id, f"missed-{i}") for i in range(2)]
    await stamped_head(pool)
    return customer_id, conv, user_id, staff_jwt, head, missed


async def test_resume_in_the_channel_config_replays_then_goes_live(
    clients: Clients, server: Any, seed: Any, pool: Any
) -> None:
    """As docs/changes.md documents it for realtime-py, which keeps unknown top-level keys of
    the channel parameters in the join (it rebuilds ``config`` from the keys it knows)."""
    customer_id, conv, _, staff_jwt, head, missed = await _history(seed, pool)

    py = clients.py(staff_jwt)
    await py.join(
        "conv",
        f"conversation:{conv}",
        params={"resume": {"position": head}},
        postgres=[messages_of(conv)],
    )
    assert (await first_status(py, "conv"))["status"] == "SUBSCRIBED"
    sent = py.join_payload("conv")
    assert sent["resume"] == {"position": head}, f"the phx_join carried {sent}"

    await py.log.expect(ev="system", channel="conv")
    assert contents(py, "conv") == ["missed-0", "missed-1"]


async def test_resume_replays_committed_changes_in_order_then_live_ones(
    clients: Clients, server: Any, seed: Any, pool: Any
) -> None:
    """The canonical placement, ``config.resume`` (what the project's SDK sends). realtime-py
    drops unknown ``config`` keys, so the harness adds it back to the join; the replayed and
    live changes then reach the callbacks unchanged."""
    customer_id, conv, _, staff_jwt, head, missed = await _history(seed, pool)

    py = clients.py(staff_jwt)
    await py.join(
        "conv",
        f"conversation:{conv}",
        postgres=[messages_of(conv)],
        join_config={"resume": {"position": head}},
    )
    assert (await first_status(py, "conv"))["status"] == "SUBSCRIBED"
    assert py.join_payload("conv")["config"]["resume"] == {"position": head}

    # Replayed, in commit order, before "Subscribed to PostgreSQL"; nothing from before head.
    system = await py.log.expect(ev="system", channel="conv")
    assert system["payload"]["message"] == SUBSCRIBED_TO_POSTGRES, system
    replayed = changes(py, "conv", until=py.log.events.index(system))
    assert [(b, p["data"]["type"], p["data"]["record"]) for b, p in replayed] == [
        (0, "INSERT", row) for row in missed
    ]

    # Then live, without a duplicate.
    live = await insert_message(pool, conv, customer_id, "live")
    await py.log.expect(
        ev="pg", channel="conv", where=lambda e: e["payload"]["data"]["record"]["id"] == live["id"]
    )
    assert [p["data"]["record"] for _, p in changes(py, "conv")] == [*missed, live]
    assert other_statuses(py) == []


async def test_without_resume_nothing_old_is_replayed(
    clients: Clients, server: Any, seed: Any, pool: Any
) -> None:
    customer_id, _ = await seed.customer()
    conv = await seed.conversation(customer_id)
    user_id, staff_jwt = await seed.staff()
    py = clients.py(staff_jwt)

    # An observer that is live before the old messages are written: once it has them, the
    # server has routed them, and a channel joining later can only get them by replay.
    await py.join("observer", f"staff:{user_id}:messages", postgres=[messages_of(conv)])
    await subscribed_to_postgres(py, "observer")
    for i in range(2):
        await insert_message(pool, conv, customer_id, f"old-{i}")
    await py.log.expect(
        ev="pg",
        channel="observer",
        where=lambda e: e["payload"]["data"]["record"]["content"] == "old-1",
    )

    await py.join("fresh", f"conversation:{conv}", postgres=[messages_of(conv)])
    await subscribed_to_postgres(py, "fresh")
    live = await insert_message(pool, conv, customer_id, "live")
    first = (await py.log.expect(ev="pg", channel="fresh"))["payload"]["data"]
    assert first["record"] == live, first
    await py.log.expect(
        ev="pg",
        channel="observer",
        where=lambda e: e["payload"]["data"]["record"]["id"] == live["id"],
    )
    assert contents(py, "fresh") == ["live"]


# -- 5. a bad filter --------------------------------------------------------------------------


async def test_bad_filter_makes_realtime_py_rejoin_without_closing(
    clients: Clients, server: Any
) -> None:
    """Reference 2.4: realtime-py treats every ``system`` error, even the informational
    postgres_changes one, as a channel error (CHANNEL_ERROR, rejoin after 1 s). The server
    answers the rejoin (a duplicate join on the same socket) without a phx_close, so the channel
    is SUBSCRIBED again instead of CLOSED (reference 9.1 item 7, 9.2 item 22)."""
    sub = unique("room")
    py = clients.py(server.anon_key)
    await py.join(
        "room",
        sub,
        config={"broadcast": {"self": True, "ack": True}},
        broadcast=("*",),
        postgres=[binding("INSERT", "customer_messages", "nosuchcolumn=eq.1")],
    )
    assert (await first_status(py, "room"))["status"] == "SUBSCRIBED"

    errored = await py.log.expect(ev="status", channel="room", status="CHANNEL_ERROR")
    system = json.loads(errored["error"])
    assert (system["extension"], system["status"], system["channel"]) == (
        "postgres_changes",
        "error",
        sub,
    ), system
    assert system["message"].startswith("Unable to subscribe to changes with given parameters"), (
        system
    )
    assert "nosuchcolumn" in system["message"], system

    # The rejoin: SUBSCRIBED again, never CLOSED or TIMED_OUT.
    mark = py.log.events.index(errored) + 1
    await py.log.expect(mark, ev="status", channel="room", status="SUBSCRIBED")
    statuses = [e["status"] for e in py.log.find(ev="status", channel="room")]
    assert set(statuses) <= {"SUBSCRIBED", "CHANNEL_ERROR"}, statuses
    assert statuses[:3] == ["SUBSCRIBED", "CHANNEL_ERROR", "SUBSCRIBED"], statuses
    assert f"realtime:{sub}" in py.client.channels  # not removed by a phx_close
    # Only "ok" system messages reach on_system; this channel never had one.
    assert py.log.find(ev="system") == []
    assert py.log.find(ev="pg") == []

    # Between errors the channel works: a broadcast to itself comes back.
    assert await py.send("room", "still-here", {"ok": 1}) == "ok"
    await py.log.expect(ev="broadcast", channel="room", event="still-here")
