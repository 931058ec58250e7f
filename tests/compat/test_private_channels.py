"""@supabase/realtime-js 2.119.0 on private channels authorized by policies on realtime.messages.

A join with ``config: {private: true}`` to a topic that is not one of the server's own is
allowed by a SELECT policy on ``realtime.messages`` (``realtime.topic()`` is the topic), and the
channel's broadcasts by an INSERT policy, as on Supabase. Messages come from ``realtime.send``
written with plain SQL. Each test runs with the client's default protocol (vsn 2.0.0) and 1.0.0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from .clients import Clients, first_status, unauthorized, unique

PRIVATE = {"private": True}


@pytest.fixture(params=[None, "1.0.0"], ids=["vsn2-default", "vsn1"])
def vsn(request: pytest.FixtureRequest) -> str | None:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def policies(pool: asyncpg.Pool) -> AsyncIterator[list[str]]:
    """Policies a test creates on realtime.messages (by name), dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        await pool.execute(f"DROP POLICY IF EXISTS {name} ON realtime.messages")


async def policy(pool: asyncpg.Pool, names: list[str], sql: str) -> None:
    name = unique("p").replace("-", "_")
    names.append(name)
    await pool.execute(f"CREATE POLICY {name} ON realtime.messages {sql}")


async def test_a_select_policy_lets_staff_receive_and_refuses_the_others(
    clients: Clients, server: Any, seed: Any, pool: asyncpg.Pool, policies: list[str], vsn: Any
) -> None:
    prefix = unique("staffroom")
    topic = f"{prefix}:lobby"
    await policy(
        pool,
        policies,
        f"FOR SELECT TO authenticated USING ("
        f"(SELECT realtime.topic()) LIKE '{prefix}:%' AND (SELECT rtm.is_staff()))",
    )
    _, staff_jwt = await seed.staff()
    _, portal = await seed.customer()
    staff = await clients.js(server.anon_key, vsn=vsn, access_token=staff_jwt, name="staff")
    customer = await clients.js(server.anon_key, vsn=vsn, access_token=portal, name="customer")
    anon = await clients.js(server.anon_key, vsn=vsn, name="anon")

    staff.join("room", topic, config=PRIVATE, broadcast=("*",))
    assert (await first_status(staff, "room"))["status"] == "SUBSCRIBED"
    for refused in (customer, anon):
        refused.join("room", topic, config=PRIVATE, broadcast=("*",))
        status = await first_status(refused, "room", timeout=8)
        assert (status["status"], status["error"]) == ("CHANNEL_ERROR", unauthorized(topic))

    # A topic the policy does not cover is refused to staff too.
    other = unique("elsewhere")
    staff.join("other", other, config=PRIVATE)
    status = await first_status(staff, "other", timeout=8)
    assert (status["status"], status["error"]) == ("CHANNEL_ERROR", unauthorized(other))

    await pool.execute("SELECT realtime.send('{\"body\": \"hello\"}'::jsonb, 'note', $1)", topic)
    got = await staff.log.expect(ev="broadcast", channel="room")
    assert got["event"] == "note"
    assert got["payload"]["body"] == "hello" and got["payload"]["id"] == got["meta"]["id"]
    # Without a read policy, nothing was stored by the checks.
    assert (
        await pool.fetchval("SELECT count(*) FROM realtime.messages WHERE topic = $1", topic) == 1
    )


async def test_an_insert_policy_governs_sending(
    clients: Clients, server: Any, seed: Any, pool: asyncpg.Pool, policies: list[str], vsn: Any
) -> None:
    prefix = unique("desk")
    topic = f"{prefix}:1"
    covered = f"(SELECT realtime.topic()) LIKE '{prefix}:%'"
    await policy(pool, policies, f"FOR SELECT TO authenticated USING ({covered})")
    await policy(
        pool,
        policies,
        f"FOR INSERT TO authenticated WITH CHECK ({covered} AND (SELECT rtm.is_staff()))",
    )
    _, reader_jwt = await seed.staff()
    _, writer_jwt = await seed.staff()
    _, portal = await seed.customer()
    reader = await clients.js(server.anon_key, vsn=vsn, access_token=reader_jwt, name="reader")
    writer = await clients.js(server.anon_key, vsn=vsn, access_token=writer_jwt, name="writer")
    customer = await clients.js(server.anon_key, vsn=vsn, access_token=portal, name="customer")
    for client in (reader, writer, customer):
        client.join("desk", topic, config=PRIVATE, broadcast=("*",))
        assert (await first_status(client, "desk"))["status"] == "SUBSCRIBED"

    # The customer may read but not write: its broadcast is dropped without a word.
    await customer.call("send", channel="desk", event="cursor", payload={"from": "customer"})
    # A join after it on the same socket: once it is answered, the broadcast was handled (and,
    # had it been relayed, written to the reader before what the writer sends next).
    customer.join("barrier", unique("barrier"))
    assert (await first_status(customer, "barrier"))["status"] == "SUBSCRIBED"
    await writer.call("send", channel="desk", event="cursor", payload={"from": "staff"})
    got = await reader.log.expect(ev="broadcast", channel="desk")
    assert got["payload"] == {"from": "staff"}
    assert not reader.log.find(ev="broadcast", where=lambda e: e["payload"] == {"from": "customer"})
    # Readers also get what the database sends.
    await pool.execute("SELECT realtime.send('{\"n\": 1}'::jsonb, 'db', $1)", topic)
    assert (await customer.log.expect(ev="broadcast", channel="desk", event="db"))["payload"][
        "n"
    ] == 1


