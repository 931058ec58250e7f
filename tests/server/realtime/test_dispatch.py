"""The path of one frame: decoding, heartbeats, the socket's message budget, routing a push to
its channel, and a failing handler erroring only its own channel."""

from __future__ import annotations

import logging

import pytest

from realtime_messaging.protocol.frames import Vsn
from realtime_messaging.server.realtime import broadcast
from tests.conftest import RunningServer, running_server

from ..wsclient import RawSocket
from .metrics import socket_errors


async def test_heartbeat_is_answered_with_the_same_ref_v1(server: RunningServer) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await sock.send("phoenix", "heartbeat", {}, None)
        reply = await sock.recv()
        assert reply == {
            "topic": "phoenix",
            "event": "phx_reply",
            "payload": {"status": "ok", "response": {}},
            "ref": None,
        }
    finally:
        await sock.close()


async def test_heartbeat_is_answered_with_the_same_ref_v2(server: RunningServer) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V2)
    try:
        await sock.send("phoenix", "heartbeat", {}, "7")
        assert await sock.recv() == {
            "join_ref": None,
            "ref": "7",
            "topic": "phoenix",
            "event": "phx_reply",
            "payload": {"status": "ok", "response": {}},
        }
    finally:
        await sock.close()


async def test_push_to_unjoined_topic_is_unmatched(server: RunningServer) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await sock.send(
            "realtime:nowhere", "broadcast", {"type": "broadcast", "event": "x", "payload": {}}, "5"
        )
        reply = await sock.reply_to("5")
        assert reply["payload"] == {"status": "error", "response": {"reason": "unmatched topic"}}
    finally:
        await sock.close()


async def test_unknown_event_gets_an_error_reply_and_the_socket_stays(
    server: RunningServer,
) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await sock.join("room-unknown")
        await sock.send("realtime:room-unknown", "frobnicate", {}, "9", "1")
        reply = await sock.reply_to("9")
        assert reply["payload"]["status"] == "error"
        assert "frobnicate" in reply["payload"]["response"]["reason"]
        await sock.send("phoenix", "heartbeat", {}, "10")
        assert (await sock.reply_to("10"))["payload"]["status"] == "ok"
    finally:
        await sock.close()


async def test_malformed_json_closes_only_that_socket_with_1007(server: RunningServer) -> None:
    bad = await RawSocket.connect(server.ws_url, server.anon_key)
    good = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        before = await socket_errors(server.http_url, "protocol")
        await good.join("room-neighbour")
        await bad.send_raw("{not json")
        assert await bad.closed() == 1007
        await good.send("phoenix", "heartbeat", {}, "2")
        assert (await good.reply_to("2"))["payload"]["status"] == "ok"
        assert await socket_errors(server.http_url, "protocol") == before + 1
    finally:
        await bad.close()
        await good.close()


@pytest.mark.parametrize(
    "frame",
    ['["only", "four", "items", "here"]', '{"topic": "t", "event": "e"}', "[1,2,3,4,5]", '"text"'],
)
async def test_wrong_frame_shapes_close_with_1007(server: RunningServer, frame: str) -> None:
    sock = await RawSocket.connect(
        server.ws_url, server.anon_key, Vsn.V2 if frame.startswith("[") else Vsn.V1
    )
    try:
        await sock.send_raw(frame)
        assert await sock.closed() == 1007
    finally:
        await sock.close()


async def test_pushes_over_the_budget_are_refused_and_the_socket_stays(database_url: str) -> None:
    async with running_server(database_url, max_events_per_second=5) as srv:
        sock = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            await sock.join("room-budget", {"broadcast": {"ack": True}})
            refs = [str(n) for n in range(10, 20)]
            for ref in refs:
                await sock.send(
                    "realtime:room-budget",
                    "broadcast",
                    {"type": "broadcast", "event": "e", "payload": {}},
                    ref,
                    "1",
                )
            replies = [(await sock.reply_to(ref))["payload"] for ref in refs]
            refused = [r for r in replies if r["status"] == "error"]
            assert refused, replies
            assert all(r["response"] == {"reason": "Too many messages per second"} for r in refused)
            # Heartbeats are outside the budget: the socket is still served.
            await sock.send("phoenix", "heartbeat", {}, "99")
            assert (await sock.reply_to("99"))["payload"]["status"] == "ok"
        finally:
            await sock.close()


async def test_a_failing_handler_errors_only_its_channel(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("injected failure")

    a = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await a.join("fails")
        await a.join("survives", {"broadcast": {"self": True}})
        monkeypatch.setattr(broadcast, "publish", broken)
        with caplog.at_level(logging.ERROR, logger="realtime_messaging.server.realtime"):
            await a.send(
                "realtime:fails",
                "broadcast",
                {"type": "broadcast", "event": "x", "payload": {}},
                "5",
                "1",
            )
            error = await a.recv()
        assert error == {"topic": "realtime:fails", "event": "phx_error", "payload": {}, "ref": "1"}
        assert any(
            r.getMessage() == "error handling BroadcastReceived on realtime:fails"
            for r in caplog.records
        )
        monkeypatch.undo()
        await a.send(
            "realtime:survives",
            "broadcast",
            {"type": "broadcast", "event": "ok", "payload": {}},
            None,
            "2",
        )
        assert (await a.expect(lambda m: m.get("event") == "broadcast"))["payload"]["event"] == "ok"
        # The errored channel is gone: a push to it is unmatched.
        await a.send(
            "realtime:fails",
            "broadcast",
            {"type": "broadcast", "event": "y", "payload": {}},
            "6",
            "1",
        )
        assert (await a.reply_to("6"))["payload"]["response"]["reason"] == "unmatched topic"
    finally:
        await a.close()
