"""@supabase/realtime-js 2.119.0 receiving postgres_changes from the real server.

Every change is written with plain SQL on the test database (as a ``psql`` user would), so what
reaches the client went through the change feed: trigger, queue, stamping, routing. Each test runs
with the client's default protocol (vsn 2.0.0) and with vsn 1.0.0.

realtime-js hands its callback a transformed payload: ``eventType``, ``new`` and ``old`` (``{}``
when the change has no such row), ``schema``, ``table``, ``commit_timestamp``, ``errors``.
"""

from __future__ import annotations

from typing import Any

import pytest

from .clients import (
    COMMIT_TIMESTAMP,
    Clients,
    JsClient,
    binding,
    first_status,
    insert_message,
    sql_row,
    stamped_head,
    unique,
)


@pytest.fixture(params=[None, "1.0.0"], ids=["vsn2-default", "vsn1"])
def vsn(request: pytest.FixtureRequest) -> str | None:
    """The ``vsn`` option given to RealtimeClient (None: its default, which is 2.0.0)."""
    return request.param  # type: ignore[no-any-return]


SUBSCRIBED_TO_POSTGRES = "Subscribed to PostgreSQL"


def messages_of(conversation_id: Any, event: str = "INSERT") -> dict[str, Any]:
    return binding(event, "customer_messages", f"conversation_id=eq.{conversation_id}")


def changes(js: JsClient, channel: str, until: int | None = None) -> list[tuple[int, Any]]:
    """The (binding index, callback payload) of every postgres_changes callback so far (or
    before the log position ``until``)."""
    events = js.log.events[:until]
    return [
        (e["binding"], e["payload"]) for e in events if e["ev"] == "pg" and e["channel"] == channel
    ]


async def subscribed_to_postgres(js: JsClient, channel: str) -> dict[str, Any]:
    """SUBSCRIBED, then the ``system`` message saying the bindings are live."""
    status = await first_status(js, channel)
    assert status["status"] == "SUBSCRIBED", status
    system = await js.log.expect(ev="system", channel=channel)
    assert system["payload"]["message"] == SUBSCRIBED_TO_POSTGRES, system
    return system


def sent_join_config(js: JsClient, topic: str) -> dict[str, Any]:
    """The config of the (last) phx_join the client sent for ``topic`` (needs trace_payloads)."""
    joins = [
        e["payload"]
        for e in js.log.find(ev="frame", dir="out", event="phx_join")
        if e.get("payload") is not None
    ]
    assert joins, "no phx_join traced (start the client with trace_payloads=True)"
    return joins[-1]["config"]  # type: ignore[no-any-return]


# -- 1. delivery of INSERT, UPDATE, DELETE ----------------------------------------------------


async def test_changes_written_with_sql_reach_the_callbacks(
    clients: Clients, server: Any, seed: Any, pool: Any, vsn: Any
) -> None:
    customer_id, _ = await seed.customer()
    conv = await seed.conversation(customer_id)
    _, staff_jwt = await seed.staff()
    topic = f"conversation:{conv}"

    js = await clients.js(server.anon_key, vsn=vsn, access_token=staff_jwt)
    js.join(
        "conv",
        topic,
        postgres=[messages_of(conv), binding("*", "conversations", f"id=eq.{conv}")],
    )
    system = await subscribed_to_postgres(js, "conv")
    payload = dict(system["payload"])
    # The server adds the feed position the channel is live from (clients may drop it).
    assert isinstance(payload.pop("position", 0), int)
    assert payload == {
        "extension": "postgres_changes",
        "status": "ok",
        "message": SUBSCRIBED_TO_POSTGRES,
        "channel": topic,
    }
    ids = (await js.call("state", channel="conv"))["postgres"]
    assert all(isinstance(i, int) and i > 0 for i in ids) and len(set(ids)) == 2, ids

    # INSERT: new is the row, old is {}.
    message = await insert_message(pool, conv, customer_id, "héllo from psql ✓")
    inserted = (await js.log.expect(ev="pg", channel="conv", binding=0))["payload"]
    assert inserted["eventType"] == "INSERT", inserted
    assert (inserted["schema"], inserted["table"]) == ("public", "customer_messages")
    assert inserted["new"] == message
    assert inserted["old"] == {}
    assert inserted["errors"] is None
    assert COMMIT_TIMESTAMP.match(inserted["commit_timestamp"]), inserted["commit_timestamp"]

    # UPDATE (the "*" binding on another table): new and old rows.
    before = await sql_row(pool, "SELECT to_jsonb(c) FROM conversations c WHERE id = $1", conv)
    after = await sql_row(
        pool,
        "UPDATE conversations SET status = 'pending' WHERE id = $1 RETURNING to_jsonb(conversations)",
        conv,
    )
    updated = (await js.log.expect(ev="pg", channel="conv", binding=1))["payload"]
    assert updated["eventType"] == "UPDATE", updated
    assert (updated["schema"], updated["table"]) == ("public", "conversations")
    assert (updated["new"], updated["old"]) == (after, before)
    assert (before["status"], after["status"]) == ("open", "pending")
    assert COMMIT_TIMESTAMP.match(updated["commit_timestamp"]), updated["commit_timestamp"]

    # DELETE: old is the row, new is {}. (The message goes with the conversation: a DELETE,
    # which the INSERT-only binding does not report.)
    await pool.execute("DELETE FROM conversations WHERE id = $1", conv)
    deleted = (
        await js.log.expect(
            ev="pg",
            channel="conv",
            binding=1,
            where=lambda e: e["payload"]["eventType"] != "UPDATE",
        )
    )["payload"]
    assert deleted["eventType"] == "DELETE", deleted
    assert (deleted["new"], deleted["old"]) == ({}, after)
    assert COMMIT_TIMESTAMP.match(deleted["commit_timestamp"]), deleted["commit_timestamp"]

    assert [(b, p["eventType"]) for b, p in changes(js, "conv")] == [
        (0, "INSERT"),
        (1, "UPDATE"),
        (1, "DELETE"),
    ]
    assert [e for e in js.log.find(ev="status") if e["status"] != "SUBSCRIBED"] == []


