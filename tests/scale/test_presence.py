"""Phoenix presence across processes: one state, whichever process a client is on.

Each test runs several servers on one database and one real ``redis-server``; the last one kills
real ``rtm serve`` processes with SIGKILL.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from realtime_messaging.protocol.frames import Vsn
from tests.compat.clients import JsClient, PyClient, binding, routed_head
from tests.conftest import RunningServer, Seed
from tests.server.wsclient import RawSocket

from .conftest import (
    WAIT,
    RedisServer,
    RtmProcess,
    eventually,
    metric,
    rtm_processes,
    servers,
    sockets,
)

_keys = itertools.count(1)


@dataclass(frozen=True)
class Cluster:
    """Which broker joins the processes: ``settings`` for in-process servers, ``env`` for
    ``rtm serve`` processes."""

    database_url: str
    settings: dict[str, Any]
    env: dict[str, str]

    def servers(self, n: int) -> Any:
        redis_url = self.settings.get("redis_url")
        overrides = {k: v for k, v in self.settings.items() if k != "redis_url"}
        return servers(self.database_url, redis_url, n, **overrides)


@pytest.fixture(params=["redis", "postgres"])
def cluster(
    request: pytest.FixtureRequest, database_url: str, redis_server: RedisServer
) -> Cluster:
    """The same tests over both brokers: Redis, and PostgreSQL (Redis running but unused)."""
    if request.param == "postgres":
        return Cluster(database_url, {"broker": "postgres"}, {"RTM_BROKER": "postgres"})
    url = redis_server.url
    return Cluster(database_url, {"redis_url": url}, {"RTM_REDIS_URL": url})


def _is(event: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message.get("event") == event


async def _diff(sock: RawSocket, side: str, key: str, timeout: float = WAIT) -> dict[str, Any]:
    """The next ``presence_diff`` whose ``side`` (joins or leaves) names ``key``."""
    message = await sock.expect(
        lambda m: m.get("event") == "presence_diff" and key in m["payload"][side], timeout
    )
    payload: dict[str, Any] = message["payload"]
    return payload


async def _member(
    open_socket: Callable[..., Any],
    server: RunningServer | RtmProcess,
    topic: str,
    key: str,
    access_token: str | None = None,
) -> tuple[RawSocket, dict[str, Any]]:
    """A socket joined to ``topic`` with presence under ``key``; its ``presence_state``."""
    sock: RawSocket = await open_socket(server)
    reply = await sock.join(topic, {"presence": {"key": key, "enabled": True}}, access_token)
    assert reply["status"] == "ok", reply
    state = await sock.expect(_is("presence_state"))
    return sock, state["payload"]


async def _track(sock: RawSocket, topic: str, payload: dict[str, Any]) -> None:
    ref = sock.next_ref()
    await sock.send(
        f"realtime:{topic}", "presence", {"event": "track", "payload": payload}, ref, "1"
    )
    assert (await sock.reply_to(ref))["payload"]["status"] == "ok"


async def _untrack(sock: RawSocket, topic: str) -> None:
    ref = sock.next_ref()
    await sock.send(f"realtime:{topic}", "presence", {"event": "untrack"}, ref, "1")
    assert (await sock.reply_to(ref))["payload"]["status"] == "ok"


async def _state_seen_from(
    open_socket: Callable[..., Any],
    server: RunningServer | RtmProcess,
    topic: str,
    access_token: str | None = None,
) -> dict[str, list[tuple[str, Any]]]:
    """The presence state a newcomer on ``server`` gets: key -> sorted (phx_ref, n)."""
    key = f"observer-{next(_keys)}"
    sock, state = await _member(open_socket, server, topic, key, access_token)
    await sock.close()
    return _summary(state)


def _summary(state: dict[str, Any]) -> dict[str, list[tuple[str, Any]]]:
    return {
        key: sorted((meta["phx_ref"], meta.get("n")) for meta in entry["metas"])
        for key, entry in state.items()
    }


def _tracked(summary: dict[str, list[tuple[str, Any]]]) -> dict[str, list[Any]]:
    """key -> the sorted ``n`` of its metas (refs differ per track)."""
    return {key: sorted(n for _, n in metas) for key, metas in summary.items()}


async def test_presence_state_on_join_holds_the_metas_of_every_process(cluster: Cluster) -> None:
    async with cluster.servers(3) as (a, b, c), sockets() as open_socket:
        topic = "cluster-presence-state"
        alice, _ = await _member(open_socket, a, topic, "alice")
        await _track(alice, topic, {"n": 1})
        bob, state = await _member(open_socket, b, topic, "bob")
        # Bob's first state, on another process, already holds Alice.
        assert _tracked(_summary(state)) == {"alice": [1]}
        await _track(bob, topic, {"n": 2})
        diff = await _diff(alice, "joins", "bob")
        assert list(diff["joins"]) == ["bob"] and diff["leaves"] == {}

        # A third process, which had nobody on the topic, sees both at once.
        carol, state = await _member(open_socket, c, topic, "carol")
        assert _tracked(_summary(state)) == {"alice": [1], "bob": [2]}
        await _track(carol, topic, {"n": 3})
        for sock in (alice, bob):
            diff = await _diff(sock, "joins", "carol")
            assert list(diff["joins"]) == ["carol"]

        # Leaves reach every process too: an untrack, then a socket closed without one.
        await _untrack(bob, topic)
        for sock in (alice, carol):
            diff = await _diff(sock, "leaves", "bob")
            assert diff["joins"] == {} and list(diff["leaves"]) == ["bob"]
        await alice.close()
        diff = await _diff(carol, "leaves", "alice")
        assert list(diff["leaves"]) == ["alice"]
        for server in (a, b, c):
            assert _tracked(await _state_seen_from(open_socket, server, topic)) == {"carol": [3]}


async def _private_member(
    open_socket: Callable[..., Any], server: RunningServer, topic: str, key: str, private: bool
) -> tuple[RawSocket, dict[str, Any]]:
    """A socket joined to ``topic`` (a private or a public channel) with presence under
    ``key``; its ``presence_state``."""
    sock: RawSocket = await open_socket(server)
    config = {"presence": {"key": key, "enabled": True}, "private": private}
    reply = await sock.join(topic, config)
    assert reply["status"] == "ok", reply
    state = await sock.expect(_is("presence_state"))
    return sock, state["payload"]


async def _diffs_until(sock: RawSocket, side: str, key: str) -> list[dict[str, Any]]:
    """Every ``presence_diff`` a socket gets up to and including the first naming ``key``."""
    diffs: list[dict[str, Any]] = []
    while True:
        message = await sock.recv(WAIT)
        if message.get("event") == "presence_diff":
            diffs.append(message["payload"])
            if key in message["payload"][side]:
                return diffs


async def test_a_private_channels_presence_stays_apart_on_every_process(
    cluster: Cluster,
) -> None:
    """The private and the public channels of one topic have a presence each, across
    processes too: a state on join and every diff hold only the metas of the joiner's kind."""
    topic = f"xpresence-{next(_keys)}"
    pool = await asyncpg.connect(cluster.database_url)
    policy = f"xpresence_{next(_keys)}"
    for kind, rule in (("SELECT", "USING"), ("INSERT", "WITH CHECK")):  # read, and track
        await pool.execute(
            f"CREATE POLICY {policy}_{kind.lower()} ON realtime.messages FOR {kind} TO anon "
            f"{rule} ((SELECT realtime.topic()) = '{topic}')"
        )
    try:
        async with cluster.servers(2) as (a, b), sockets() as open_socket:
            async with aiohttp.ClientSession() as http:

                async def acquainted() -> bool:
                    """each process has heard the other (a join syncs with the peers it knows;
                    one it learns of later is asked then, and its metas arrive as a diff)"""
                    return all([await metric(http, s, "rtm_cluster_peers") == 1 for s in (a, b)])

                await eventually(acquainted)
            insider, _ = await _private_member(open_socket, a, topic, "in", True)
            await _track(insider, topic, {"n": 1})
            outsider, state = await _private_member(open_socket, a, topic, "out", False)
            assert state == {}
            await _track(outsider, topic, {"n": 2})

            # On the other process, each kind's newcomer sees its own kind only.
            watcher, state = await _private_member(open_socket, b, topic, "w", True)
            assert _tracked(_summary(state)) == {"in": [1]}
            public, state = await _private_member(open_socket, b, topic, "p", False)
            assert _tracked(_summary(state)) == {"out": [2]}

            # A re-track on A reaches B's private channel; B's public one gets nothing before
            # its own track's diff, published after it on the same process.
            await _track(insider, topic, {"n": 3})
            await _diff(watcher, "joins", "in")
            await _track(public, topic, {"n": 4})
            assert all(
                "in" not in d["joins"] and "in" not in d["leaves"]
                for d in await _diffs_until(public, "joins", "p")
            ), "a private diff leaked"
            # ... and the other way: the public track never reached the private watcher.
            await _track(insider, topic, {"n": 5})
            seen = await _diffs_until(watcher, "joins", "in")
            assert all("p" not in d["joins"] for d in seen), seen
    finally:
        for kind in ("select", "insert"):
            await pool.execute(f"DROP POLICY {policy}_{kind} ON realtime.messages")
        await pool.close()


