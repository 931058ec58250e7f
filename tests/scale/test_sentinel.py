"""Redis Sentinel: ``RTM_REDIS_URL=redis+sentinel://…`` finds the master through the sentinels,
and after a failover both connections of every process (and the rate limiter's) end up on the
new master, so broadcasts cross processes again within seconds of its election.

Each test starts its own ``redis-server`` master, a replica and a sentinel on free loopback
ports (skipped without ``redis-server``, failed under CI), and kills only those, by pid.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from realtime_messaging.broker import Envelope
from realtime_messaging.broker.redis import RedisBroker
from realtime_messaging.broker.redis_urls import check_url, parse_sentinel_url, redacted
from realtime_messaging.exceptions import ConfigurationError
from realtime_messaging.server.api.errors import ApiError
from realtime_messaging.server.api.ratelimit import Limits, RateLimiter
from tests.conftest import RunningServer
from tests.server.wsclient import RawSocket

from .conftest import RedisServer, _free_port, _redis_binary, eventually, ready, servers, sockets

SERVICE = "mymaster"
#: Broadcasts must cross processes again within this long of the new master's election.
RECOVERY = 15.0


class RedisSentinel:
    """One ``redis-server --sentinel`` child process monitoring ``SERVICE`` (quorum 1); with
    ``tls`` (certificate, key) it speaks TLS only, to its clients and to the servers."""

    def __init__(
        self, binary: str, conf: Path, master_port: int, tls: tuple[str, str] | None = None
    ) -> None:
        self.binary = binary
        self.conf = conf
        self.port = _free_port()
        self.master_port = master_port
        self.tls = tls
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if self.tls is None:
            listen = f"port {self.port}\n"
        else:
            cert, key = self.tls
            listen = (
                f"port 0\ntls-port {self.port}\ntls-auth-clients no\ntls-replication yes\n"
                f"tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {cert}\n"
            )
        # Sentinel rewrites its configuration file: one per sentinel, in the test's tmp dir.
        self.conf.write_text(
            listen + "bind 127.0.0.1\n"
            "protected-mode no\n"
            "daemonize no\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 500\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            str(self.conf),
            "--sentinel",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def answers() -> bool:
            """the sentinel answers PING"""
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise RuntimeError(f"redis-server --sentinel exited with {self.proc.returncode}")
            try:
                return bool(await self.command("PING"))
            except (OSError, aioredis.RedisError):
                return False

        await eventually(answers, timeout=10)

    async def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def command(self, *args: Any) -> Any:
        client = self._client()
        try:
            return await client.execute_command(*args)
        finally:
            await client.aclose()

    def _client(self) -> aioredis.Redis:
        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls = {"ssl": True, "ssl_ca_certs": self.tls[0], "ssl_cert_reqs": "required"}
        return aioredis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2, **tls
        )

    async def master_port_now(self) -> int:
        """The port of the master the sentinel names now."""
        reply = await self.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(reply[1])

    async def replica_ready(self, port: int) -> bool:
        """The sentinel knows the replica on ``port`` as a healthy, synced replica."""
        client = self._client()
        try:
            replicas = await client.sentinel_slaves(SERVICE)
        finally:
            await client.aclose()
        for info in replicas:
            if int(info["port"]) == port:
                return bool(info["flags"] == "slave" and info.get("master-link-status") == "ok")
        return False


class Deployment:
    """A master, its replica and one sentinel; ``url`` is the Sentinel URL naming first an
    address no sentinel listens on (skipped) and then the sentinel."""

    def __init__(self, master: RedisServer, replica: RedisServer, sentinel: RedisSentinel) -> None:
        self.master = master
        self.replica = replica
        self.sentinel = sentinel
        self.url = f"redis+sentinel://127.0.0.1:{_free_port()},127.0.0.1:{sentinel.port}/{SERVICE}"

    async def failover(self) -> RedisServer:
        """``SENTINEL FAILOVER`` (the old master stays up and is demoted); return the new
        master once the sentinel names it."""
        old = await self.sentinel.master_port_now()
        new = self.replica if old == self.master.port else self.master

        async def ready_to_fail_over() -> bool:
            """the sentinel knows the replica, in sync"""
            return await self.sentinel.replica_ready(new.port)

        await eventually(ready_to_fail_over, timeout=20, interval=0.1)
        assert await self.sentinel.command("SENTINEL", "FAILOVER", SERVICE)
        await self.elected(new)
        return new

    async def elected(self, new: RedisServer) -> None:
        """Return once the sentinel names ``new`` the master (bounded)."""

        async def named() -> bool:
            """the sentinel names the new master, and it says it is one"""
            if await self.sentinel.master_port_now() != new.port:
                return False
            role = await new.command("ROLE")
            return bool(role[0] == b"master")

        await eventually(named, timeout=20, interval=0.05)


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    binary = _redis_binary()
    master, replica = RedisServer(binary), RedisServer(binary)
    sentinel = RedisSentinel(binary, tmp_path / "sentinel.conf", master.port)
    try:
        await master.start()
        await replica.start()
        for server in (master, replica):  # full syncs at once (not after 5 s), both ways
            await server.command("CONFIG", "SET", "repl-diskless-sync-delay", "0")
        await replica.command("REPLICAOF", "127.0.0.1", str(master.port))

        async def synced() -> bool:
            """the replica is in sync with the master"""
            info = await replica.command("INFO", "replication")
            return bool(info.get("master_link_status") == "up")

        await eventually(synced, timeout=10)
        await sentinel.start()
        yield Deployment(master, replica, sentinel)
    finally:
        await sentinel.kill()
        await replica.kill()
        await master.kill()


_probes = itertools.count(1)


async def _broadcast_arrives(
    sender: RawSocket, receiver: RawSocket, topic: str, within: float = 1.0
) -> bool:
    n = next(_probes)
    push = {"type": "broadcast", "event": "probe", "payload": {"n": n}}
    await sender.send(topic, "broadcast", push, None, "1")
    try:
        await receiver.expect(
            lambda m: m.get("event") == "broadcast" and m["payload"]["payload"]["n"] == n, within
        )
    except TimeoutError:
        return False
    return True


async def _brokers_up(http: aiohttp.ClientSession, group: tuple[RunningServer, ...]) -> bool:
    for server in group:
        status, body = await ready(http, server)
        if status != 200 or body["broker"] != "up":
            return False
    return True


async def _on(server: RedisServer, channel: str, names: int) -> bool:
    """``names`` processes' connections (pub and sub) on ``server``, and as many subscribers
    of ``channel``."""
    clients = await server.command("CLIENT", "LIST")
    if isinstance(clients, bytes | str):
        lines = clients.decode() if isinstance(clients, bytes) else clients
        listed = [line for line in lines.splitlines() if " name=rtm-" in line]
    else:
        listed = [c for c in clients if str(c.get("name", "")).startswith("rtm-")]
    return len(listed) == 2 * names and await server.numsub(channel) == names


# -- URLs -------------------------------------------------------------------------------


def test_sentinel_urls_are_parsed() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:secret@s1:26379,s2:26380,s3/mymaster/2")
    assert parsed.sentinels == (("s1", 26379), ("s2", 26380), ("s3", 26379))
    assert parsed.service == "mymaster"
    assert not parsed.tls
    assert parsed.master == {"password": "secret", "db": 2}
    assert parsed.sentinel == {}  # the password is the master's, not the sentinels'

    parsed = parse_sentinel_url(
        "sentinel://user:p%40ss@[::1]:5000,h/svc%2Fa?sentinel_password=sp&socket_connect_timeout=3"
    )
    assert parsed.sentinels == (("::1", 5000), ("h", 26379))
    assert parsed.service == "svc/a"
    assert parsed.master == {"username": "user", "password": "p@ss", "socket_connect_timeout": 3.0}
    assert parsed.sentinel == {"password": "sp"}

    parsed = parse_sentinel_url(
        "rediss+sentinel://h:26379/m/?ssl_ca_certs=/ca.pem&sentinel_username=su"
    )
    assert parsed.tls
    assert parsed.master == {"ssl_ca_certs": "/ca.pem"}
    assert parsed.sentinel == {"username": "su", "ssl": True, "ssl_ca_certs": "/ca.pem"}

    for url in (
        "redis+sentinel://127.0.0.1:26379/mymaster",
        "REDIS+SENTINEL://h/m/0",
        "sentinel://h1,h2,h3/m",
        "rediss+sentinel://h:26379/mymaster?ssl_cert_reqs=required",
    ):
        check_url(url)
        RedisBroker(url, "n1")  # builds its pools, connects nothing yet


def test_malformed_sentinel_urls_are_refused_naming_the_form() -> None:
    for url, problem in (
        ("redis+sentinel://h:26379", "no service name"),
        ("redis+sentinel://h:26379/", "no service name"),
        ("redis+sentinel:///mymaster", "without a host"),
        ("redis+sentinel://h1,,h2/mymaster", "without a host"),
        ("redis+sentinel://h:port/mymaster", "bad port"),
        ("redis+sentinel://h:70000/mymaster", "bad port"),
        ("redis+sentinel://::1/mymaster", "IPv6"),
        ("redis+sentinel://[::1/mymaster", "bad sentinel address"),
        ("redis+sentinel://h/mymaster/zero", "database must be a number"),
        ("redis+sentinel://h/mymaster/0/1", "unexpected path"),
        ("redis+sentinel://h/mymaster?db=x", "Invalid value for 'db'"),
        ("redis+sentinel://h/mymaster?novalue", "bad query"),
        ("redis+sentinel://h/mymaster#x", "fragment"),
    ):
        with pytest.raises(ConfigurationError) as raised:
            check_url(url)
        message = str(raised.value)
        assert problem in message, message
        assert "redis+sentinel://[[user]:password@]host:26379[,host:26379,...]" in message
        assert "<service_name>[/<db>]" in message


def test_passwords_are_redacted_in_logs() -> None:
    assert (
        redacted("redis+sentinel://:secret@s1:26379,s2:26379/m/0?sentinel_password=sp&db=1")
        == "redis+sentinel://:***@s1:26379,s2:26379/m/0?sentinel_password=***&db=1"
    )
    assert redacted("redis://u:pw@h:6379/0") == "redis://u:***@h:6379/0"
    assert redacted("unix:///run/redis.sock?db=2") == "unix:///run/redis.sock?db=2"


# -- READONLY ---------------------------------------------------------------------------


async def test_a_readonly_reply_replaces_the_publisher_connection() -> None:
    """A server that answers PUBLISH with READONLY (a demoted master, for a write): the
    publisher drops that connection and makes a new one, rather than count and carry on."""
    publishers: list[int] = []
    readonly = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal readonly
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                assert line.startswith(b"*"), line
                args = []
                for _ in range(int(line[1:])):
                    size = int((await reader.readline())[1:])
                    args.append((await reader.readexactly(size + 2))[:-2])
                command = args[0].upper()
                if command == b"CLIENT" and args[1].upper() == b"SETNAME":
                    if args[2].endswith(b"-pub"):
                        publishers.append(id(writer))
                    writer.write(b"+OK\r\n")
                elif command == b"SUBSCRIBE":
                    for channel in args[1:]:
                        writer.write(
                            b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n"
                            % (len(channel), channel)
                        )
                elif command == b"PUBLISH":
                    readonly += 1
                    writer.write(b"-READONLY You can't write against a read only replica.\r\n")
                elif command == b"PING":
                    writer.write(b"+PONG\r\n")
                else:
                    writer.write(b"+OK\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    fake = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = fake.sockets[0].getsockname()[1]
    broker = RedisBroker(f"redis://127.0.0.1:{port}", "n1", max_backoff=0.1)

    class Sink:
        def deliver(self, envelope: Envelope) -> None:
            pass

        def control(self, envelope: Envelope) -> None:
            pass

        def connected(self) -> None:
            pass

    try:
        await broker.start(Sink())

        async def up() -> bool:
            """the broker is up"""
            return broker.status().up

        await eventually(up)
        assert len(publishers) == 1
        broker.publish(Envelope("realtime:t", "broadcast", {"n": 1}))

        async def replaced() -> bool:
            """the publisher made a second connection after the READONLY reply"""
            return readonly == 1 and len(publishers) == 2 and broker.status().up

        await eventually(replaced)
        assert broker.published == 0
        assert broker.dropped == 1
    finally:
        await broker.stop()
        fake.close()
        await fake.wait_closed()


# -- failover ---------------------------------------------------------------------------


async def test_broadcasts_cross_again_after_a_sentinel_failover(
    deployment: Deployment, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``SENTINEL FAILOVER``: the old master stays up (demoted a few seconds later); both
    processes' connections move to the new master, broadcasts cross again, ``/readyz`` says up."""
    topic = "realtime:scale-sentinel"
    channel = "rtm:t:" + topic
    async with (
        servers(database_url, deployment.url, 2) as (a, b),
        sockets() as open_socket,
        aiohttp.ClientSession() as http,
    ):
        a1, b1 = await open_socket(a), await open_socket(b)
        for sock in (a1, b1):
            await sock.join("scale-sentinel")
        await eventually(lambda: _brokers_up(http, (a, b)))
        assert await _broadcast_arrives(a1, b1, topic)
        assert await _on(deployment.master, channel, 2)

        caplog.set_level(logging.WARNING, "realtime_messaging.broker.redis")
        new = await deployment.failover()
        loop = asyncio.get_running_loop()
        elected = loop.time()

        async def moved() -> bool:
            """both processes' connections on the new master, broadcasts crossing both ways"""
            return (
                await _on(new, channel, 2)
                and await _broadcast_arrives(a1, b1, topic, 0.2)
                and await _broadcast_arrives(b1, a1, topic, 0.2)
            )

        await eventually(moved, timeout=RECOVERY, interval=0.05)
        assert loop.time() - elected < RECOVERY
        await eventually(lambda: _brokers_up(http, (a, b)))
        await eventually(lambda: _on(deployment.master, channel, 0))  # nothing on the old one
        failovers = [r for r in caplog.records if "Sentinel failover" in r.getMessage()]
        assert len(failovers) == 2, failovers  # once per process
        assert f"is now 127.0.0.1:{new.port}" in failovers[0].getMessage()