# -- 2. event filters -------------------------------------------------------------------------


async def test_each_binding_fires_only_for_its_event_and_filter(
    clients: Clients, server: Any, seed: Any, pool: Any, vsn: Any
) -> None:
    customer_id, _ = await seed.customer()
    conv = await seed.conversation(customer_id)
    other_conv = await seed.conversation(customer_id)
    _, staff_jwt = await seed.staff()

    js = await clients.js(server.anon_key, vsn=vsn, access_token=staff_jwt, trace_payloads=True)
    js.join(
        "conv",
        f"conversation:{conv}",
        postgres=[messages_of(conv, "UPDATE"), messages_of(conv, "DELETE"), messages_of(conv)],
    )
    await subscribed_to_postgres(js, "conv")
    update_id, delete_id, insert_id = (await js.call("state", channel="conv"))["postgres"]

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
    await js.log.expect(ev="pg", channel="conv", binding=1)
    seen = changes(js, "conv")
    assert [(b, p["eventType"]) for b, p in seen] == [(2, "INSERT"), (0, "UPDATE"), (1, "DELETE")]
    by_binding = {b: p for b, p in seen}
    assert by_binding[2]["new"] == message  # the other conversation's message never fired
    assert (by_binding[0]["new"], by_binding[0]["old"]) == (edited, message)
    assert by_binding[1]["old"] == edited

    # The server routed each change to the one binding that asked for it: one frame per
    # change, naming only that binding.
    frames = [e["payload"] for e in js.log.find(ev="frame", dir="in", event="postgres_changes")]
    assert [(f["data"]["type"], f["ids"]) for f in frames] == [
        ("INSERT", [insert_id]),
        ("UPDATE", [update_id]),
        ("DELETE", [delete_id]),
    ], frames


# -- 3. a customer sees only their own rows ---------------------------------------------------


async def test_customer_receives_only_their_own_messages(
    clients: Clients, server: Any, seed: Any, pool: Any, vsn: Any
) -> None:
    customer_a, portal_a = await seed.customer()
    conv_a = await seed.conversation(customer_a)
    customer_b, _ = await seed.customer()
    conv_b = await seed.conversation(customer_b)

    js = await clients.js(server.anon_key, vsn=vsn, access_token=portal_a)
    js.join("mine", f"conversation:{conv_a}", postgres=[binding("*", "customer_messages")])
    await subscribed_to_postgres(js, "mine")

    theirs = await insert_message(pool, conv_b, customer_b, "not for A")
    mine = await insert_message(pool, conv_a, customer_a, "for A")

    first = (await js.log.expect(ev="pg", channel="mine"))["payload"]
    assert (first["eventType"], first["new"]) == ("INSERT", mine), (first, theirs["id"])
    assert [p["new"]["id"] for _, p in changes(js, "mine")] == [mine["id"]]


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
    clients: Clients, server: Any, seed: Any, pool: Any, vsn: Any
) -> None:
    """As docs/changes.md documents it for realtime-js, which passes
    ``config.postgres_changes_options`` through (it rebuilds the rest of ``config``)."""
    customer_id, conv, _, staff_jwt, head, missed = await _history(seed, pool)
    topic = f"conversation:{conv}"

    js = await clients.js(server.anon_key, vsn=vsn, access_token=staff_jwt, trace_payloads=True)
    options = {"postgres_changes_options": {"resume": {"position": head}}}
    js.join("conv", topic, config=options, postgres=[messages_of(conv)])
    assert (await first_status(js, "conv"))["status"] == "SUBSCRIBED"
    sent = sent_join_config(js, topic)
    assert sent["postgres_changes_options"] == options["postgres_changes_options"], sent

    await js.log.expect(ev="system", channel="conv", where=lambda e: "PostgreSQL" in str(e))
    assert [p["new"]["content"] for _, p in changes(js, "conv")] == ["missed-0", "missed-1"]