async def test_a_new_token_without_read_closes_the_channel(
    clients: Clients, server: Any, seed: Any, pool: asyncpg.Pool, policies: list[str], vsn: Any
) -> None:
    prefix = unique("ops")
    topic = f"{prefix}:alerts"
    await policy(
        pool,
        policies,
        f"FOR SELECT TO authenticated USING ("
        f"(SELECT realtime.topic()) LIKE '{prefix}:%' AND (SELECT rtm.is_staff()))",
    )
    _, staff_jwt = await seed.staff()
    _, portal = await seed.customer()
    js = await clients.js(server.anon_key, vsn=vsn, access_token=staff_jwt)
    js.join("alerts", topic, config=PRIVATE, broadcast=("*",))
    assert (await first_status(js, "alerts"))["status"] == "SUBSCRIBED"
    mark = js.log.mark()

    await js.call("setAuth", token=portal)  # a customer's token: the policy does not cover it
    system = await js.log.expect(
        mark, 8, ev="system", where=lambda e: e["payload"].get("status") == "error"
    )
    assert system["payload"]["message"] == (
        f"You no longer have permission to read from this Channel topic: {topic}"
    )
    await js.log.expect(mark, 3, ev="status", channel="alerts", status="CLOSED")


async def test_a_private_channels_broadcasts_never_reach_a_public_joiner_of_the_topic(
    clients: Clients, server: Any, seed: Any, pool: asyncpg.Pool, policies: list[str], vsn: Any
) -> None:
    """Same topic name, one private and one public channel: each hears only its own kind."""
    prefix = unique("vault")
    topic = f"{prefix}:1"
    covered = f"(SELECT realtime.topic()) LIKE '{prefix}:%'"
    await policy(pool, policies, f"FOR SELECT TO authenticated USING ({covered})")
    await policy(pool, policies, f"FOR INSERT TO authenticated WITH CHECK ({covered})")
    _, insider_jwt = await seed.staff()
    _, sender_jwt = await seed.staff()
    insider = await clients.js(server.anon_key, vsn=vsn, access_token=insider_jwt, name="in")
    sender = await clients.js(server.anon_key, vsn=vsn, access_token=sender_jwt, name="sender")
    outsider = await clients.js(server.anon_key, vsn=vsn, name="outsider")
    for client in (insider, sender):
        client.join("vault", topic, config=PRIVATE, broadcast=("*",))
        assert (await first_status(client, "vault"))["status"] == "SUBSCRIBED"
    outsider.join("vault", topic, broadcast=("*",))
    assert (await first_status(outsider, "vault"))["status"] == "SUBSCRIBED"

    await sender.call("send", channel="vault", event="secret", payload={"n": 1})
    assert (await insider.log.expect(ev="broadcast", event="secret"))["payload"] == {"n": 1}
    await outsider.call("send", channel="vault", event="open", payload={"n": 2})
    # The insider does not hear the public one, the outsider never heard the private one.
    await sender.call("send", channel="vault", event="after", payload={"n": 3})
    await insider.log.expect(ev="broadcast", event="after")
    assert not insider.log.find(ev="broadcast", event="open")
    assert not outsider.log.find(ev="broadcast", event="secret")
    assert not outsider.log.find(ev="broadcast", event="after")