async def test_broadcasts_cross_again_after_the_master_is_killed(
    deployment: Deployment, database_url: str
) -> None:
    """The master SIGKILLed: the sentinel elects the replica; both processes find it."""
    topic = "realtime:scale-sentinel-kill"
    async with (
        servers(database_url, deployment.url, 2) as (a, b),
        sockets() as open_socket,
        aiohttp.ClientSession() as http,
    ):
        a1, b1 = await open_socket(a), await open_socket(b)
        for sock in (a1, b1):
            await sock.join("scale-sentinel-kill")
        await eventually(lambda: _brokers_up(http, (a, b)))
        assert await _broadcast_arrives(a1, b1, topic)

        async def ready_to_fail_over() -> bool:
            """the sentinel knows the replica, in sync"""
            return await deployment.sentinel.replica_ready(deployment.replica.port)

        await eventually(ready_to_fail_over, timeout=20, interval=0.1)
        await deployment.master.kill()
        await deployment.elected(deployment.replica)
        loop = asyncio.get_running_loop()
        elected = loop.time()

        async def across() -> bool:
            """broadcasts cross both ways"""
            return await _broadcast_arrives(a1, b1, topic, 0.2) and await _broadcast_arrives(
                b1, a1, topic, 0.2
            )

        await eventually(across, timeout=RECOVERY, interval=0.05)
        assert loop.time() - elected < RECOVERY
        await eventually(lambda: _brokers_up(http, (a, b)))


