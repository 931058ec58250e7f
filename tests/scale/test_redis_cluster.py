"""Several server processes through a real three-master Redis Cluster, with sharded pub/sub:
broadcasts and presence cross processes through whichever master owns each topic's slot; a
master killed and started again, and a slot migrated to another master, are survived.

Each test starts its own cluster: three ``redis-server --cluster-enabled yes`` children on free
loopback ports (no persistence; ``nodes.conf`` in a temporary directory, kept across a restart),
joined with ``redis-cli --cluster create``. Skipped without the binaries, except under CI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from realtime_messaging.broker.redis_cluster import RedisClusterBroker
from realtime_messaging.broker.redis_urls import check_url, parse_cluster_url
from realtime_messaging.exceptions import ConfigurationError
from realtime_messaging.server.api.ratelimit import Limits, RateLimiter
from tests.conftest import RunningServer, Seed
from tests.server.wsclient import RawSocket

from .conftest import (
    WAIT,
    _free_port,
    eventually,
    ready,
    servers,
    sockets,
    survives_garbage_and_a_failing_sink,
)
from .test_presence import _member, _summary, _track, _tracked

#: Cross-process delivery must be back within this long of a master answering again, or of a
#: slot's migration.
RECOVERY = 10.0


def _cluster_port() -> int:
    """A free loopback port whose cluster bus port (itself + 10000) is free too."""
    while True:
        port = _free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class ClusterNode:
    """One ``redis-server`` of the cluster: kill it and start it again on the same port, with
    the same ``nodes.conf`` (so it is the same node, owning the same slots)."""

    def __init__(self, binary: str, directory: str, tls: tuple[str, str] | None = None) -> None:
        self.binary = binary
        self.port = _cluster_port()
        self.dir = directory
        self.tls = tls  # a certificate (also the CA) and its key: TLS only, the bus too
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        assert self.proc is None
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            cert, key = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cluster", "yes"]
            listen += ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert]
            listen += ["--tls-auth-clients", "no"]
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            *listen,
            *("--bind", "127.0.0.1", "--cluster-enabled", "yes"),
            *("--cluster-config-file", os.path.join(self.dir, f"nodes-{self.port}.conf")),
            # Long enough that a master killed and started again is never declared failed.
            *("--cluster-node-timeout", "60000"),
            *("--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", self.dir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            try:
                await self.command("PING")
                return
            except (OSError, aioredis.RedisError):
                if self.proc.returncode is not None or loop.time() > deadline:
                    raise RuntimeError(f"redis-server did not start on {self.port}") from None
                await asyncio.sleep(0.02)

    async def kill(self) -> None:
        """SIGKILL it (by pid) and reap it."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def command(self, *args: Any) -> Any:
        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls = {"ssl": True, "ssl_ca_certs": self.tls[0], "ssl_cert_reqs": "required"}
        client = aioredis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2, **tls
        )
        try:
            return await client.execute_command(*args)
        finally:
            await client.aclose()

    async def node_id(self) -> str:
        return str((await self.command("CLUSTER", "MYID")).decode())

    async def spublishes(self) -> int:
        info = await self.command("INFO", "commandstats")
        return int(info.get("cmdstat_spublish", {}).get("calls", 0))


class Cluster:
    def __init__(self, nodes: list[ClusterNode]) -> None:
        self.nodes = nodes
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in nodes[:2])
        tls = nodes[0].tls
        if tls is None:
            self.url = f"redis+cluster://{seeds}"
        else:
            self.url = f"rediss+cluster://{seeds}?ssl_cert_reqs=required&ssl_ca_certs={tls[0]}"

    async def owner(self, channel: str) -> ClusterNode:
        """The master owning ``channel``'s slot, as the cluster says."""
        slot = key_slot(channel.encode())
        for first, last, master, *_ in await self.nodes[0].command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise AssertionError(f"no master owns slot {slot}")

    async def ok(self) -> bool:
        """every node says cluster_state:ok"""
        for node in self.nodes:
            try:
                info = await node.command("CLUSTER", "INFO")
            except (OSError, aioredis.RedisError):
                return False
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
        return True


