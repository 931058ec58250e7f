"""The WebSocket endpoint over real sockets: handshake, heartbeats, joins, bad input, limits."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import jwt
import orjson
import pytest

from realtime_messaging.protocol.frames import Vsn
from tests.conftest import TEST_SECRET, RunningServer, running_server

from .wsclient import RawSocket


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


async def test_both_socket_paths_upgrade(server: RunningServer) -> None:
    url = server.http_url.replace("http://", "ws://") + "/socket/websocket"
    sock = await RawSocket.connect(url, server.anon_key)
    try:
        reply = await sock.join("room-paths")
        assert reply["status"] == "ok"
    finally:
        await sock.close()


async def test_join_echoes_bindings_in_order_with_stable_nonzero_ids(server: RunningServer) -> None:
    bindings = [
        {"event": "INSERT", "schema": "public", "table": "customer_messages", "filter": "id=eq.1"},
        {"event": "*", "schema": "public", "table": "message_read_receipts", "extra": [1]},
    ]
    a = await RawSocket.connect(server.ws_url, server.anon_key)
    b = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V2)
    try:
        ra = await a.join("room-bindings", {"postgres_changes": bindings})
        rb = await b.join("room-bindings", {"postgres_changes": bindings})
        entries = ra["response"]["postgres_changes"]
        assert [{k: v for k, v in e.items() if k != "id"} for e in entries] == bindings
        assert all(isinstance(e["id"], int) and e["id"] > 0 for e in entries)
        assert entries[0]["id"] != entries[1]["id"]
        assert rb["response"]["postgres_changes"] == entries
    finally:
        await a.close()
        await b.close()


async def test_join_accepts_null_config_sections(server: RunningServer) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        ref = sock.next_ref()
        payload = {"config": {"broadcast": None, "presence": None, "postgres_changes": None}}
        await sock.send("realtime:room-null", "phx_join", payload, ref, ref)
        reply = await sock.reply_to(ref)
        assert reply["payload"] == {"status": "ok", "response": {"postgres_changes": []}}
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


async def test_leave_replies_ok_then_phx_close(server: RunningServer) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await sock.join("room-leave")
        await sock.send("realtime:room-leave", "phx_leave", {}, "20", "1")
        reply = await sock.recv()
        assert reply["event"] == "phx_reply" and reply["ref"] == "20"
        assert reply["payload"]["status"] == "ok"
        close = await sock.recv()
        assert close["event"] == "phx_close" and close["ref"] == "1"
        await sock.send(
            "realtime:room-leave",
            "broadcast",
            {"type": "broadcast", "event": "e", "payload": {}},
            "21",
        )
        assert (await sock.reply_to("21"))["payload"]["response"]["reason"] == "unmatched topic"
    finally:
        await sock.close()


async def test_malformed_json_closes_only_that_socket_with_1007(server: RunningServer) -> None:
    bad = await RawSocket.connect(server.ws_url, server.anon_key)
    good = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await good.join("room-neighbour")
        await bad.send_raw("{not json")
        assert await bad.closed() == 1007
        await good.send("phoenix", "heartbeat", {}, "2")
        assert (await good.reply_to("2"))["payload"]["status"] == "ok"
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


async def test_oversized_frame_closes_with_1009(database_url: str) -> None:
    async with running_server(database_url, max_frame_bytes=4096) as srv:
        sock = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            await sock.send("realtime:big", "phx_join", {"config": {}, "pad": "x" * 8192}, "1", "1")
            assert await sock.closed() == 1009
        finally:
            await sock.close()


async def test_channel_limit_per_connection(database_url: str) -> None:
    async with running_server(database_url, max_channels_per_connection=2) as srv:
        sock = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            assert (await sock.join("limit-1"))["status"] == "ok"
            assert (await sock.join("limit-2"))["status"] == "ok"
            third = await sock.join("limit-3")
            assert third == {
                "status": "error",
                "response": {"reason": "ChannelRateLimitReached: Too many channels"},
            }
            assert (await sock.join("limit-1"))[
                "status"
            ] == "ok"  # rejoining a joined topic is not a new channel
        finally:
            await sock.close()


async def test_join_flood_is_refused_and_disconnected(database_url: str) -> None:
    async with running_server(database_url, max_joins_per_second=5) as srv:
        flood = await RawSocket.connect(srv.ws_url, srv.anon_key)
        other = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            for i in range(10):
                ref = str(i + 1)
                await flood.send(f"realtime:flood-{i}", "phx_join", {}, ref, ref)
            refused = await flood.expect(lambda m: m.get("payload", {}).get("status") == "error")
            assert (
                refused["payload"]["response"]["reason"]
                == "ClientJoinRateLimitReached: Too many joins per second"
            )
            assert await flood.closed() == 1008
            assert (await other.join("after-flood"))["status"] == "ok"
        finally:
            await flood.close()
            await other.close()


def _token(claims: dict[str, object], secret: str = TEST_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("apikey", "message"),
    [
        (None, "API key is missing"),
        ("not-a-jwt", "The token provided is not a valid JWT"),
        (
            _token({"role": "anon", "exp": 4_000_000_000}, "wrong-secret-" + "y" * 40),
            "Failed to validate JWT signature",
        ),
        (_token({"role": "anon", "exp": 1_000}), "Token has expired"),
        (_token({"role": "anon"}), "Fields `role` and `exp` are required in JWT"),
        (_token({"exp": 4_000_000_000}), "Fields `role` and `exp` are required in JWT"),
        ("pt_unknown-portal-token", "The portal token is not valid"),
    ],
)
async def test_bad_api_keys_get_401_before_upgrade(
    server: RunningServer, apikey: str | None, message: str
) -> None:
    params = {"vsn": "1.0.0"} | ({"apikey": apikey} if apikey is not None else {})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(server.ws_url, params=params)
        assert info.value.status == 401
        async with session.get(server.ws_url, params=params) as response:
            assert response.status == 401
            body = orjson.loads(await response.read())
            assert body["error"].startswith(message)


async def test_unknown_vsn_is_refused(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            server.ws_url, params={"vsn": "9.9.9", "apikey": server.anon_key}
        ) as response:
            assert response.status == 400


async def test_expired_join_token_is_refused(server: RunningServer) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        expired = _token({"role": "authenticated", "exp": int(time.time()) - 30})
        reply = await sock.join("room-expired", access_token=expired)
        assert reply["status"] == "error"
        assert reply["response"]["reason"].startswith("InvalidJWTToken: Token has expired")
    finally:
        await sock.close()


async def test_socket_idle_past_timeout_is_closed(database_url: str) -> None:
    async with running_server(database_url, idle_timeout=0.3) as srv:
        sock = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            started = asyncio.get_running_loop().time()
            assert await sock.closed() == 1001
            assert asyncio.get_running_loop().time() - started < 3
        finally:
            await sock.close()
