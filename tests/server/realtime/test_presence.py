"""Presence on a channel: track, re-track and untrack between real sockets, and a
participant's presence on a conversation, which follows the channel."""

from __future__ import annotations

from typing import Any

from realtime_messaging.protocol.frames import Vsn
from tests.conftest import RunningServer

from ..wsclient import RawSocket
from .conftest import Conversation


def _is(event: str):  # type: ignore[no-untyped-def]
    return lambda m: m.get("event") == event


async def test_presence_state_after_join_then_diffs_to_every_member(server: RunningServer) -> None:
    cfg_a = {"presence": {"key": "alice", "enabled": True}}
    cfg_b = {"presence": {"key": "bob", "enabled": True}}
    a = await RawSocket.connect(server.ws_url, server.anon_key)
    b = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V2)
    try:
        await a.join("pr-room", cfg_a)
        assert (await a.expect(_is("presence_state")))["payload"] == {}
        await a.send(
            "realtime:pr-room", "presence", {"event": "track", "payload": {"name": "A"}}, "3", "1"
        )
        assert (await a.reply_to("3"))["payload"]["status"] == "ok"
        diff = (await a.expect(_is("presence_diff")))["payload"]
        meta = diff["joins"]["alice"]["metas"][0]
        assert meta["name"] == "A" and meta["phx_ref"]
        assert diff["leaves"] == {}

        await b.join("pr-room", cfg_b)
        state = await b.expect(_is("presence_state"))
        assert state["payload"] == {"alice": {"metas": [meta]}}
        assert state["join_ref"] == "1"

        # Re-tracking replaces: a leave of the old meta and a join carrying phx_ref_prev.
        await a.send(
            "realtime:pr-room", "presence", {"event": "track", "payload": {"name": "A2"}}, "4", "1"
        )
        retrack = (await b.expect(_is("presence_diff")))["payload"]
        assert retrack["leaves"] == {"alice": {"metas": [meta]}}
        new_meta = retrack["joins"]["alice"]["metas"][0]
        assert new_meta["name"] == "A2" and new_meta["phx_ref_prev"] == meta["phx_ref"]

        await a.send("realtime:pr-room", "presence", {"event": "untrack"}, "5", "1")
        untrack = (await b.expect(_is("presence_diff")))["payload"]
        assert untrack == {"joins": {}, "leaves": {"alice": {"metas": [new_meta]}}}
    finally:
        await a.close()
        await b.close()


async def test_presence_track_needs_a_map(server: RunningServer) -> None:
    a = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await a.join("pr-bad")
        await a.send("realtime:pr-bad", "presence", {"event": "track", "payload": "nope"}, "2", "1")
        reply = await a.reply_to("2")
        assert reply["payload"] == {
            "status": "error",
            "response": {"reason": "Presence track payload must be a map"},
        }
    finally:
        await a.close()


def _presence(action: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    push: dict[str, Any] = {"type": "presence", "event": action}
    if payload is not None:
        push["payload"] = payload
    return push


async def test_a_participant_stays_present_after_untrack_without_the_clients_fields(
    conversation: Conversation,
) -> None:
    device, agent = conversation.device, conversation.agent
    topic = f"presence:{conversation.id}"
    customer = str(conversation.customer)

    def customer_joins(m: dict[str, Any]) -> bool:
        return m.get("event") == "presence_diff" and customer in m["payload"]["joins"]

    async def customers_meta() -> dict[str, Any]:
        (meta,) = (await agent.expect(customer_joins))["payload"]["joins"][customer]["metas"]
        return dict(meta)

    await agent.join(topic, {"presence": {"key": "ignored"}})
    assert (await agent.expect(_is("presence_state")))["payload"] == {}
    await device.join(topic)
    present = await customers_meta()
    assert {k: present[k] for k in ("key", "kind", "status")} == {
        "key": customer,
        "kind": "customer",
        "status": "online",
    }
    await device.send(
        f"realtime:{topic}", "presence", _presence("track", {"device": "phone"}), "5", "1"
    )
    assert (await device.reply_to("5"))["payload"]["status"] == "ok"
    tracked = await customers_meta()
    assert tracked["device"] == "phone" and tracked["kind"] == "customer"
    await device.send(f"realtime:{topic}", "presence", _presence("untrack"), "6", "1")
    assert (await device.reply_to("6"))["payload"]["status"] == "ok"
    # Untrack drops what the client added; the participant is still present.
    untracked = await customers_meta()
    assert "device" not in untracked
    assert untracked["key"] == customer and untracked["status"] == "online"
