"""Presence from live connections and typing owned by connections, end to end (docs/presence.md).

Each test runs servers with short timeouts on a database of its own (a server that declares
processes dead after one second would otherwise declare the session's test server dead). What
the tests wait for are the presence and typing changes a staff subscriber receives, with bounded
timeouts; times are compared on the database's clock (commit timestamps, ``last_seen_at``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import pytest

from realtime_messaging.protocol.frames import Vsn, encode_user_broadcast_push
from tests.conftest import TEST_SECRET, RunningServer, Seed, fresh_database, running_server
from tests.server.wsclient import RawSocket

from .conftest import is_change, subscribe

GRACE = 0.5
FAST = {
    "presence_grace": GRACE,
    "presence_away_after": 30.0,
    "presence_settle_interval": 0.1,
    "process_heartbeat_interval": 0.2,
    "process_dead_after": 1.0,
}


@asynccontextmanager
async def _world(admin_url: str, **overrides: Any) -> AsyncIterator[tuple[RunningServer, Seed]]:
    async with (
        fresh_database(admin_url) as url,
        asyncpg.create_pool(url, min_size=1, max_size=4) as pool,
        running_server(url, **{**FAST, **overrides}) as srv,
    ):
        yield srv, Seed(pool)


def _when(message: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(
        message["payload"]["data"]["commit_timestamp"].replace("Z", "+00:00")
    )


def _record(message: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = message["payload"]["data"]["record"]
    return record


async def _watch(srv: RunningServer, seed: Seed, customer: UUID) -> RawSocket:
    """A staff socket that sees the customer's presence and typing changes."""
    _, staff_token = await seed.staff()
    bindings = [
        {
            "event": "*",
            "schema": "public",
            "table": "user_presence",
            "filter": f"customer_id=eq.{customer}",
        },
        {
            "event": "*",
            "schema": "public",
            "table": "message_typing_indicators",
            "filter": f"customer_id=eq.{customer}",
        },
    ]
    sock, _ = await subscribe(srv.ws_url, staff_token, "watch", bindings)
    return sock


def _status(status: str):  # type: ignore[no-untyped-def]
    def check(m: dict[str, Any]) -> bool:
        return is_change("user_presence")(m) and _record(m)["status"] == status

    return check


async def test_online_while_connected_offline_after_the_grace(admin_url: str) -> None:
    async with _world(admin_url) as (srv, seed):
        customer, portal = await seed.customer()
        watch = await _watch(srv, seed, customer)
        device = await RawSocket.connect(srv.ws_url, portal)
        try:
            online = await watch.expect(_status("online"))
            assert _record(online)["customer_id"] == str(customer)
            await device.close()
            offline = await watch.expect(_status("offline"))
            last_seen = datetime.fromisoformat(_record(offline)["last_seen_at"])
            # Offline no sooner than the grace after the socket closed (last seen then).
            assert (_when(offline) - last_seen).total_seconds() >= GRACE
            assert last_seen >= _when(online)
        finally:
            await watch.close()


async def test_several_devices_offline_only_when_the_last_one_leaves(
    admin_url: str, pool: asyncpg.Pool
) -> None:
    async with _world(admin_url) as (srv, seed):
        customer, portal = await seed.customer()
        watch = await _watch(srv, seed, customer)
        phone = await RawSocket.connect(srv.ws_url, portal)
        laptop = await RawSocket.connect(srv.ws_url, portal)
        try:
            await watch.expect(_status("online"))
            await phone.close()
            # Wait until the rules have run past the grace for the phone's closed connection
            # (its row is removed then), then check the customer is still online.
            async with asyncpg.create_pool(srv.database_url, min_size=1, max_size=1) as db:
                async with asyncio.timeout(10):
                    while (
                        await db.fetchval(
                            "SELECT count(*) FROM rtm.live_connections WHERE customer_id = $1",
                            customer,
                        )
                        > 1
                    ):
                        await asyncio.sleep(0.05)
                status = await db.fetchval(
                    "SELECT status FROM user_presence WHERE customer_id = $1", customer
                )
                assert status == "online"
            await laptop.close()
            await watch.expect(_status("offline"))
        finally:
            await watch.close()


async def test_away_when_idle_online_again_on_activity(admin_url: str) -> None:
    """Heartbeats are not activity; a push the client sends because its user acted is."""
    async with _world(admin_url, presence_away_after=1.0) as (srv, seed):
        customer, portal = await seed.customer()
        watch = await _watch(srv, seed, customer)
        device = await RawSocket.connect(srv.ws_url, portal)
        try:
            online = await watch.expect(_status("online"))
            for _ in range(3):
                await device.send("phoenix", "heartbeat", {}, ref=device.next_ref())
            away = await watch.expect(_status("away"), timeout=5)
            assert (_when(away) - _when(online)).total_seconds() >= 1.0
            await device.join("lobby", {})
            await watch.expect(_status("online"))
        finally:
            await device.close()
            await watch.close()