async def test_resume_replays_committed_changes_in_order_then_live_ones(
    clients: Clients, server: Any, seed: Any, pool: Any, vsn: Any
) -> None:
    """The canonical placement, ``config.resume`` (what the project's SDK sends). realtime-js
    drops unknown ``config`` keys, so the harness adds it back to the join; the replayed and
    live changes then reach the callbacks unchanged."""
    customer_id, conv, _, staff_jwt, head, missed = await _history(seed, pool)
    topic = f"conversation:{conv}"

    js = await clients.js(server.anon_key, vsn=vsn, access_token=staff_jwt, trace_payloads=True)
    js.join("conv", topic, postgres=[messages_of(conv)], join_config={"resume": {"position": head}})
    assert (await first_status(js, "conv"))["status"] == "SUBSCRIBED"
    assert sent_join_config(js, topic)["resume"] == {"position": head}

    # Replayed, in commit order, before "Subscribed to PostgreSQL"; nothing from before head.
    system = await js.log.expect(ev="system", channel="conv")
    assert system["payload"]["message"] == SUBSCRIBED_TO_POSTGRES, system
    replayed = changes(js, "conv", until=js.log.events.index(system))
    assert [(b, p["eventType"], p["new"]) for b, p in replayed] == [
        (0, "INSERT", row) for row in missed
    ]
    positions = [
        e["payload"]["data"]["position"]
        for e in js.log.find(ev="frame", dir="in", event="postgres_changes")
    ]
    assert positions == sorted(positions) and positions[0] > head, (head, positions)

    # Then live, without a duplicate.
    live = await insert_message(pool, conv, customer_id, "live")
    await js.log.expect(
        ev="pg", channel="conv", where=lambda e: e["payload"]["new"]["id"] == live["id"]
    )
    assert [p["new"] for _, p in changes(js, "conv")] == [*missed, live]


async def test_without_resume_nothing_old_is_replayed(
    clients: Clients, server: Any, seed: Any, pool: Any, vsn: Any
) -> None:
    customer_id, _ = await seed.customer()
    conv = await seed.conversation(customer_id)
    user_id, staff_jwt = await seed.staff()
    js = await clients.js(server.anon_key, vsn=vsn, access_token=staff_jwt)

    # An observer that is live before the old messages are written: once it has them, the
    # server has routed them, and a channel joining later can only get them by replay.
    js.join("observer", f"staff:{user_id}:messages", postgres=[messages_of(conv)])
    await subscribed_to_postgres(js, "observer")
    for i in range(2):
        await insert_message(pool, conv, customer_id, f"old-{i}")
    await js.log.expect(
        ev="pg", channel="observer", where=lambda e: e["payload"]["new"]["content"] == "old-1"
    )

    js.join("fresh", f"conversation:{conv}", postgres=[messages_of(conv)])
    await subscribed_to_postgres(js, "fresh")
    live = await insert_message(pool, conv, customer_id, "live")
    first = (await js.log.expect(ev="pg", channel="fresh"))["payload"]
    assert first["new"] == live, first
    await js.log.expect(
        ev="pg", channel="observer", where=lambda e: e["payload"]["new"]["id"] == live["id"]
    )
    assert [p["new"]["content"] for _, p in changes(js, "fresh")] == ["live"]


# -- 5. a bad filter --------------------------------------------------------------------------


async def test_bad_filter_is_reported_through_system_and_the_channel_stays_subscribed(
    clients: Clients, server: Any, vsn: Any
) -> None:
    sub = unique("room")
    js = await clients.js(server.anon_key, vsn=vsn)
    js.join(
        "room",
        sub,
        config={"broadcast": {"self": True, "ack": True}},
        broadcast=("*",),
        postgres=[binding("INSERT", "customer_messages", "nosuchcolumn=eq.1")],
    )
    assert (await first_status(js, "room"))["status"] == "SUBSCRIBED"
    system = (await js.log.expect(ev="system", channel="room"))["payload"]
    assert (system["extension"], system["status"], system["channel"]) == (
        "postgres_changes",
        "error",
        sub,
    ), system
    assert system["message"].startswith("Unable to subscribe to changes with given parameters"), (
        system
    )
    assert "nosuchcolumn" in system["message"], system

    # Informational (reference 2.4): the channel is still joined and works.
    assert await js.call("send", channel="room", event="still-here", payload={"ok": 1}) == "ok"
    await js.log.expect(ev="broadcast", channel="room", event="still-here")
    assert (await js.call("state", channel="room"))["state"] == "joined"
    assert [e["status"] for e in js.log.find(ev="status")] == ["SUBSCRIBED"]
    assert js.log.find(ev="fatal") == []