async def test_the_subscriber_follows_the_sentinels_without_being_disconnected(
    deployment: Deployment, database_url: str
) -> None:
    """The sentinel made to name another server as the master, with no failover: nothing closes
    the connections on the old one, which goes on answering (the stuck subscriber of
    centrifugo#1189). The periodic question to the sentinels moves both connections."""
    topic = "realtime:scale-sentinel-moved"
    channel = "rtm:t:" + topic
    other = RedisServer(deployment.master.binary)
    await other.start()
    try:
        async with (
            servers(database_url, deployment.url, 2) as (a, b),
            sockets() as open_socket,
            aiohttp.ClientSession() as http,
        ):
            a1, b1 = await open_socket(a), await open_socket(b)
            for sock in (a1, b1):
                await sock.join("scale-sentinel-moved")
            await eventually(lambda: _brokers_up(http, (a, b)))
            assert await _on(deployment.master, channel, 2)

            sentinel = deployment.sentinel
            await sentinel.command("SENTINEL", "REMOVE", SERVICE)
            await sentinel.command(
                "SENTINEL", "MONITOR", SERVICE, "127.0.0.1", str(other.port), "1"
            )
            assert await sentinel.master_port_now() == other.port
            loop = asyncio.get_running_loop()
            switched = loop.time()

            async def moved() -> bool:
                """both processes' connections on the other server, broadcasts crossing"""
                return await _on(other, channel, 2) and await _broadcast_arrives(a1, b1, topic, 0.2)

            # The sentinels are asked every 5 s; then a reconnect and a resubscribe.
            await eventually(moved, timeout=10, interval=0.05)
            assert loop.time() - switched < 10
            await eventually(lambda: _on(deployment.master, channel, 0))
            await eventually(lambda: _brokers_up(http, (a, b)))
    finally:
        await other.kill()