async def test_every_process_reports_the_same_state_after_churn(cluster: Cluster) -> None:
    """Random joins, re-tracks, untracks and disconnects on three processes: a newcomer on
    any of them then sees exactly what is tracked, with the same refs."""
    rng = random.Random(14)
    topic = "cluster-presence-churn"
    async with cluster.servers(3) as trio, sockets() as open_socket:
        members: dict[str, RawSocket] = {}
        expected: dict[str, list[Any]] = {}
        for step in range(60):
            action = rng.choice(["join", "join", "track", "untrack", "close"])
            if action == "join" or not members:
                key = f"k{step}"
                sock, _ = await _member(open_socket, rng.choice(trio), topic, key)
                await _track(sock, topic, {"n": step})
                members[key], expected[key] = sock, [step]
                continue
            key = rng.choice(sorted(members))
            if action == "track":
                await _track(members[key], topic, {"n": step})
                expected[key] = [step]
            elif action == "untrack":
                await _untrack(members[key], topic)
                expected.pop(key, None)
            else:
                await members.pop(key).close()
                expected.pop(key, None)

        async def converged() -> bool:
            """every process reports the tracked metas, with identical refs"""
            seen = [await _state_seen_from(open_socket, server, topic) for server in trio]
            return all(s == seen[0] for s in seen) and _tracked(seen[0]) == expected

        await eventually(converged)


