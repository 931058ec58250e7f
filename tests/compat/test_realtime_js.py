"""@supabase/realtime-js 2.119.0 against the real server over real sockets.

Each test runs once with the client's default protocol (vsn 2.0.0: JSON arrays, and binary
kind-3 frames for every ``channel.send``) and once with vsn 1.0.0 (JSON objects). Broadcast and
presence tests pair the JS client with a realtime-py client (always vsn 1.0.0), so a broadcast
sent as a binary frame must reach a JSON-only receiver and the other way round.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from .clients import EXPIRY_GRACE, PAYLOAD, Clients, first_status, metas, unauthorized, unique


@pytest.fixture(params=[None, "1.0.0"], ids=["vsn2-default", "vsn1"])
def vsn(request: pytest.FixtureRequest) -> str | None:
    """The ``vsn`` option given to RealtimeClient (None: its default, which is 2.0.0)."""
    return request.param  # type: ignore[no-any-return]


async def test_client_speaks_the_requested_protocol(
    clients: Clients, server: Any, vsn: Any
) -> None:
    """Guards the parametrisation: vsn 2.0.0 frames are JSON arrays, vsn 1.0.0 ones objects,
    in both directions."""
    js = await clients.js(server.anon_key, vsn=vsn, trace_frames=True)
    assert js.log.find(ev="ready")[0]["vsn"] == (vsn or "2.0.0")
    js.join("room", unique("public-room"))
    assert (await first_status(js, "room"))["status"] == "SUBSCRIBED"
    frames = js.log.find(ev="frame")
    assert {(e["dir"], e["event"]) for e in frames} >= {("out", "phx_join"), ("in", "phx_reply")}
    expected = "object" if vsn == "1.0.0" else "array"
    assert {(e["binary"], e["shape"]) for e in frames} == {(False, expected)}, frames


# -- 1. SUBSCRIBED --------------------------------------------------------------------------


async def test_subscribes_to_public_topic_with_anon_key(
    clients: Clients, server: Any, vsn: Any
) -> None:
    js = await clients.js(server.anon_key, vsn=vsn)
    js.join("room", unique("public-room"))
    status = await first_status(js, "room")
    assert status["status"] == "SUBSCRIBED", status


async def test_subscribes_to_conversation_with_portal_token(
    clients: Clients, server: Any, seed: Any, vsn: Any
) -> None:
    customer_id, portal_token = await seed.customer()
    conversation_id = await seed.conversation(customer_id)
    topic = f"conversation:{conversation_id}"

    # As supabase-js does it: the anon key connects, the user's token goes in the join.
    via_join = await clients.js(server.anon_key, vsn=vsn, access_token=portal_token)
    via_join.join("conv", topic)
    # The portal token as the socket's apikey, with no access_token in the join.
    via_apikey = await clients.js(portal_token, vsn=vsn)
    via_apikey.join("conv", topic)

    for js in (via_join, via_apikey):
        status = await first_status(js, "conv")
        assert status["status"] == "SUBSCRIBED", (js.name, status)


async def test_subscribes_to_conversation_with_staff_jwt(
    clients: Clients, server: Any, seed: Any, vsn: Any
) -> None:
    customer_id, _ = await seed.customer()
    conversation_id = await seed.conversation(customer_id)
    _, staff_jwt = await seed.staff()
    topic = f"conversation:{conversation_id}"

    via_join = await clients.js(server.anon_key, vsn=vsn, access_token=staff_jwt)
    via_join.join("conv", topic)
    via_apikey = await clients.js(staff_jwt, vsn=vsn)
    via_apikey.join("conv", topic)

    for js in (via_join, via_apikey):
        status = await first_status(js, "conv")
        assert status["status"] == "SUBSCRIBED", (js.name, status)


# -- 2. broadcast ---------------------------------------------------------------------------


async def test_broadcast_from_js_reaches_py_with_ack_and_self(
    clients: Clients, server: Any, vsn: Any
) -> None:
    topic = unique("room")
    py = clients.py(server.anon_key)
    await py.join("room", topic, broadcast=("*",))
    assert (await first_status(py, "room"))["status"] == "SUBSCRIBED"

    js = await clients.js(server.anon_key, vsn=vsn, trace_frames=True)
    js.join("room", topic, config={"broadcast": {"self": True, "ack": True}}, broadcast=("*",))
    assert (await first_status(js, "room"))["status"] == "SUBSCRIBED"

    # ack: true makes send() wait for the server's reply instead of resolving at once.
    mark = js.log.mark()
    assert await js.call("send", channel="room", event="chat", payload=PAYLOAD) == "ok"
    sent = [e for e in js.log.find(mark, ev="frame", dir="out") if e.get("event") != "heartbeat"]
    if vsn is None:  # 2.0.0: the broadcast went out as a binary user-broadcast push (kind 3)
        assert [(e["binary"], e.get("kind")) for e in sent] == [(True, 3)], sent
    else:
        assert [(e["binary"], e.get("event")) for e in sent] == [(False, "broadcast")], sent

    received = await py.log.expect(ev="broadcast", channel="room")
    assert (received["event"], received["payload"]) == ("chat", PAYLOAD)
    echoed = await js.log.expect(ev="broadcast", channel="room")  # self: true
    assert (echoed["event"], echoed["payload"]) == ("chat", PAYLOAD)


async def test_broadcast_from_py_reaches_js_and_skips_the_senders(
    clients: Clients, server: Any, vsn: Any
) -> None:
    topic = unique("room")
    js = await clients.js(server.anon_key, vsn=vsn)
    js.join(
        "room", topic, config={"broadcast": {"ack": True}}, broadcast=("chat", "marker", "done")
    )
    assert (await first_status(js, "room"))["status"] == "SUBSCRIBED"

    py = clients.py(server.anon_key)
    await py.join(
        "room", topic, config={"broadcast": {"ack": True, "self": False}}, broadcast=("*",)
    )
    assert (await first_status(py, "room"))["status"] == "SUBSCRIBED"

    assert await py.send("room", "chat", PAYLOAD) == "ok"
    received = await js.log.expect(ev="broadcast", channel="room", event="chat")
    assert received["payload"] == PAYLOAD

    # self: false (both clients' default): a sender never gets its own message. Each message
    # below is sent only after the previous one arrived, and a socket receives in order, so an
    # echo of "chat" to py would come before "marker", and an echo of "marker" to js before "done".
    assert await js.call("send", channel="room", event="marker", payload={"after": "chat"}) == "ok"
    await py.log.expect(ev="broadcast", channel="room", event="marker")
    assert await py.send("room", "done", {}) == "ok"
    await js.log.expect(ev="broadcast", channel="room", event="done")
    assert py.log.find(ev="broadcast", event="chat") == []
    assert js.log.find(ev="broadcast", event="marker") == []


# -- 3. presence ----------------------------------------------------------------------------


async def test_presence_syncs_between_js_and_py(clients: Clients, server: Any, vsn: Any) -> None:
    topic = unique("lobby")
    py = clients.py(server.anon_key)
    await py.join("lobby", topic, config={"presence": {"key": "py-user", "enabled": True}})
    assert (await first_status(py, "lobby"))["status"] == "SUBSCRIBED"
    await py.track("lobby", {"name": "py", "status": "online"})
    await py.log.expect(ev="presence", kind="join", key="py-user")

    # A late joiner gets the current state (presence_state) and reports it through sync.
    js = await clients.js(server.anon_key, vsn=vsn)
    js.join("lobby", topic, config={"presence": {"key": "js-user"}})
    assert (await first_status(js, "lobby"))["status"] == "SUBSCRIBED"
    await js.log.expect(ev="presence", kind="sync", where=lambda e: "py-user" in e["state"])
    state = (await js.call("state", channel="lobby"))["presence"]
    assert metas(state, "py-user") == [{"name": "py", "status": "online"}]

    # js tracks: py sees a join, then a sync whose state holds the meta.
    mark = py.log.mark()
    assert await js.call("track", channel="lobby", payload={"name": "js", "n": 1}) == "ok"
    joined = await py.log.expect(mark, ev="presence", kind="join", key="js-user")
    assert metas({"js-user": joined["presences"]}, "js-user") == [{"name": "js", "n": 1}]
    await py.log.expect(mark, ev="presence", kind="sync", where=lambda e: "js-user" in e["state"])
    assert metas(py.presence_state("lobby"), "js-user") == [{"name": "js", "n": 1}]
    # ... and so does the tracker itself (presence_diff goes to every member).
    await js.log.expect(ev="presence", kind="join", key="js-user")

    # js untracks: py sees the leave.
    mark = py.log.mark()
    assert await js.call("untrack", channel="lobby") == "ok"
    left = await py.log.expect(mark, ev="presence", kind="leave", key="js-user")
    assert metas({"js-user": left["presences"]}, "js-user") == [{"name": "js", "n": 1}]
    assert "js-user" not in py.presence_state("lobby")

    # py untracks: js sees the leave and the key disappears from presenceState().
    mark = js.log.mark()
    await py.untrack("lobby")
    await js.log.expect(mark, ev="presence", kind="leave", key="py-user")
    await js.log.expect(mark, ev="presence", kind="sync", where=lambda e: e["state"] == {})

    # js tracks again and disconnects without untracking: py sees the leave.
    mark = py.log.mark()
    assert await js.call("track", channel="lobby", payload={"name": "js", "n": 2}) == "ok"
    await py.log.expect(mark, ev="presence", kind="join", key="js-user")
    mark = py.log.mark()
    await js.close()
    left = await py.log.expect(mark, ev="presence", kind="leave", key="js-user")
    assert metas({"js-user": left["presences"]}, "js-user") == [{"name": "js", "n": 2}]
    assert py.presence_state("lobby") == {}


# -- 4. token refresh -----------------------------------------------------------------------


async def test_set_auth_keeps_the_channel_past_the_old_token_expiry(
    clients: Clients, server: Any, seed: Any, vsn: Any
) -> None:
    customer_id, _ = await seed.customer()
    conversation_id = await seed.conversation(customer_id)
    user_id, staff_jwt = await seed.staff()
    topic = f"conversation:{conversation_id}"

    js = await clients.js(server.anon_key, vsn=vsn)
    # The control joins with a token as short-lived as the one js starts with, and never
    # refreshes it: its closing proves the server enforced that expiry (no guessed sleep).
    control = clients.py(server.anon_key, name="control")
    sender = clients.py(staff_jwt, name="sender")

    short = seed.staff_token(user_id, 2)
    await js.call("setAuth", token=short)
    js.join("conv", topic, config={"broadcast": {"self": True, "ack": True}}, broadcast=("*",))
    await control.set_auth(short)
    await control.join("conv", topic)
    assert (await first_status(control, "conv"))["status"] == "SUBSCRIBED"
    assert (await first_status(js, "conv"))["status"] == "SUBSCRIBED"

    await js.call("setAuth", token=seed.staff_token(user_id, 600))

    ended = await control.log.expect(
        ev="status", channel="conv", where=lambda e: e["status"] != "SUBSCRIBED", timeout=10
    )
    assert ended["status"] in ("CHANNEL_ERROR", "CLOSED"), ended

    # The refreshed channel is still joined and works both ways.
    mark = js.log.mark()
    await sender.join("conv", topic)
    assert (await first_status(sender, "conv"))["status"] == "SUBSCRIBED"
    await sender.send("conv", "after-refresh", {"ok": True})
    received = await js.log.expect(mark, ev="broadcast", event="after-refresh")
    assert received["payload"] == {"ok": True}
    assert await js.call("send", channel="conv", event="echo", payload={"n": 1}) == "ok"
    await js.log.expect(mark, ev="broadcast", event="echo")
    assert [e for e in js.log.find(ev="status") if e["status"] != "SUBSCRIBED"] == []
    assert (await js.call("state", channel="conv"))["state"] == "joined"


# -- 5. forbidden joins ---------------------------------------------------------------------


async def test_customer_cannot_join_another_customers_topic(
    clients: Clients, server: Any, seed: Any, vsn: Any
) -> None:
    customer_a, portal_a = await seed.customer()
    customer_b, _ = await seed.customer()
    js = await clients.js(server.anon_key, vsn=vsn, access_token=portal_a)

    js.join("own", f"customer:{customer_a}:messages")
    assert (await first_status(js, "own"))["status"] == "SUBSCRIBED"

    forbidden = f"customer:{customer_b}:messages"
    js.join("other", forbidden)
    status = await first_status(js, "other", timeout=8)
    assert (status["status"], status["error"]) == ("CHANNEL_ERROR", unauthorized(forbidden))


async def test_anon_cannot_join_a_conversation(
    clients: Clients, server: Any, seed: Any, vsn: Any
) -> None:
    customer_id, _ = await seed.customer()
    conversation_id = await seed.conversation(customer_id)
    js = await clients.js(server.anon_key, vsn=vsn)

    topic = f"conversation:{conversation_id}"
    js.join("conv", topic)
    status = await first_status(js, "conv", timeout=8)
    assert (status["status"], status["error"]) == ("CHANNEL_ERROR", unauthorized(topic))


# -- 6. token expiry ------------------------------------------------------------------------


async def test_expired_staff_token_closes_the_channel(
    clients: Clients, server: Any, seed: Any, vsn: Any
) -> None:
    customer_id, _ = await seed.customer()
    conversation_id = await seed.conversation(customer_id)
    user_id, _ = await seed.staff()
    js = await clients.js(server.anon_key, vsn=vsn)

    short = seed.staff_token(user_id, 2)
    expires_at = jwt.decode(short, options={"verify_signature": False})["exp"]
    await js.call("setAuth", token=short)
    js.join("conv", f"conversation:{conversation_id}", broadcast=("*",))
    assert (await first_status(js, "conv"))["status"] == "SUBSCRIBED"
    mark = js.log.mark()

    timeout = expires_at + EXPIRY_GRACE + 1 - time.time()
    system = await js.log.expect(
        mark, timeout, ev="system", where=lambda e: e["payload"].get("status") == "error"
    )
    assert system["payload"]["extension"] == "system", system
    assert "expired" in system["payload"]["message"].lower(), system
    closed = await js.log.expect(mark, 3, ev="status", channel="conv", status="CLOSED")
    assert js.log.events.index(system) < js.log.events.index(closed)  # system, then phx_close
    assert closed["at"] <= expires_at + EXPIRY_GRACE, (closed, expires_at)
    assert (await js.call("state", channel="conv"))["state"] == "closed"