async def test_rate_limits_are_shared_through_sentinel_and_follow_a_failover(
    deployment: Deployment,
) -> None:
    """Two limiters (two processes) on the Sentinel URL share one budget, kept on the master;
    after a failover they share it on the new master."""
    limits = Limits("3/minute", "3/minute", "3/minute", "3/minute")
    first, second = RateLimiter(limits, deployment.url), RateLimiter(limits, deployment.url)
    keys = itertools.count(1)

    async def shared_on(server: RedisServer) -> bool:
        """a fresh key's budget is shared by both limiters and kept on ``server``"""
        key = f"k{next(keys)}"
        try:
            for limiter in (first, second, first):
                await limiter.check("typing", key)
        except ApiError:
            return False
        with pytest.raises(ApiError) as over:
            await second.check("typing", key)
        assert over.value.status == 429
        return bool(await server.command("KEYS", f"*{key}*"))

    try:
        assert await shared_on(deployment.master)
        new = await deployment.failover()
        # Counted in-process while the old master is demoted (never a failed request), then
        # on the new master.
        await eventually(lambda: shared_on(new), timeout=RECOVERY, interval=0.1)
    finally:
        await first.close()
        await second.close()


async def test_a_hung_sentinel_is_skipped(deployment: Deployment, database_url: str) -> None:
    """The first sentinel of the URL stopped (SIGSTOP: it accepts and never answers): the
    processes ask the next one, in a bounded time, and work."""
    hung = RedisSentinel(
        deployment.master.binary,
        deployment.sentinel.conf.with_name("hung.conf"),
        deployment.master.port,
    )
    await hung.start()
    assert hung.proc is not None
    hung.proc.send_signal(signal.SIGSTOP)
    try:
        url = (
            f"redis+sentinel://127.0.0.1:{hung.port},127.0.0.1:{deployment.sentinel.port}/{SERVICE}"
        )
        async with (
            servers(database_url, url, 2) as (a, b),
            sockets() as open_socket,
            aiohttp.ClientSession() as http,
        ):
            a1, b1 = await open_socket(a), await open_socket(b)
            for sock in (a1, b1):
                await sock.join("scale-sentinel-hung")
            await eventually(lambda: _brokers_up(http, (a, b)))
            assert await _broadcast_arrives(a1, b1, "realtime:scale-sentinel-hung")
    finally:
        if hung.proc is not None and hung.proc.returncode is None:
            hung.proc.send_signal(signal.SIGCONT)
        await hung.kill()


