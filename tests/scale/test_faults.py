"""Redis faults: each process keeps serving its own clients while Redis is away, says so in
``/readyz`` and the metrics, and delivery between processes comes back by itself within five
seconds of Redis answering again (emptied, on the same address); rate limits are shared while
Redis answers and counted per process while it does not, never failing a request."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from realtime_messaging.broker.redis import RedisBroker
from realtime_messaging.broker.redis_cluster import RedisClusterBroker
from realtime_messaging.broker.redis_urls import check_url
from realtime_messaging.exceptions import ConfigurationError
from realtime_messaging.server.api.ratelimit import Limits, RateLimiter
from tests.conftest import RunningServer, Seed
from tests.server.wsclient import RawSocket

from .conftest import (
    RedisServer,
    eventually,
    metric,
    ready,
    servers,
    sockets,
    survives_garbage_and_a_failing_sink,
)

#: Cross-process delivery must be back within this long of Redis answering again.
RECOVERY = 5.0


def _push(event: str, n: int = 0) -> dict[str, Any]:
    return {"type": "broadcast", "event": event, "payload": {"n": n}}


_probes = itertools.count(1)


async def _broadcast_arrives(
    sender: RawSocket, receiver: RawSocket, topic: str, within: float = 1.0
) -> bool:
    """One numbered probe from ``sender``; true if ``receiver`` gets it ``within`` seconds
    (1 s when asserted: far below the 2 s a command to a hung Redis may take)."""
    n = next(_probes)
    await sender.send(topic, "broadcast", _push("probe", n), None, "1")
    try:
        await receiver.expect(
            lambda m: m.get("event") == "broadcast" and m["payload"]["payload"]["n"] == n, within
        )
    except TimeoutError:
        return False
    return True


def _is_traffic(msg: dict[str, Any]) -> bool:
    return msg.get("event") == "broadcast" and msg["payload"]["event"] == "traffic"


async def _broker_state(http: aiohttp.ClientSession, server: RunningServer) -> str | None:
    """The ``broker`` field of a 200 from ``/readyz`` (None while not ready: a process just
    started waits for its change feed)."""
    status, body = await ready(http, server)
    return body["broker"] if status == 200 else None  # type: ignore[no-any-return]


async def _all_in_state(
    http: aiohttp.ClientSession, group: tuple[RunningServer, ...], state: str
) -> bool:
    """Every server ready (200: a process cut off from Redis stays in rotation) with its
    broker in ``state``, in ``/readyz`` and in the ``rtm_broker_up`` metric."""
    up = 1.0 if state == "up" else 0.0
    for server in group:
        if await _broker_state(http, server) != state:
            return False
        if await metric(http, server, "rtm_broker_up") != up:
            return False
    return True


async def test_redis_stopped_and_restarted_under_traffic(
    redis_server: RedisServer, database_url: str, seed: Seed
) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    async with (
        servers(database_url, redis_server.url, 2) as (a, b),
        sockets() as open_socket,
        aiohttp.ClientSession() as http,
    ):
        topic = "realtime:scale-fault"
        a1, a2 = await open_socket(a), await open_socket(a)
        b1, b2 = await open_socket(b), await open_socket(b)
        for sock in (a1, a2, b1, b2):
            await sock.join("scale-fault")
        await eventually(lambda: _all_in_state(http, (a, b), "up"))
        assert await _broadcast_arrives(a1, b1, topic)

        # Traffic from a1 while Redis dies: a2, on the same process, gets every message, in
        # order (local delivery never waits for Redis).
        halfway = asyncio.Event()

        async def traffic() -> None:
            for n in range(1, 201):
                await a1.send(topic, "broadcast", _push("traffic", n), None, "1")
                if n == 50:
                    halfway.set()
                    await asyncio.sleep(0)

        sending = asyncio.create_task(traffic())
        async with asyncio.timeout(5):
            await halfway.wait()
        await redis_server.kill()
        await sending
        got = [(await a2.expect(_is_traffic))["payload"]["payload"]["n"] for _ in range(200)]
        assert got == list(range(1, 201))

        await eventually(lambda: _all_in_state(http, (a, b), "degraded"))
        # Each process still serves its own clients.
        for sender, receiver in ((a1, a2), (b1, b2)):
            assert await _broadcast_arrives(sender, receiver, topic)
        # The API answers (rate limits counted in-process), never 500.
        async with http.post(
            f"{a.http_url}/api/conversations/{conversation}/typing",
            json={"isTyping": True},
            headers={"Authorization": f"Bearer {portal}"},
        ) as response:
            assert response.status == 200, await response.text()
        # So does a typing push over a socket (same rate limit): the channel stays joined.
        typist = await RawSocket.connect(b.ws_url, portal)
        try:
            await typist.join(f"conversation:{conversation}", {"broadcast": {"ack": True}})
            await typist.send(
                f"realtime:conversation:{conversation}",
                "broadcast",
                {"type": "broadcast", "event": "typing", "payload": {"isTyping": True}},
                "5",
                "1",
            )
            reply = await typist.reply_to("5")
            assert reply["payload"]["status"] == "ok", reply
        finally:
            await typist.close()

        await redis_server.start()  # the same port, empty
        loop = asyncio.get_running_loop()
        restarted = loop.time()

        async def across() -> bool:
            return await _broadcast_arrives(a1, b1, topic, 0.1) and await _broadcast_arrives(
                b2, a2, topic, 0.1
            )

        await eventually(across, timeout=RECOVERY, interval=0)
        assert loop.time() - restarted < RECOVERY
        await eventually(lambda: _all_in_state(http, (a, b), "up"))


async def test_a_hung_redis_blocks_nothing_and_is_noticed(
    redis_server: RedisServer, database_url: str, seed: Seed
) -> None:
    """Redis stopped with SIGSTOP: connections stay open and nothing answers. Local delivery
    and the API go on without waiting on it; the broker notices (its commands time out) and
    comes back when Redis resumes."""
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    async with (
        servers(database_url, redis_server.url, 2) as (a, b),
        sockets() as open_socket,
        aiohttp.ClientSession() as http,
    ):
        topic = "realtime:scale-hung"
        a1, a2, b1 = await open_socket(a), await open_socket(a), await open_socket(b)
        for sock in (a1, a2, b1):
            await sock.join("scale-hung")
        await eventually(lambda: _all_in_state(http, (a, b), "up"))

        redis_server.signal(signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await _broadcast_arrives(a1, a2, topic)  # nothing waits on Redis
            async with http.post(
                f"{a.http_url}/api/conversations/{conversation}/typing",
                json={"isTyping": True},
                headers={"Authorization": f"Bearer {portal}"},
            ) as response:
                assert response.status == 200, await response.text()
            assert loop.time() - started < 1.5  # the limiter gives Redis 0.5 s at most
            await eventually(lambda: _all_in_state(http, (a,), "degraded"))
            assert await _broadcast_arrives(a1, a2, topic)
        finally:
            redis_server.signal(signal.SIGCONT)
        await eventually(lambda: _all_in_state(http, (a, b), "up"), timeout=RECOVERY)
        await eventually(
            lambda: _broadcast_arrives(a1, b1, topic, 0.1), timeout=RECOVERY, interval=0
        )


async def test_redis_down_at_start_then_up(redis_server: RedisServer, database_url: str) -> None:
    await redis_server.kill()
    async with (
        servers(database_url, redis_server.url, 2) as (a, b),
        sockets() as open_socket,
        aiohttp.ClientSession() as http,
    ):
        await eventually(lambda: _all_in_state(http, (a, b), "degraded"))
        a1, a2, b1 = await open_socket(a), await open_socket(a), await open_socket(b)
        for sock in (a1, a2, b1):
            await sock.join("scale-late")
        assert await _broadcast_arrives(a1, a2, "realtime:scale-late")

        await redis_server.start()
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def across() -> bool:
            return await _broadcast_arrives(a1, b1, "realtime:scale-late", 0.1)

        await eventually(across, timeout=RECOVERY, interval=0)
        assert loop.time() - started < RECOVERY


async def test_malformed_publications_and_a_failing_sink_do_not_cut_the_subscription(
    redis_server: RedisServer,
) -> None:
    """Anyone who can PUBLISH to the Redis may send garbage on a topic's channel: it is counted
    and skipped, and an envelope the sink fails on is the only one lost; what follows arrives."""
    await survives_garbage_and_a_failing_sink(
        RedisBroker(redis_server.url, "a"),
        RedisBroker(redis_server.url, "b"),
        lambda data: redis_server.command("PUBLISH", "rtm:t:realtime:bad", data),
    )


async def test_rate_limits_are_shared_and_fall_back_when_redis_is_down(
    redis_server: RedisServer, database_url: str, seed: Seed
) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    headers = {"Authorization": f"Bearer {portal}"}
    async with (
        servers(database_url, redis_server.url, 2, rate_typing="3/minute") as (a, b),
        aiohttp.ClientSession() as http,
    ):

        async def typing(server: RunningServer) -> int:
            async with http.post(
                f"{server.http_url}/api/conversations/{conversation}/typing",
                json={"isTyping": True},
                headers=headers,
            ) as response:
                return response.status

        # One budget across both processes.
        assert [await typing(a), await typing(b), await typing(a)] == [200, 200, 200]
        assert await typing(b) == 429
        assert await typing(a) == 429

        await redis_server.kill()
        # Counted per process while Redis is away: a fresh local budget, never a 500.
        assert [await typing(b) for _ in range(3)] == [200, 200, 200]
        assert await typing(b) == 429

        await redis_server.start()  # empty: the shared budget starts again

        async def shared_again() -> bool:
            return await typing(a) == 200

        await eventually(shared_again)


def test_cluster_and_sentinel_urls_accepted_other_cluster_schemes_refused_clearly() -> None:
    def limiter(url: str) -> RateLimiter:
        return RateLimiter(Limits("1/minute", "1/minute", "1/minute", "1/minute"), url)

    for url in ("redis+cluster://h1:7000", "rediss+cluster://h1:7000,h2:7000/0"):
        check_url(url)
        RedisClusterBroker(url, "n1")  # connects nothing yet
        limiter(url)
    for url in ("cluster://h:7000", "redis+cluster://h1:7000/2"):
        for make in (check_url, lambda url: RedisClusterBroker(url, "n1"), limiter):
            with pytest.raises(ConfigurationError) as raised:
                make(url)
            message = str(raised.value)
            assert "RTM_REDIS_URL" in message and "redis+cluster://" in message, message
    for url in ("http://h:6379", "redis://h1:6379,h2:6379"):
        with pytest.raises(ConfigurationError, match="RTM_REDIS_URL"):
            check_url(url)
    for url in (
        "redis://:pw@h:6379/1",
        "rediss://h:6380",
        "unix:///run/redis.sock?db=2",
        "redis+sentinel://127.0.0.1:26379/mymaster",
        "sentinel://:pw@s1,s2:26380/mymaster/1",
        "rediss+sentinel://h:26379/mymaster",
    ):
        check_url(url)
        RedisBroker(url, "n1")  # builds its pools, connects nothing yet
        limiter(url)


def test_rtm_serve_refuses_a_malformed_cluster_url_at_start(database_url: str) -> None:
    rtm = os.path.join(os.path.dirname(sys.executable), "rtm")
    env = {
        **os.environ,
        "RTM_DATABASE_URL": database_url,
        "RTM_REDIS_URL": "redis+cluster://127.0.0.1:7000/3",
        "RTM_JWT_SECRET": "s" * 40,
    }
    done = subprocess.run(
        [rtm, "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "malformed Redis Cluster URL" in done.stderr, done.stderr
    assert "database 0 only" in done.stderr and "redis+cluster://" in done.stderr, done.stderr