async def test_a_private_channels_presence_is_apart_from_the_public_channels_of_the_topic(
    clients: Clients, server: Any, seed: Any, pool: asyncpg.Pool, policies: list[str], vsn: Any
) -> None:
    """Same topic name: who is present on the private channels is seen only there, who is on
    the public ones only there (a public joiner neither sees nor joins the private presence)."""
    prefix = unique("backroom")
    topic = f"{prefix}:1"
    covered = f"(SELECT realtime.topic()) LIKE '{prefix}:%'"
    await policy(pool, policies, f"FOR SELECT TO authenticated USING ({covered})")
    await policy(pool, policies, f"FOR INSERT TO authenticated WITH CHECK ({covered})")
    _, insider_jwt = await seed.staff()
    _, watcher_jwt = await seed.staff()
    insider = await clients.js(server.anon_key, vsn=vsn, access_token=insider_jwt, name="in")
    outsider = await clients.js(server.anon_key, vsn=vsn, name="outsider")

    insider.join("room", topic, config={**PRIVATE, "presence": {"key": "in"}})
    assert (await first_status(insider, "room"))["status"] == "SUBSCRIBED"
    assert await insider.call("track", channel="room", payload={"who": "in"}) == "ok"
    await insider.log.expect(ev="presence", kind="join", key="in")

    outsider.join("room", topic, config={"presence": {"key": "out"}})
    assert (await first_status(outsider, "room"))["status"] == "SUBSCRIBED"
    synced = await outsider.log.expect(ev="presence", kind="sync")
    assert "in" not in synced["state"], synced
    assert await outsider.call("track", channel="room", payload={"who": "out"}) == "ok"
    await outsider.log.expect(ev="presence", kind="join", key="out")

    # Late joiners of each kind get the state of their own kind only.
    watcher = await clients.js(server.anon_key, vsn=vsn, access_token=watcher_jwt, name="w")
    watcher.join("room", topic, config={**PRIVATE, "presence": {"key": "w"}})
    assert (await first_status(watcher, "room"))["status"] == "SUBSCRIBED"
    await watcher.log.expect(ev="presence", kind="sync", where=lambda e: "in" in e["state"])
    assert sorted((await watcher.call("state", channel="room"))["presence"]) == ["in"]
    public = await clients.js(server.anon_key, vsn=vsn, name="public")
    public.join("room", topic, config={"presence": {"key": "p"}})
    assert (await first_status(public, "room"))["status"] == "SUBSCRIBED"
    await public.log.expect(ev="presence", kind="sync", where=lambda e: "out" in e["state"])
    assert sorted((await public.call("state", channel="room"))["presence"]) == ["out"]

    # The insider leaves: the watcher sees it go, the public side never heard of it.
    mark = watcher.log.mark()
    assert await insider.call("untrack", channel="room") == "ok"
    await watcher.log.expect(mark, ev="presence", kind="leave", key="in")
    for client in (outsider, public):
        assert not client.log.find(ev="presence", key="in"), client.name
    assert not insider.log.find(ev="presence", key="out")
    assert not watcher.log.find(ev="presence", key="out")


async def test_presence_on_a_private_channel_follows_the_presence_policies(
    clients: Clients, server: Any, seed: Any, pool: asyncpg.Pool, policies: list[str], vsn: Any
) -> None:
    """As on Supabase, policies on ``realtime.messages`` with ``extension = 'presence'`` decide
    presence apart from broadcast: a caller who may read only the topic's broadcasts joins, but
    gets no presence state or diffs, and may not track; one with presence read and write does."""
    prefix = unique("ward")
    topic = f"{prefix}:1"
    watcher_id, watcher_jwt = await seed.staff()
    _, blind_jwt = await seed.staff()
    covered = f"(SELECT realtime.topic()) LIKE '{prefix}:%'"
    is_watcher = f"(SELECT rtm.current_user_id()) = '{watcher_id}'"
    await policy(
        pool,
        policies,
        f"FOR SELECT TO authenticated USING ({covered} AND "
        f"(realtime.messages.extension = 'broadcast' OR {is_watcher}))",
    )
    await policy(
        pool,
        policies,
        f"FOR INSERT TO authenticated WITH CHECK ({covered} AND "
        f"realtime.messages.extension = 'presence' AND {is_watcher})",
    )
    watcher = await clients.js(server.anon_key, vsn=vsn, access_token=watcher_jwt, name="w")
    blind = await clients.js(server.anon_key, vsn=vsn, access_token=blind_jwt, name="blind")
    for client, key in ((watcher, "w"), (blind, "b")):
        client.join("ward", topic, config={**PRIVATE, "presence": {"key": key}}, broadcast=("*",))
        assert (await first_status(client, "ward"))["status"] == "SUBSCRIBED"

    assert await watcher.call("track", channel="ward", payload={"on": "duty"}) == "ok"
    await watcher.log.expect(ev="presence", kind="join", key="w")
    assert await blind.call("track", channel="ward", payload={"on": "duty"}) == "error"

    # A broadcast after the track reaches the blind channel (it reads broadcasts), so any
    # presence diff it was going to get has come before it.
    await pool.execute("SELECT realtime.send('{\"n\": 1}'::jsonb, 'round', $1, true)", topic)
    await blind.log.expect(ev="broadcast", event="round")
    assert not blind.log.find(ev="presence", key="w")
    assert blind.log.find(ev="presence", kind="join") == []
    assert "b" not in (await watcher.call("state", channel="ward"))["presence"]