async def test_tls_to_the_sentinels_and_the_master(
    tls_redis_server: RedisServer, database_url: str, tmp_path: Path
) -> None:
    """``rediss+sentinel://``: the sentinel and the master speak TLS only; the certificate
    options of the URL verify both."""
    assert tls_redis_server.tls is not None
    cert = tls_redis_server.tls[0]
    sentinel = RedisSentinel(
        tls_redis_server.binary,
        tmp_path / "sentinel.conf",
        tls_redis_server.port,
        tls=tls_redis_server.tls,
    )
    await sentinel.start()
    try:

        async def monitored() -> bool:
            """the sentinel reaches the master over TLS"""
            masters = await sentinel.command("SENTINEL", "MASTERS")
            return bool(masters) and b"disconnected" not in b"".join(
                v for v in masters[0] if isinstance(v, bytes)
            )

        await eventually(monitored, timeout=10, interval=0.05)
        url = (
            f"rediss+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}"
            f"?ssl_cert_reqs=required&ssl_ca_certs={cert}"
        )
        async with (
            servers(database_url, url, 2) as (a, b),
            sockets() as open_socket,
            aiohttp.ClientSession() as http,
        ):
            a1, b1 = await open_socket(a), await open_socket(b)
            for sock in (a1, b1):
                await sock.join("scale-sentinel-tls")
            await eventually(lambda: _brokers_up(http, (a, b)))
            assert await _broadcast_arrives(a1, b1, "realtime:scale-sentinel-tls")
            assert await _on(tls_redis_server, "rtm:t:realtime:scale-sentinel-tls", 2)
    finally:
        await sentinel.kill()