async def _type(device: RawSocket, topic: str, is_typing: bool = True) -> dict[str, Any]:
    ref = await device.send(
        topic,
        "broadcast",
        {"type": "broadcast", "event": "typing", "payload": {"isTyping": is_typing}},
        ref=device.next_ref(),
    )
    return await device.reply_to(ref)


async def test_typing_ends_when_its_connection_closes(admin_url: str) -> None:
    async with _world(admin_url) as (srv, seed):
        customer, portal = await seed.customer()
        conv = await seed.conversation(customer)
        watch = await _watch(srv, seed, customer)
        device = await RawSocket.connect(srv.ws_url, portal)
        try:
            topic = f"realtime:conversation:{conv}"
            assert (
                await device.join(topic.removeprefix("realtime:"), {"broadcast": {"ack": True}})
            )["status"] == "ok"
            reply = await _type(device, topic)
            assert reply["payload"]["status"] == "ok", reply
            started = await watch.expect(is_change("message_typing_indicators", "INSERT"))
            expires_at = datetime.fromisoformat(_record(started)["expires_at"])
            await device.close()
            ended = await watch.expect(is_change("message_typing_indicators", "DELETE"))
            # Ended by the closed connection, well before its own expiry.
            assert (expires_at - _when(ended)).total_seconds() > 3
        finally:
            await watch.close()


async def test_typing_ends_when_the_heartbeat_is_lost(admin_url: str) -> None:
    """A client that goes silent (a half-open connection) is dropped at the idle timeout."""
    async with _world(admin_url, idle_timeout=1.0) as (srv, seed):
        customer, portal = await seed.customer()
        conv = await seed.conversation(customer)
        watch = await _watch(srv, seed, customer)
        device = await RawSocket.connect(srv.ws_url, portal)
        try:
            topic = f"realtime:conversation:{conv}"
            await device.join(topic.removeprefix("realtime:"), {"broadcast": {"ack": True}})
            await _type(device, topic)
            started = await watch.expect(is_change("message_typing_indicators", "INSERT"))
            expires_at = datetime.fromisoformat(_record(started)["expires_at"])
            # The staff socket keeps heartbeating; the customer's sends nothing more.
            async with asyncio.timeout(5):
                while True:
                    await watch.send("phoenix", "heartbeat", {}, ref=watch.next_ref())
                    try:
                        ended = await watch.expect(
                            is_change("message_typing_indicators", "DELETE"), timeout=0.3
                        )
                        break
                    except TimeoutError:
                        continue
            assert (expires_at - _when(ended)).total_seconds() > 2
        finally:
            await device.close()
            await watch.close()


async def test_typing_over_the_socket_is_rate_limited_and_checked(admin_url: str) -> None:
    async with _world(admin_url, rate_typing="2/minute") as (srv, seed):
        customer, portal = await seed.customer()
        other, _ = await seed.customer()
        conv = await seed.conversation(customer)
        others_conv = await seed.conversation(other)
        device = await RawSocket.connect(srv.ws_url, portal)
        try:
            topic = f"realtime:conversation:{conv}"
            await device.join(topic.removeprefix("realtime:"), {"broadcast": {"ack": True}})
            assert (await _type(device, topic))["payload"]["status"] == "ok"
            assert (await _type(device, topic, False))["payload"]["status"] == "ok"
            limited = await _type(device, topic)
            assert limited["payload"]["status"] == "error"
            assert "limit of 2 per minute" in limited["payload"]["response"]["reason"]
            # On the customer's own topic the conversation is named; another's is refused.
            own = f"realtime:customer:{customer}:messages"
            await device.join(own.removeprefix("realtime:"), {"broadcast": {"ack": True}})
            ref = await device.send(
                own,
                "broadcast",
                {
                    "type": "broadcast",
                    "event": "typing",
                    "payload": {"isTyping": True, "conversationId": str(others_conv)},
                },
                ref=device.next_ref(),
            )
            refused = await device.reply_to(ref)
            assert refused["payload"]["status"] == "error"
            assert refused["payload"]["response"]["reason"].startswith("typing:")
            bad = await device.send(
                topic,
                "broadcast",
                {"type": "broadcast", "event": "typing", "payload": {"isTyping": "yes"}},
                ref=device.next_ref(),
            )
            assert (await device.reply_to(bad))["payload"]["status"] == "error"
        finally:
            await device.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("observer", ["another process", "the restarted process"])
