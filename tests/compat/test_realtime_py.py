"""realtime-py 2.34.1 (``AsyncRealtimeClient``, always vsn 1.0.0) against the real server.

Cross-client broadcast and presence (realtime-py with realtime-js) are in test_realtime_js.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt

from .clients import EXPIRY_GRACE, PAYLOAD, Clients, first_status, metas, unauthorized, unique

# -- 1. SUBSCRIBED --------------------------------------------------------------------------


async def test_subscribes_to_public_topic_with_anon_key(clients: Clients, server: Any) -> None:
    py = clients.py(server.anon_key)
    await py.join("room", unique("public-room"))
    status = await first_status(py, "room")
    assert status["status"] == "SUBSCRIBED", status
    assert py.channels["room"].is_joined


async def test_subscribes_to_conversation_with_portal_token(
    clients: Clients, server: Any, seed: Any
) -> None:
    customer_id, portal_token = await seed.customer()
    conversation_id = await seed.conversation(customer_id)
    topic = f"conversation:{conversation_id}"

    # As supabase-py does it: the anon key connects, set_auth puts the user's token in the join.
    via_set_auth = clients.py(server.anon_key, name="set_auth")
    await via_set_auth.set_auth(portal_token)
    await via_set_auth.join("conv", topic)
    # The portal token as the client's token (the socket apikey and the join access_token).
    via_token = clients.py(portal_token, name="token")
    await via_token.join("conv", topic)

    for py in (via_set_auth, via_token):
        status = await first_status(py, "conv")
        assert status["status"] == "SUBSCRIBED", (py.name, status)


async def test_subscribes_to_conversation_with_staff_jwt(
    clients: Clients, server: Any, seed: Any
) -> None:
    customer_id, _ = await seed.customer()
    conversation_id = await seed.conversation(customer_id)
    user_id, staff_jwt = await seed.staff()
    topic = f"conversation:{conversation_id}"

    via_set_auth = clients.py(server.anon_key, name="set_auth")
    await via_set_auth.set_auth(staff_jwt)
    await via_set_auth.join("conv", topic)
    via_token = clients.py(staff_jwt, name="token")
    await via_token.join("conv", topic)
    # A staff user may also join its own staff topic.
    await via_token.join("inbox", f"staff:{user_id}:messages")

    for py, channel in ((via_set_auth, "conv"), (via_token, "conv"), (via_token, "inbox")):
        status = await first_status(py, channel)
        assert status["status"] == "SUBSCRIBED", (py.name, channel, status)


# -- 2. broadcast ---------------------------------------------------------------------------


async def test_broadcast_between_two_clients_with_ack_and_self(
    clients: Clients, server: Any
) -> None:
    topic = unique("room")
    sender = clients.py(server.anon_key, name="sender")
    await sender.join(
        "room", topic, config={"broadcast": {"self": True, "ack": True}}, broadcast=("*",)
    )
    receiver = clients.py(server.anon_key, name="receiver")
    await receiver.join(
        "room", topic, config={"broadcast": {"self": False, "ack": True}}, broadcast=("*",)
    )
    for py in (sender, receiver):
        assert (await first_status(py, "room"))["status"] == "SUBSCRIBED", py.name

    assert await sender.send("room", "chat", PAYLOAD) == "ok"  # ack: true -> the server replied
    received = await receiver.log.expect(ev="broadcast", channel="room", event="chat")
    assert received["payload"] == PAYLOAD
    echoed = await sender.log.expect(ev="broadcast", channel="room", event="chat")  # self: true
    assert echoed["payload"] == PAYLOAD

    # The receiver (self: false) answers; it must not get its own reply. Its socket receives in
    # order, so the sender's later "marker" arriving first shows "reply" was not delivered to it.
    assert await receiver.send("room", "reply", {"to": "chat"}) == "ok"
    reply = await sender.log.expect(ev="broadcast", channel="room", event="reply")
    assert reply["payload"] == {"to": "chat"}
    assert await sender.send("room", "marker", {}) == "ok"
    await receiver.log.expect(ev="broadcast", channel="room", event="marker")
    assert receiver.log.find(ev="broadcast", event="reply") == []


# -- 3. presence ----------------------------------------------------------------------------


async def test_presence_syncs_between_two_clients(clients: Clients, server: Any) -> None:
    topic = unique("lobby")
    alice = clients.py(server.anon_key, name="alice")
    await alice.join("lobby", topic, config={"presence": {"key": "alice", "enabled": True}})
    bob = clients.py(server.anon_key, name="bob")
    await bob.join("lobby", topic, config={"presence": {"key": "bob", "enabled": True}})
    for py in (alice, bob):
        assert (await first_status(py, "lobby"))["status"] == "SUBSCRIBED", py.name

    # alice tracks: bob sees a join, then a sync whose state holds the meta.
    mark = bob.log.mark()
    await alice.track("lobby", {"name": "Alice", "typing": False})
    joined = await bob.log.expect(mark, ev="presence", kind="join", key="alice")
    assert metas({"alice": joined["presences"]}, "alice") == [{"name": "Alice", "typing": False}]
    await bob.log.expect(mark, ev="presence", kind="sync", where=lambda e: "alice" in e["state"])
    assert metas(bob.presence_state("lobby"), "alice") == [{"name": "Alice", "typing": False}]

    # A late joiner receives the current state (presence_state).
    carol = clients.py(server.anon_key, name="carol")
    await carol.join("lobby", topic, config={"presence": {"key": "carol", "enabled": True}})
    await carol.log.expect(ev="presence", kind="sync", where=lambda e: "alice" in e["state"])
    assert metas(carol.presence_state("lobby"), "alice") == [{"name": "Alice", "typing": False}]

    # alice untracks: bob sees the leave.
    mark = bob.log.mark()
    await alice.untrack("lobby")
    left = await bob.log.expect(mark, ev="presence", kind="leave", key="alice")
    assert metas({"alice": left["presences"]}, "alice") == [{"name": "Alice", "typing": False}]
    assert "alice" not in bob.presence_state("lobby")

    # alice tracks again and drops her connection without leaving: bob sees the leave.
    mark = bob.log.mark()
    await alice.track("lobby", {"name": "Alice", "typing": True})
    await bob.log.expect(mark, ev="presence", kind="join", key="alice")
    mark = bob.log.mark()
    await alice.close()
    left = await bob.log.expect(mark, ev="presence", kind="leave", key="alice")
    assert metas({"alice": left["presences"]}, "alice") == [{"name": "Alice", "typing": True}]
    assert bob.presence_state("lobby") == {}


# -- 4. token refresh -----------------------------------------------------------------------


async def test_set_auth_keeps_the_channel_past_the_old_token_expiry(
    clients: Clients, server: Any, seed: Any
) -> None:
    customer_id, _ = await seed.customer()
    conversation_id = await seed.conversation(customer_id)
    user_id, staff_jwt = await seed.staff()
    topic = f"conversation:{conversation_id}"

    refreshed = clients.py(server.anon_key, name="refreshed")
    # The control joins with a token as short-lived as the refreshed client's first one and
    # never refreshes it: its closing proves the server enforced that expiry (no guessed sleep).
    control = clients.py(server.anon_key, name="control")
    short = seed.staff_token(user_id, 2)
    for py in (refreshed, control):
        await py.set_auth(short)
    await refreshed.join(
        "conv", topic, config={"broadcast": {"self": True, "ack": True}}, broadcast=("*",)
    )
    await control.join("conv", topic)
    for py in (refreshed, control):
        assert (await first_status(py, "conv"))["status"] == "SUBSCRIBED", py.name

    await refreshed.set_auth(seed.staff_token(user_id, 600))

    ended = await control.log.expect(
        ev="status", channel="conv", where=lambda e: e["status"] != "SUBSCRIBED", timeout=10
    )
    assert ended["status"] in ("CHANNEL_ERROR", "CLOSED"), ended

    # The refreshed channel is still joined and works both ways.
    mark = refreshed.log.mark()
    sender = clients.py(staff_jwt, name="sender")
    await sender.join("conv", topic)
    assert (await first_status(sender, "conv"))["status"] == "SUBSCRIBED"
    await sender.send("conv", "after-refresh", {"ok": True})
    received = await refreshed.log.expect(mark, ev="broadcast", event="after-refresh")
    assert received["payload"] == {"ok": True}
    assert await refreshed.send("conv", "echo", {"n": 1}) == "ok"
    await refreshed.log.expect(mark, ev="broadcast", event="echo")
    assert [e for e in refreshed.log.find(ev="status") if e["status"] != "SUBSCRIBED"] == []
    assert refreshed.channels["conv"].is_joined


# -- 5. forbidden joins ---------------------------------------------------------------------


async def test_customer_cannot_join_another_customers_topic(
    clients: Clients, server: Any, seed: Any
) -> None:
    customer_a, portal_a = await seed.customer()
    customer_b, _ = await seed.customer()
    py = clients.py(server.anon_key)
    await py.set_auth(portal_a)

    await py.join("own", f"customer:{customer_a}:messages")
    assert (await first_status(py, "own"))["status"] == "SUBSCRIBED"

    forbidden = f"customer:{customer_b}:messages"
    await py.join("other", forbidden)
    status = await first_status(py, "other", timeout=8)
    assert status["status"] == "CHANNEL_ERROR", status
    assert json.loads(status["error"]) == {"reason": unauthorized(forbidden)}


async def test_staff_cannot_join_another_staff_users_topic(
    clients: Clients, server: Any, seed: Any
) -> None:
    _, staff_jwt = await seed.staff()
    other_user, _ = await seed.staff()
    py = clients.py(staff_jwt)

    forbidden = f"staff:{other_user}:messages"
    await py.join("other", forbidden)
    status = await first_status(py, "other", timeout=8)
    assert status["status"] == "CHANNEL_ERROR", status
    assert json.loads(status["error"]) == {"reason": unauthorized(forbidden)}


async def test_anon_cannot_join_a_conversation(clients: Clients, server: Any, seed: Any) -> None:
    customer_id, _ = await seed.customer()
    conversation_id = await seed.conversation(customer_id)
    py = clients.py(server.anon_key)

    topic = f"conversation:{conversation_id}"
    await py.join("conv", topic)
    status = await first_status(py, "conv", timeout=8)
    assert status["status"] == "CHANNEL_ERROR", status
    assert json.loads(status["error"]) == {"reason": unauthorized(topic)}


# -- 6. token expiry ------------------------------------------------------------------------


async def test_expired_staff_token_closes_the_channel(
    clients: Clients, server: Any, seed: Any
) -> None:
    customer_id, _ = await seed.customer()
    conversation_id = await seed.conversation(customer_id)
    user_id, _ = await seed.staff()
    py = clients.py(server.anon_key)

    short = seed.staff_token(user_id, 2)
    expires_at = jwt.decode(short, options={"verify_signature": False})["exp"]
    await py.set_auth(short)
    await py.join("conv", f"conversation:{conversation_id}", broadcast=("*",))
    assert (await first_status(py, "conv"))["status"] == "SUBSCRIBED"
    mark = py.log.mark()

    # realtime-py turns the system error into CHANNEL_ERROR (carrying its payload), and the
    # phx_close that follows into CLOSED.
    timeout = expires_at + EXPIRY_GRACE + 1 - time.time()
    errored = await py.log.expect(mark, timeout, ev="status", channel="conv")
    assert errored["status"] == "CHANNEL_ERROR", errored
    system = json.loads(errored["error"])
    assert (system["extension"], system["status"]) == ("system", "error"), system
    assert "expired" in system["message"].lower(), system
    closed = await py.log.expect(mark, 3, ev="status", channel="conv", status="CLOSED")
    assert closed["at"] <= expires_at + EXPIRY_GRACE, (closed, expires_at)
    assert py.channels["conv"].is_closed