def _binaries() -> tuple[str, str]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server or redis-cli is not on PATH (CI installs redis-server)")
        pytest.skip("redis-server or redis-cli is not on PATH (apt-get install redis-server)")
    return server, cli


@asynccontextmanager
async def _running(tls: tuple[str, str] | None = None) -> AsyncIterator[Cluster]:
    """Three masters, joined; killed (by pid) and their directory removed on exit."""
    server, cli = _binaries()
    directory = tempfile.mkdtemp(prefix="rtm-cluster-")
    made = Cluster([ClusterNode(server, directory, tls) for _ in range(3)])
    try:
        for node in made.nodes:
            await node.start()
        tls_options = [] if tls is None else ["--tls", "--cacert", tls[0]]
        create = await asyncio.create_subprocess_exec(
            cli,
            *tls_options,
            *("--cluster", "create", *(f"127.0.0.1:{n.port}" for n in made.nodes)),
            "--cluster-yes",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert await asyncio.wait_for(create.wait(), 60) == 0
        finally:
            if create.returncode is None:
                create.kill()
                await create.wait()
        await eventually(made.ok, timeout=30, interval=0.1)
        yield made
    finally:
        for node in made.nodes:
            await node.kill()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with _running() as made:
        yield made


@pytest.fixture
async def tls_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """The same, speaking only TLS (clients and cluster bus), with a certificate made here."""
    _binaries()
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not on PATH")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    made = await asyncio.create_subprocess_exec(
        openssl,
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1"),
        *("-addext", "subjectAltName=IP:127.0.0.1"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(made.wait(), 30) == 0
    async with _running((cert, key)) as running:
        yield running


def _push(n: Any, event: str = "n") -> dict[str, Any]:
    return {"type": "broadcast", "event": event, "payload": {"n": n}}


async def _crosses(sender: RawSocket, receiver: RawSocket, topic: str, n: int) -> bool:
    """One numbered probe; true if ``receiver`` gets it within 0.2 s."""
    await sender.send(f"realtime:{topic}", "broadcast", _push(n, "probe"), None, "1")
    try:
        await receiver.expect(
            lambda m: m.get("event") == "broadcast" and m["payload"]["payload"]["n"] == n, 0.2
        )
    except TimeoutError:
        return False
    return True


async def _topics_on_every_master(cluster: Cluster, count: int) -> list[str]:
    """``count`` topic names at least one of which lives on each master."""
    topics = [f"cluster-{i}" for i in range(count)]
    owners = {(await cluster.owner(f"rtm:t:realtime:{t}")).port for t in topics}
    assert owners == {n.port for n in cluster.nodes}, owners
    return topics


async def _owned_by(cluster: Cluster, topic: str, node: ClusterNode) -> bool:
    return (await cluster.owner(f"rtm:t:realtime:{topic}")) is node


async def _broker_state(http: aiohttp.ClientSession, server: RunningServer) -> str | None:
    status, body = await ready(http, server)
    return body["broker"] if status == 200 else None  # type: ignore[no-any-return]


async def test_broadcasts_cross_processes_once_in_order_through_every_master(
    cluster: Cluster, database_url: str
) -> None:
    before = {n.port: await n.spublishes() for n in cluster.nodes}
    async with servers(database_url, cluster.url, 3) as (a, b, c), sockets() as open_socket:
        topics = await _topics_on_every_master(cluster, 12)
        senders = [await open_socket(a), await open_socket(b)]
        receivers = [await open_socket(b), await open_socket(c)]
        for topic in topics:
            for sock in senders:
                await sock.join(topic, {"broadcast": {"self": False}})
            for sock in receivers:
                await sock.join(topic)
        for n in range(1, 21):
            for topic in topics:
                for i, sock in enumerate(senders):
                    await sock.send(f"realtime:{topic}", "broadcast", _push([i, n]), None, "1")
        for topic in topics:
            for i, sock in enumerate(senders):
                await sock.send(f"realtime:{topic}", "broadcast", _push([i, 0], "end"), None, "1")

        for receiver in receivers:
            seen: dict[tuple[str, int], list[int]] = {}
            ends = 0
            while ends < 2 * len(topics):
                msg = await receiver.expect(lambda m: m.get("event") == "broadcast", WAIT)
                body = msg["payload"]
                sender, n = body["payload"]["n"]
                topic = msg["topic"].removeprefix("realtime:")
                if body["event"] == "end":
                    ends += 1
                else:
                    seen.setdefault((topic, sender), []).append(n)
            # Each publisher's broadcasts on each topic: every one, once, in order.
            assert seen == {(t, i): list(range(1, 21)) for t in topics for i in (0, 1)}
            with pytest.raises(TimeoutError):  # and nothing twice after the end
                await receiver.expect(lambda m: m.get("event") == "broadcast", 0.2)

    # Sharded: every master carried some of the publications.
    for node in cluster.nodes:
        assert await node.spublishes() > before[node.port], node.port


async def test_presence_state_on_join_holds_a_meta_tracked_on_another_process(
    cluster: Cluster, database_url: str
) -> None:
    async with servers(database_url, cluster.url, 2) as (a, b), sockets() as open_socket:
        for topic in await _topics_on_every_master(cluster, 6):
            alice, _ = await _member(open_socket, a, topic, "alice")
            await _track(alice, topic, {"n": 1})
            bob, state = await _member(open_socket, b, topic, "bob")
            assert _tracked(_summary(state)) == {"alice": [1]}, topic


async def test_a_master_killed_and_started_again(cluster: Cluster, database_url: str) -> None:
    async with (
        servers(database_url, cluster.url, 2) as (a, b),
        sockets() as open_socket,
        aiohttp.ClientSession() as http,
    ):
        topics = await _topics_on_every_master(cluster, 6)
        victim = cluster.nodes[2]
        topic = [t for t in topics if await _owned_by(cluster, t, victim)][0]
        a1, a2, b1 = await open_socket(a), await open_socket(a), await open_socket(b)
        for sock in (a1, a2, b1):
            await sock.join(topic)
        probes = iter(range(1, 10_000))
        assert await _crosses(a1, b1, topic, next(probes))

        await victim.kill()

        async def degraded() -> bool:
            """both servers say degraded"""
            return all([await _broker_state(http, s) == "degraded" for s in (a, b)])

        await eventually(degraded, timeout=RECOVERY)
        assert await _crosses(a1, a2, topic, next(probes))  # local delivery goes on

        await victim.start()
        await eventually(cluster.ok, timeout=30, interval=0.1)

        async def across() -> bool:
            """a broadcast on the restarted master's topic crosses again"""
            return await _crosses(a1, b1, topic, next(probes))

        await eventually(across, timeout=RECOVERY, interval=0)

        async def up() -> bool:
            """both servers say up"""
            return all([await _broker_state(http, s) == "up" for s in (a, b)])

        await eventually(up, timeout=RECOVERY)


async def test_a_topic_s_slot_migrated_to_another_master(
    cluster: Cluster, database_url: str
) -> None:
    async with servers(database_url, cluster.url, 2) as (a, b), sockets() as open_socket:
        topic = "cluster-migrating"
        channel = f"rtm:t:realtime:{topic}"
        slot = key_slot(channel.encode())
        source = await cluster.owner(channel)
        target = next(n for n in cluster.nodes if n is not source)
        a1, b1 = await open_socket(a), await open_socket(b)
        for sock in (a1, b1):
            await sock.join(topic)
        probes = iter(range(1, 10_000))
        assert await _crosses(a1, b1, topic, next(probes))

        # The slot holds no keys (pub/sub channels are none): no MIGRATE needed.
        source_id, target_id = await source.node_id(), await target.node_id()
        await target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        await source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        for node in (target, source, *[n for n in cluster.nodes if n not in (source, target)]):
            await node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

        async def moved() -> bool:
            """every node names the target the slot's owner"""
            return all([(await cluster.owner(channel)) is target for _ in range(1)])

        await eventually(moved, timeout=30)
        before = await target.spublishes()

        async def across() -> bool:
            """a broadcast on the migrated topic crosses again, through its new master"""
            return await _crosses(a1, b1, topic, next(probes)) and (
                await target.spublishes() > before
            )

        await eventually(across, timeout=RECOVERY, interval=0)
        for _ in range(5):  # and keeps crossing
            assert await _crosses(a1, b1, topic, next(probes))


async def test_rate_limits_are_shared_through_the_cluster(
    cluster: Cluster, database_url: str, seed: Seed
) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    headers = {"Authorization": f"Bearer {portal}"}
    async with (
        servers(database_url, cluster.url, 2, rate_typing="3/minute") as (a, b),
        aiohttp.ClientSession() as http,
    ):

        async def typing(server: RunningServer) -> int:
            async with http.post(
                f"{server.http_url}/api/conversations/{conversation}/typing",
                json={"isTyping": True},
                headers=headers,
            ) as response:
                return response.status

        assert [await typing(a), await typing(b), await typing(a)] == [200, 200, 200]
        assert await typing(b) == 429
        assert await typing(a) == 429


async def test_tls_broadcasts_and_rate_limits(
    tls_cluster: Cluster, database_url: str, seed: Seed
) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    headers = {"Authorization": f"Bearer {portal}"}
    async with (
        servers(database_url, tls_cluster.url, 2, rate_typing="2/minute") as (a, b),
        sockets() as open_socket,
        aiohttp.ClientSession() as http,
    ):
        topics = await _topics_on_every_master(tls_cluster, 6)
        for n, topic in enumerate(topics):
            sender, receiver = await open_socket(a), await open_socket(b)
            await sender.join(topic)
            await receiver.join(topic)
            assert await _crosses(sender, receiver, topic, n)

        async def typing(server: RunningServer) -> int:
            async with http.post(
                f"{server.http_url}/api/conversations/{conversation}/typing",
                json={"isTyping": True},
                headers=headers,
            ) as response:
                return response.status

        assert [await typing(a), await typing(b), await typing(a)] == [200, 200, 429]


async def test_malformed_sharded_publications_and_a_failing_sink_do_not_cut_the_subscription(
    cluster: Cluster,
) -> None:
    """As for one Redis (test_faults.py): garbage on a topic's channel is counted and skipped,
    an envelope the sink fails on is the only one lost, and what follows arrives."""
    owner = await cluster.owner("rtm:t:realtime:bad")
    await survives_garbage_and_a_failing_sink(
        RedisClusterBroker(cluster.url, "a"),
        RedisClusterBroker(cluster.url, "b"),
        lambda data: owner.command("SPUBLISH", "rtm:t:realtime:bad", data),
    )


def test_cluster_urls_are_parsed_and_malformed_ones_refused() -> None:
    parsed = parse_cluster_url("rediss+cluster://u:pw@h1:7000,[::1]:7001/0?ssl_cert_reqs=none")
    assert parsed.seeds == (("h1", 7000), ("::1", 7001))
    assert parsed.node["username"] == "u" and parsed.node["password"] == "pw"
    assert parsed.node["ssl_cert_reqs"] == "none"
    for url in ("redis+cluster://h1:7000/1", "redis+cluster://:7000", "redis+cluster://h:99999"):
        with pytest.raises(ConfigurationError, match="malformed Redis Cluster URL"):
            check_url(url)
    with pytest.raises(ConfigurationError, match="redis\\+cluster://"):
        check_url("cluster://h:7000")
    RedisClusterBroker("redis+cluster://h1:7000,h2:7000", "n1")  # connects nothing yet
    RateLimiter(Limits("1/minute", "1/minute", "1/minute", "1/minute"), "redis+cluster://h:7000")