async def test_no_ghosts_after_sigkill(admin_url: str, observer: str) -> None:
    """The server holding a participant's socket is killed; presence and typing do not stay."""
    async with fresh_database(admin_url) as url, asyncpg.create_pool(url) as pool:
        seed = Seed(pool)
        customer, portal = await seed.customer()
        conv = await seed.conversation(customer)
        port = _free_port()
        env = {
            **os.environ,
            "RTM_DATABASE_URL": url,
            "RTM_JWT_SECRET": TEST_SECRET,
            "RTM_PORT": str(port),
            "RTM_PROCESS_HEARTBEAT_INTERVAL": "0.2",
            "RTM_PROCESS_DEAD_AFTER": "1",
            "RTM_PRESENCE_GRACE": str(GRACE),
        }

        async def serve() -> asyncio.subprocess.Process:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "realtime_messaging",
                "serve",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            async with asyncio.timeout(60):
                while b"service_role key" not in await proc.stdout.readline():  # type: ignore[union-attr]
                    assert proc.returncode is None
            return proc

        doomed = await serve()
        try:
            device = await RawSocket.connect(f"ws://127.0.0.1:{port}/realtime/v1/websocket", portal)
            topic = f"realtime:conversation:{conv}"
            await device.join(topic.removeprefix("realtime:"), {"broadcast": {"ack": True}})
            assert (await _type(device, topic))["payload"]["status"] == "ok"
            expires_at = await pool.fetchval(
                "SELECT expires_at FROM message_typing_indicators WHERE customer_id = $1", customer
            )
            # Written in a batch just after the connection opened: wait for it, bounded.
            async with asyncio.timeout(5):
                while (
                    await pool.fetchval(
                        "SELECT status FROM user_presence WHERE customer_id = $1", customer
                    )
                    != "online"
                ):
                    await asyncio.sleep(0.02)
        finally:
            doomed.send_signal(signal.SIGKILL)
            await doomed.wait()
        await device.session.close()
        killed_at = await pool.fetchval("SELECT now()")
        if observer == "another process":
            context = running_server(url, **FAST)
        else:
            context = _subprocess(serve)
        async with context:
            async with asyncio.timeout(30):
                while True:
                    row = await pool.fetchrow(
                        "SELECT p.status, now() AS now, (SELECT count(*) FROM "
                        "message_typing_indicators t WHERE t.customer_id = $1) AS typing "
                        "FROM user_presence p WHERE p.customer_id = $1",
                        customer,
                    )
                    if row["status"] == "offline" and row["typing"] == 0:
                        break
                    await asyncio.sleep(0.1)
            assert (row["now"] - killed_at).total_seconds() < 30
            # The typing indicator went with its connection, not by its own expiry.
            assert row["now"] < expires_at


@asynccontextmanager
async def _subprocess(start: Any) -> AsyncIterator[None]:
    proc = await start()
    try:
        yield
    finally:
        proc.terminate()
        await proc.wait()


class _PresenceView:
    """What a client's ``presenceState()`` shows, rebuilt from the frames it receives."""

    def __init__(self) -> None:
        self.state: dict[str, list[dict[str, Any]]] = {}

    def apply(self, message: dict[str, Any]) -> None:
        if message.get("event") == "presence_state":
            self.state = {k: v["metas"] for k, v in message["payload"].items()}
        elif message.get("event") == "presence_diff":
            for key, value in message["payload"]["leaves"].items():
                refs = {m["phx_ref"] for m in value["metas"]}
                left = [m for m in self.state.get(key, []) if m["phx_ref"] not in refs]
                if left:
                    self.state[key] = left
                else:
                    self.state.pop(key, None)
            for key, value in message["payload"]["joins"].items():
                self.state.setdefault(key, []).extend(value["metas"])

    def statuses(self) -> dict[str, set[str]]:
        return {k: {m["status"] for m in metas} for k, metas in self.state.items()}

    async def until(
        self, sock: RawSocket, want: dict[str, set[str]], device: str | None = None
    ) -> None:
        """Read presence frames until the statuses are ``want`` (and a meta has ``device``)."""

        def done() -> bool:
            metas = [m for ms in self.state.values() for m in ms]
            return self.statuses() == want and (
                device is None or any(m.get("device") == device for m in metas)
            )

        async with asyncio.timeout(5):
            while not done():
                self.apply(
                    await sock.expect(
                        lambda m: m.get("event") in ("presence_state", "presence_diff")
                    )
                )