async def test_official_clients_on_two_processes_see_each_others_presence(cluster: Cluster) -> None:
    """realtime-js on one process, realtime-py on another: each presence state holds both."""
    async with cluster.servers(2) as (a, b):
        js = await JsClient.start(a.realtime_url, a.anon_key, name="js@A")
        py = PyClient(b.realtime_url, b.anon_key, name="py@B")
        try:
            js.join("lobby", "cluster-official", config={"presence": {"key": "js-user"}})
            await js.log.expect(ev="status", channel="lobby", status="SUBSCRIBED")
            assert await js.call("track", channel="lobby", payload={"who": "js"}) == "ok"
            await py.join(
                "lobby",
                "cluster-official",
                config={"presence": {"key": "py-user", "enabled": True}},
            )
            await py.log.expect(ev="status", channel="lobby", status="SUBSCRIBED")
            # py's first sync, from the other process, already has js.
            await py.log.expect(ev="presence", kind="sync", where=lambda e: "js-user" in e["state"])
            await py.track("lobby", {"who": "py"})
            await js.log.expect(ev="presence", kind="join", key="py-user")
            state = (await js.call("state", channel="lobby"))["presence"]
            assert sorted(state) == ["js-user", "py-user"]
            assert [m["who"] for m in state["py-user"]] == ["py"]

            mark = py.log.mark()
            await js.close()
            await py.log.expect(mark, ev="presence", kind="leave", key="js-user")
            assert sorted(py.presence_state("lobby")) == ["py-user"]
        finally:
            await js.close()
            await py.client.close()


async def test_presence_converges_after_redis_restarts_empty(
    redis_server: RedisServer, database_url: str
) -> None:
    """Changes made while Redis is down reach the other processes' clients and states by
    themselves once it is back (within 5 s), and nothing is left behind."""
    topic = "cluster-presence-outage"
    async with servers(database_url, redis_server.url, 3) as (a, b, c), sockets() as open_socket:
        a1, _ = await _member(open_socket, a, topic, "a1")
        await _track(a1, topic, {"n": 1})
        a2, _ = await _member(open_socket, a, topic, "a2")
        await _track(a2, topic, {"n": 2})
        watcher, state = await _member(open_socket, c, topic, "watcher")
        assert _tracked(_summary(state)) == {"a1": [1], "a2": [2]}

        await redis_server.kill()
        await _untrack(a1, topic)
        await a2.close()
        b1, _ = await _member(open_socket, b, topic, "b1")
        await _track(b1, topic, {"n": 3})
        await redis_server.start()

        loop = asyncio.get_running_loop()
        started = loop.time()
        seen: dict[str, Any] = {"joins": set(), "leaves": set()}

        async def watcher_caught_up() -> bool:
            """the watcher on C saw a1 and a2 leave and b1 join"""
            try:
                diff = (await watcher.expect(_is("presence_diff"), timeout=0.2))["payload"]
            except TimeoutError:
                return False
            seen["joins"].update(diff["joins"])
            seen["leaves"].update(diff["leaves"])
            return {"a1", "a2"} <= seen["leaves"] and "b1" in seen["joins"]

        await eventually(watcher_caught_up, timeout=WAIT)
        assert loop.time() - started <= WAIT

        async def converged() -> bool:
            """every process reports b1 alone"""
            seen = [await _state_seen_from(open_socket, server, topic) for server in (a, b, c)]
            return all(_tracked(s) == {"b1": [3]} for s in seen)

        await eventually(converged)


async def test_a_killed_process_presence_leaves_everywhere_within_the_deadline(
    cluster: Cluster, seed: Seed, pool: asyncpg.Pool
) -> None:
    """SIGKILL one of three ``rtm serve`` processes: the clients of the other two see its
    metas leave within RTM_PROCESS_DEAD_AFTER (plus a heartbeat), both report the same state,
    and the presence row of the customer it held goes offline."""
    dead_after, heartbeat = 2.0, 0.5
    env = {
        **cluster.env,
        "RTM_PROCESS_DEAD_AFTER": str(dead_after),
        "RTM_PROCESS_HEARTBEAT_INTERVAL": str(heartbeat),
        "RTM_PRESENCE_GRACE": "0.5",
    }
    customer_id, portal_token = await seed.customer()
    conversation = await seed.conversation(customer_id)
    _, staff_token = await seed.staff()
    topic = f"realtime:presence:{conversation}"
    async with rtm_processes(cluster.database_url, 3, env) as (a, b, c):
        staff_a = await RawSocket.connect(a.ws_url, a.anon_key)
        staff_b = await RawSocket.connect(b.ws_url, b.anon_key, Vsn.V2)
        customer_c = await RawSocket.connect(c.ws_url, c.anon_key)
        try:
            for sock in (staff_a, staff_b):
                reply = await sock.join(topic.removeprefix("realtime:"), access_token=staff_token)
                assert reply["status"] == "ok", reply
            reply = await customer_c.join(
                topic.removeprefix("realtime:"), access_token=portal_token
            )
            assert reply["status"] == "ok", reply
            for sock in (staff_a, staff_b):
                await _diff(sock, "joins", str(customer_id))

            async def status_is(wanted: str) -> bool:
                status = await pool.fetchval(
                    "SELECT status FROM user_presence WHERE customer_id = $1", customer_id
                )
                return bool(status == wanted)

            await eventually(lambda: status_is("online"))

            await c.kill()
            loop = asyncio.get_running_loop()
            killed = loop.time()
            for sock in (staff_a, staff_b):
                await _diff(sock, "leaves", str(customer_id), dead_after + 4 * heartbeat + 2)
            assert loop.time() - killed <= dead_after + 4 * heartbeat + 2

            async with sockets() as open_socket:
                subtopic = f"presence:{conversation}"

                async def same_on_both() -> bool:
                    """both survivors report the same state, without the customer (an observer
                    of the previous round may still be leaving: hence eventually)"""
                    seen_a = await _state_seen_from(open_socket, a, subtopic, staff_token)
                    seen_b = await _state_seen_from(open_socket, b, subtopic, staff_token)
                    return seen_a == seen_b and str(customer_id) not in seen_a

                await eventually(same_on_both)

            await eventually(lambda: status_is("offline"), timeout=dead_after + 10)
            async with aiohttp.ClientSession() as http:
                assert await metric(http, a, "rtm_cluster_peers_dead_total") == 1
                assert await metric(http, a, "rtm_cluster_peers") == 1
        finally:
            for sock in (staff_a, staff_b, customer_c):
                try:
                    await sock.close()
                except Exception:
                    pass


async def test_postgres_changes_reach_official_clients_on_every_process(
    cluster: Cluster, seed: Seed, pool: asyncpg.Pool
) -> None:
    """A message sent through the HTTP API of one process reaches realtime-js on a second and
    realtime-py on a third as postgres_changes INSERTs, once each (every process reads the
    change feed itself; the broker carries none of it)."""
    customer_id, portal_token = await seed.customer()
    conversation = await seed.conversation(customer_id)
    _, staff_token = await seed.staff()
    topic = f"conversation:{conversation}"
    bindings = [binding("INSERT", "customer_messages", f"conversation_id=eq.{conversation}")]
    async with cluster.servers(3) as (a, b, c):
        await routed_head(pool, a.http_url)
        js = await JsClient.start(a.realtime_url, a.anon_key, access_token=staff_token)
        py = PyClient(b.realtime_url, b.anon_key, name="py@B")
        await py.set_auth(staff_token)
        try:
            js.join("conv", topic, postgres=bindings)
            await js.log.expect(ev="system", channel="conv")
            await py.join("conv", topic, postgres=bindings)
            await py.log.expect(ev="system", channel="conv")
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{c.http_url}/api/conversations/{conversation}/messages",
                    json={"content": "across processes"},
                    headers={"Authorization": f"Bearer {portal_token}"},
                ) as response:
                    assert response.status == 201, await response.text()
                    sent = await response.json()
            for client in (js, py):
                change = await client.log.expect(ev="pg", channel="conv")
                new = change["payload"].get("new") or change["payload"]["data"]["record"]
                assert new["content"] == "across processes"
                assert new["id"] == sent["data"]["id"]
            assert len(js.log.find(ev="pg", channel="conv")) == 1
            assert len(py.log.find(ev="pg", channel="conv")) == 1
        finally:
            await js.close()
            await py.client.close()