async def test_phoenix_presence_and_the_presence_rows_agree(admin_url: str) -> None:
    async with _world(admin_url, presence_away_after=1.0) as (srv, seed):
        customer, portal = await seed.customer()
        staff, staff_token = await seed.staff()
        conv = await seed.conversation(customer)
        topic = f"presence:{conv}"
        agent = await RawSocket.connect(srv.ws_url, staff_token)
        device = await RawSocket.connect(srv.ws_url, portal)
        view = _PresenceView()
        try:
            assert (await agent.join(topic, {"presence": {"key": "ignored"}}))["status"] == "ok"
            await view.until(agent, {str(staff): {"online"}})
            assert (await device.join(topic, {}))["status"] == "ok"
            # What the client tracks is kept, under the participant's id, with the server's
            # fields over it.
            ref = await device.send(
                f"realtime:{topic}",
                "presence",
                {"type": "presence", "event": "track", "payload": {"device": "phone"}},
                ref=device.next_ref(),
            )
            assert (await device.reply_to(ref))["payload"]["status"] == "ok"
            await view.until(
                agent, {str(staff): {"online"}, str(customer): {"online"}}, device="phone"
            )
            [mine] = view.state[str(customer)]
            assert mine["device"] == "phone" and mine["kind"] == "customer"

            async def rows(want: dict[str, str]) -> None:
                """Presence rows are written in batches just after: wait for them, bounded."""
                async with asyncio.timeout(5):
                    while await srv_rows(srv, staff, customer) != want:
                        await asyncio.sleep(0.05)

            await rows({str(staff): "online", str(customer): "online"})
            # Idle: both away in the table, and in the metas (pushed by the server).
            await view.until(agent, {str(staff): {"away"}, str(customer): {"away"}})
            await rows({str(staff): "away", str(customer): "away"})
            # The customer's device goes: gone from Phoenix presence at once, offline in the
            # table after the grace.
            await device.close()
            await view.until(agent, {str(staff): {"away"}})
            await rows({str(staff): "away", str(customer): "offline"})
        finally:
            await agent.close()
            await device.close()


async def srv_rows(srv: RunningServer, staff: UUID, customer: UUID) -> dict[str, str]:
    conn = await asyncpg.connect(srv.database_url)
    try:
        found = await conn.fetch(
            "SELECT coalesce(user_id, customer_id)::text AS who, status FROM user_presence "
            "WHERE user_id = $1 OR customer_id = $2",
            staff,
            customer,
        )
    finally:
        await conn.close()
    return {r["who"]: r["status"] for r in found}


async def test_presence_tracks_by_participants_share_the_presence_rate_limit(
    admin_url: str,
) -> None:
    async with _world(admin_url, rate_presence="2/minute") as (srv, seed):
        customer, portal = await seed.customer()
        conv = await seed.conversation(customer)
        device = await RawSocket.connect(srv.ws_url, portal)
        try:
            topic = f"presence:{conv}"
            await device.join(topic, {})
            replies = []
            for n in range(3):
                ref = await device.send(
                    f"realtime:{topic}",
                    "presence",
                    {"type": "presence", "event": "track", "payload": {"n": n}},
                    ref=device.next_ref(),
                )
                replies.append((await device.reply_to(ref))["payload"])
            assert [r["status"] for r in replies] == ["ok", "ok", "error"]
            assert "limit of 2 per minute" in replies[2]["response"]["reason"]
        finally:
            await device.close()


async def test_activity_through_the_api_counts(admin_url: str) -> None:
    """Sending, typing and reading over HTTP are activity of the caller's connections."""
    async with _world(admin_url, presence_away_after=1.0) as (srv, seed):
        customer, portal = await seed.customer()
        conv = await seed.conversation(customer)
        watch = await _watch(srv, seed, customer)
        device = await RawSocket.connect(srv.ws_url, portal)
        try:
            await watch.expect(_status("online"))
            await watch.expect(_status("away"), timeout=5)
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{srv.http_url}/api/conversations/{conv}/messages",
                    json={"content": "back again"},
                    headers={"Authorization": f"Bearer {portal}"},
                ) as response:
                    assert response.status == 201
            await watch.expect(_status("online"))
        finally:
            await device.close()
            await watch.close()


async def test_typing_as_a_binary_frame_with_json_is_typing_too(admin_url: str) -> None:
    """realtime-js 2.x under vsn 2.0.0 sends a broadcast as a binary kind-3 frame."""
    async with _world(admin_url) as (srv, seed):
        customer, portal = await seed.customer()
        conv = await seed.conversation(customer)
        watch = await _watch(srv, seed, customer)
        device = await RawSocket.connect(srv.ws_url, portal, Vsn.V2)
        try:
            topic = f"realtime:conversation:{conv}"
            reply = await device.join(topic.removeprefix("realtime:"), {"broadcast": {"ack": True}})
            assert reply["status"] == "ok"
            ref = device.next_ref()
            await device.send_raw(
                encode_user_broadcast_push("1", ref, topic, "typing", b'{"isTyping": true}')
            )
            assert (await device.reply_to(ref))["payload"]["status"] == "ok"
            started = await watch.expect(is_change("message_typing_indicators", "INSERT"))
            assert _record(started)["customer_id"] == str(customer)
        finally:
            await device.close()
            await watch.close()
