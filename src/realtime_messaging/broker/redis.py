"""Several processes acting as one through Redis pub/sub: one Redis channel per topic.

Each process keeps two connections to Redis, a publisher and a subscriber: redis-py asyncio
connections driven directly (made and replaced here, no pool, no hidden retries).

- **Publish** delivers to this process's hub first, then queues the encoded envelope
  (:mod:`.wire`); a task writes everything queued in one pipelined batch of ``PUBLISH
  <prefix>:t:<topic>`` commands. One connection and one writer keep each publisher's order; local
  delivery never waits for Redis. The process's own publications come back from Redis when it
  has members of the topic and are skipped by node id.
- **Subscribe** only to topics with a member here: the hub reports the first member and the
  last (``topic_added``/``topic_removed``); a join awaits :meth:`RedisBroker.ready`, which
  returns once Redis has confirmed the subscription. A topic is unsubscribed ``linger`` seconds
  after its last member left, so a client that reconnects at once costs no churn.
- **Faults**: either connection failing marks the broker degraded (logged once per transition,
  ``status().up``); this process keeps delivering to its own clients, publications meanwhile
  reach only them (pub/sub is at most once; nothing is replayed). Each connection comes back on
  its own with capped, jittered backoff and the subscriber re-subscribes every wanted topic, so
  delivery between processes resumes within a few seconds of Redis answering again, emptied or
  not. An idle subscriber is probed with ``PING``; one that stays silent is reconnected.
- **Sentinel** (``redis+sentinel://``, :data:`.redis_urls.SENTINEL_FORM`): each new connection asks the
  sentinels for the master's address, and the subscriber asks again every ``topology_interval``
  (5 s): when the answer changed both connections are replaced, as after a fault. A connection to
  a demoted master can go on answering (``PUBLISH`` works on a replica) and a failover notice can
  be missed, so asking is what keeps a process from delivering to an old master forever
  (centrifugo#766/#1189, go-redis#583). Redis Cluster has its own broker (:mod:`.redis_cluster`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from ..exceptions import ConfigurationError
from . import BrokerStatus, Envelope, Sink
from .backoff import Backoff
from .inbound import Inbound
from .joins import Joins
from .redis_urls import (
    check_url,
    is_cluster_url,
    is_sentinel_url,
    master_pool,
    parse_sentinel_url,
    redacted,
    sentinel_manager,
    without_protocol,
)
from .tasks import cancel_until_done
from .wire import encode

log = logging.getLogger(__name__)

#: Topics per SUBSCRIBE/UNSUBSCRIBE command when many change at once (a reconnect).
_BATCH = 512
#: PUBLISH commands per pipelined write.
_PIPELINE = 1024


def publishes(batch: list[tuple[bytes, bytes]], command: bytes = b"PUBLISH") -> bytes:
    """``PUBLISH channel data`` (or ``SPUBLISH``) for each pair, as one RESP write: built in
    one join, half the cost of redis-py's general packer at this volume (benchmarks/README.md)."""
    head = b"*3\r\n$%d\r\n%s\r\n" % (len(command), command)
    parts: list[bytes] = []
    for channel, data in batch:
        parts += (
            head + b"$%d\r\n" % len(channel),
            channel,
            b"\r\n$%d\r\n" % len(data),
            data,
            b"\r\n",
        )
    return b"".join(parts)


def _address(conn: AbstractConnection) -> tuple[str, int] | None:
    """Where a connection made by a Sentinel pool went (set once it connected)."""
    host, port = getattr(conn, "host", None), getattr(conn, "port", None)
    if host is None or port is None:
        return None
    return str(host), int(port)


class MasterMoved(ConnectionError):
    """The sentinels name another master than the one a connection is on."""


class RedisBroker:
    """The :class:`~realtime_messaging.broker.Broker` of several processes, through Redis.

    ``node_id`` must be unique per process (the composition root draws one at random).
    """

    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        prefix: str = "rtm",
        max_backoff: float = 2.0,
        io_timeout: float = 2.0,
        linger: float = 1.0,
        probe_interval: float = 5.0,
        topology_interval: float = 5.0,
        max_queue: int = 10_000,
    ) -> None:
        check_url(url)
        if is_cluster_url(url):
            raise ConfigurationError("a Redis Cluster URL needs the cluster broker (redis_cluster)")
        self.url = url
        self._node = node_id.encode()
        if not 0 < len(self._node) < 256:
            raise ValueError("node_id must be 1 to 255 bytes")
        self.node = node_id
        self._topic_prefix = f"{prefix}:t:".encode()
        self._node_prefix = f"{prefix}:n:".encode()
        self._control = self._node_prefix + self._node
        self._everyone = f"{prefix}:ctl".encode()
        self._max_backoff = max_backoff
        self._io_timeout = io_timeout
        self._linger = linger
        self._probe_interval = probe_interval
        self._topology_interval = topology_interval
        self._max_queue = max_queue
        common: dict[str, Any] = {
            "socket_connect_timeout": io_timeout,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
            # RESP2 whatever the client's default (RESP3 in redis-py 8): pub/sub messages are
            # then plain replies, read in order with everything else.
            "protocol": 2,
        }
        # No socket timeout: redis-py would apply it with asyncio.wait_for, which on Python
        # 3.11 can swallow a cancellation (seen here: a stopped broker's task carrying on).
        # Every operation is bounded here with asyncio.timeout instead; the subscriber's reads
        # are not bounded at all (silence is caught by the PING probe).
        common["socket_timeout"] = None
        self._sentinel: Sentinel | None = None
        self._service = ""
        if is_sentinel_url(url):
            # Each new connection asks the sentinels for the master's address; the subscriber
            # also asks every topology_interval and moves when it changed (_watch_master).
            parsed = parse_sentinel_url(url)
            parsed.master.pop("protocol", None)
            self._sentinel = sentinel_manager(parsed, max(0.1, io_timeout / 4))
            self._service = parsed.service
            self._sub_pool = master_pool(
                parsed, self._sentinel, client_name=f"rtm-{node_id}-sub", **common
            )
            self._pub_pool = master_pool(
                parsed, self._sentinel, client_name=f"rtm-{node_id}-pub", **common
            )
        else:
            resp2 = without_protocol(url)
            self._sub_pool = ConnectionPool.from_url(
                resp2, client_name=f"rtm-{node_id}-sub", **common
            )
            self._pub_pool = ConnectionPool.from_url(
                resp2, client_name=f"rtm-{node_id}-pub", **common
            )
        self._master: tuple[str, int] | None = None  # where the subscriber last connected
        self._pub_address: tuple[str, int] | None = None  # where the publisher is connected
        self._sink: Sink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # -- what to subscribe to
        self._local: set[str] = set()  # topics with a member in this process (the hub says)
        self._joins: Joins[str] = Joins()  # waiting in ready(), by topic
        self._active: set[str] = set()  # SUBSCRIBE sent on the current connection
        self._confirmed: set[str] = set()  # ... and answered by Redis
        self._to_subscribe: set[str] = set()
        self._to_release: dict[str, float] = {}  # topic -> when to UNSUBSCRIBE it
        self._changed = asyncio.Event()
        # -- what to publish
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._wake = asyncio.Event()
        # -- health
        self._sub_up = False
        self._pub_up = False
        self._pub_stale: ConnectionError | None = None  # why the publisher must reconnect
        self._closing = False
        self._state = "starting"  # then "up" or "degraded", logged on each change
        self._settled = asyncio.Event()  # both connections tried once
        self._sub_tried = False
        self._pub_tried = False
        self._last_heard = 0.0
        self._ping_sent: float | None = None
        self._inbound = Inbound(self._node)
        self.published = 0
        self.dropped = 0

    # -- Broker ------------------------------------------------------------------------

    async def start(self, sink: Sink) -> None:
        """Connect in the background; return once both connections were tried (bounded)."""
        self._sink = sink
        self._tasks = [
            asyncio.create_task(self._subscriber(), name="rtm-redis-subscriber"),
            asyncio.create_task(self._publisher(), name="rtm-redis-publisher"),
        ]
        try:
            async with asyncio.timeout(self._io_timeout + 0.5):
                await self._settled.wait()
        except TimeoutError:
            pass  # still connecting: the process serves its own clients meanwhile

    async def stop(self) -> None:
        """Send what is queued (bounded), then close both connections."""
        loop = asyncio.get_running_loop()
        if self._pub_up and self._queue:
            deadline = loop.time() + self._io_timeout
            while self._queue and self._pub_up and loop.time() < deadline:
                await asyncio.sleep(0.01)
        self._closing = True
        self._wake.set()
        self._changed.set()
        await cancel_until_done(self._tasks, self._io_timeout, "Redis broker")
        self._tasks = []
        self._sink = None
        self._joins.release()
        await self._sub_pool.disconnect()
        await self._pub_pool.disconnect()
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                await client.aclose()

    def publish(self, envelope: Envelope) -> None:
        """Deliver here at once; queue for the other processes (never blocks)."""
        sink = self._sink
        if sink is None:
            return
        sink.deliver(envelope)
        if not self._pub_up or len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        try:
            data = encode(envelope, self._node)
        except (TypeError, ValueError):  # not JSON: local delivery could not have encoded it
            log.exception("cannot forward an envelope on %s", envelope.topic)
            self.dropped += 1
            return
        self._queue.append((self._channel(envelope.topic), data))
        self._wake.set()

    def send(self, envelope: Envelope, node: str | None = None) -> None:
        """Queue a control envelope for every other process, or for process ``node``."""
        if self._sink is None or not self._pub_up or len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        channel = self._everyone if node is None else self._node_prefix + node.encode()
        try:
            data = encode(envelope, self._node)
        except (TypeError, ValueError):
            log.exception("cannot send a control envelope %s", envelope.event)
            self.dropped += 1
            return
        self._queue.append((channel, data))
        self._wake.set()

    def topic_added(self, topic: str) -> None:
        self._local.add(topic)
        self._want(topic)

    def topic_removed(self, topic: str) -> None:
        self._local.discard(topic)
        self._unwant(topic)

    async def ready(self, topic: str) -> None:
        """Return once publications on ``topic`` from every process reach this one: at once
        when subscribed already or when Redis cannot be reached, else after one round trip
        (at most ``io_timeout``)."""
        if topic in self._confirmed or not self._sub_up or self._sink is None:
            return
        if not await self._joins.wait(topic, topic, self._io_timeout, self._want, self._unwant):
            log.warning("Redis did not confirm the subscription to %s in time", topic)

    def status(self) -> BrokerStatus:
        return BrokerStatus(
            "redis",
            up=self._state == "up",
            published=self.published,
            received=self._inbound.received,
            dropped=self.dropped,
            malformed=self._inbound.malformed,
        )

    # -- subscriptions -----------------------------------------------------------------

    def _want(self, topic: str) -> None:
        self._to_release.pop(topic, None)
        if topic not in self._active and topic not in self._to_subscribe:
            self._to_subscribe.add(topic)
            self._changed.set()

    def _unwant(self, topic: str) -> None:
        if topic in self._local or topic in self._joins:
            return
        self._to_subscribe.discard(topic)
        if topic in self._active and topic not in self._to_release:
            self._to_release[topic] = asyncio.get_running_loop().time() + self._linger
            self._changed.set()

    def _channel(self, topic: str) -> bytes:
        """The Redis channel of a topic (any string: lone surrogates pass, never raise)."""
        return self._topic_prefix + topic.encode("utf-8", "surrogatepass")

    def _channels(self, topics: Iterable[str]) -> list[bytes]:
        return [self._channel(topic) for topic in topics]

    async def _subscriber(self) -> None:
        backoff = Backoff(self._max_backoff)
        while not self._closing:
            conn: AbstractConnection | None = None
            try:
                conn = self._sub_pool.make_connection()  # type: ignore[no-untyped-call]
                await self._subscribe_session(conn, backoff)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._sub_lost(exc)
            finally:
                if conn is not None:
                    await conn.disconnect(nowait=True)
            await asyncio.sleep(backoff.next())

    async def _subscribe_session(self, conn: AbstractConnection, backoff: Backoff) -> None:
        """One subscriber connection, from connecting to its failure."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._io_timeout):
            await conn.connect()  # type: ignore[no-untyped-call]
        here = _address(conn) if self._sentinel is not None else None
        if here is not None:
            if self._master is not None and here != self._master:
                log.warning(
                    "Redis broker %s: Sentinel failover of %r: the master is now %s:%d "
                    "(was %s:%d); resubscribed there",
                    self._node.decode(),
                    self._service,
                    *here,
                    *self._master,
                )
            self._master = here
        self._active = set()
        self._confirmed = set()
        self._to_release = {}
        self._to_subscribe = self._local | self._joins.topics()
        # The control channels first: they keep the connection in subscribed mode (so PING
        # answers as a pub/sub message), and the reply for the node's own proves it works.
        async with asyncio.timeout(self._io_timeout):
            await conn.send_command("SUBSCRIBE", self._everyone, self._control)
        self._last_heard = loop.time()
        self._ping_sent = None
        reader = asyncio.create_task(self._read(conn), name="rtm-redis-reader")
        watcher = None
        if here is not None:
            watcher = asyncio.create_task(self._watch_master(here), name="rtm-redis-sentinel")
        try:
            while not self._closing:
                if reader.done():
                    reader.result()
                    raise ConnectionError("the subscriber connection ended")
                if watcher is not None and watcher.done():
                    watcher.result()  # raises MasterMoved
                if self._sub_up:
                    backoff.reset()
                async with asyncio.timeout(self._io_timeout):
                    await self._sync(conn)
                now = loop.time()
                wake = self._probe(now)
                if self._to_release:
                    wake = min(wake, min(self._to_release.values()))
                try:
                    async with asyncio.timeout(max(0.0, wake - now)):
                        await self._changed.wait()
                except TimeoutError:
                    pass
                self._changed.clear()
                probe_at = loop.time()
                if (
                    self._ping_sent is not None
                    and probe_at - self._ping_sent >= self._probe_interval
                ):
                    raise ConnectionError(f"no answer to PING within {self._probe_interval:g} s")
                if self._ping_sent is None and probe_at - self._last_heard >= self._probe_interval:
                    self._ping_sent = probe_at
                    async with asyncio.timeout(self._io_timeout):
                        await conn.send_command("PING", check_health=False)
        finally:
            tasks = [reader] if watcher is None else [reader, watcher]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch_master(self, here: tuple[str, int]) -> None:
        """Ask the sentinels every ``topology_interval`` where the master is; raise
        :class:`MasterMoved` once it is not ``here`` (the subscriber's connection). A connection
        to a demoted master may go on answering, and a failover notice can be missed
        (centrifugo#766/#1189, go-redis#583): asking is what guarantees the move."""
        assert self._sentinel is not None
        try:
            while True:
                await asyncio.sleep(self._topology_interval)  # a period, not a wait for an event
                try:
                    async with asyncio.timeout(self._io_timeout):
                        found = await self._sentinel.discover_master(self._service)
                except Exception as exc:  # no sentinel answers, or none knows a master: stay
                    log.debug("Sentinel: no master for %r (%s)", self._service, exc)
                    continue
                master = (str(found[0]), int(found[1]))
                if self._pub_address is not None and self._pub_address != master:
                    self._pub_stale = MasterMoved(
                        f"Sentinel names {master[0]}:{master[1]} the master of {self._service!r}"
                    )
                    self._wake.set()
                if master != here:
                    raise MasterMoved(
                        f"Sentinel names {master[0]}:{master[1]} the master of {self._service!r}"
                        f", not {here[0]}:{here[1]}"
                    )
        finally:
            self._changed.set()

    def _probe(self, now: float) -> float:
        """When the subscriber next needs looking at for liveness."""
        if self._ping_sent is not None:
            return self._ping_sent + self._probe_interval
        return self._last_heard + self._probe_interval

    async def _sync(self, conn: AbstractConnection) -> None:
        """Send the SUBSCRIBE and UNSUBSCRIBE commands the wanted topics call for."""
        while self._to_subscribe:
            batch = [self._to_subscribe.pop() for _ in range(min(_BATCH, len(self._to_subscribe)))]
            self._active.update(batch)
            await conn.send_command("SUBSCRIBE", *self._channels(batch), check_health=False)
        if self._to_release:
            now = asyncio.get_running_loop().time()
            due = [t for t, at in self._to_release.items() if at <= now]
            for topic in due:
                del self._to_release[topic]
                self._active.discard(topic)
                self._confirmed.discard(topic)
            for start in range(0, len(due), _BATCH):
                channels = self._channels(due[start : start + _BATCH])
                await conn.send_command("UNSUBSCRIBE", *channels, check_health=False)

    async def _read(self, conn: AbstractConnection) -> None:
        """Every reply of the subscriber connection, in order; ends on its failure."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                reply = await conn.read_response()
                self._last_heard = loop.time()
                self._ping_sent = None
                if isinstance(reply, list) and len(reply) >= 2:
                    self._on_reply(reply)
        finally:
            self._changed.set()

    def _on_reply(self, reply: list[Any]) -> None:
        kind = reply[0]
        channel: bytes = reply[1]
        if kind == b"message":
            control = channel == self._everyone or channel == self._control
            self._inbound.relay(self._sink, reply[2], control=control)
        elif kind == b"subscribe":
            if channel == self._everyone:
                return
            if channel == self._control:
                self._sub_tried = True
                self._sub_up = True
                self._health_changed(None)
                if self._sink is not None:
                    self._sink.connected()
                return
            topic = channel[len(self._topic_prefix) :].decode("utf-8", "surrogatepass")
            if topic in self._active:
                self._confirmed.add(topic)
                self._joins.confirm(topic)

    def _sub_lost(self, exc: BaseException) -> None:
        self._sub_tried = True
        self._sub_up = False
        if self._pub_up and self._pub_stale is None:
            # The publisher's connection went through the same fault, most likely (a Redis
            # restart, a failover): replace it now rather than lose the next batch on it.
            self._pub_stale = (
                exc
                if isinstance(exc, MasterMoved)
                else ConnectionError("the subscriber connection was lost")
            )
            self._wake.set()
        self._active = set()
        self._confirmed = set()
        self._joins.release()
        self._health_changed(exc)

    # -- publishing --------------------------------------------------------------------

    async def _publisher(self) -> None:
        backoff = Backoff(self._max_backoff)
        timeout = self._io_timeout
        while not self._closing:
            conn: AbstractConnection | None = None
            batch: list[tuple[bytes, bytes]] = []
            try:
                conn = self._pub_pool.make_connection()  # type: ignore[no-untyped-call]
                async with asyncio.timeout(timeout):
                    await conn.connect()
                self._pub_address = _address(conn) if self._sentinel is not None else None
                self._pub_stale = None
                self._pub_tried = True
                self._pub_up = True
                self._health_changed(None)
                backoff.reset()
                while not self._closing:
                    if self._pub_stale is not None:
                        raise self._pub_stale
                    if not self._queue:
                        self._wake.clear()
                        try:
                            async with asyncio.timeout(self._probe_interval):
                                await self._wake.wait()
                        except TimeoutError:
                            # Idle: prove the connection still works (and keep it from
                            # an idle timeout), so a dead one is replaced before it is needed.
                            async with asyncio.timeout(timeout):
                                await conn.send_command("PING", check_health=False)
                                await conn.read_response()
                        continue
                    queue = self._queue
                    batch = [queue.popleft() for _ in range(min(_PIPELINE, len(queue)))]
                    async with asyncio.timeout(timeout):
                        await conn.send_packed_command(publishes(batch), check_health=False)
                        for _ in batch:
                            await conn.read_response()
                    self.published += len(batch)
                    batch = []
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._pub_tried = True
                self._pub_up = False
                # Unconfirmed or unsent: counted as not forwarded (some may have been).
                self.dropped += len(batch) + len(self._queue)
                self._queue.clear()
                self._health_changed(exc)
            finally:
                self._pub_address = None
                if conn is not None:
                    await conn.disconnect(nowait=True)
            await asyncio.sleep(backoff.next())

    # -- health ------------------------------------------------------------------------

    def _health_changed(self, exc: BaseException | None) -> None:
        """Log each change between up and degraded once (not every failed attempt)."""
        if self._sub_tried and self._pub_tried:
            self._settled.set()
        if self._sub_up and self._pub_up:
            if self._state != "up":
                # Recovery is logged as loudly as the fault (no logging setup shows INFO).
                level = logging.WARNING if self._state == "degraded" else logging.INFO
                log.log(
                    level,
                    "Redis broker %s: connected to %s; delivery between processes on",
                    self._node.decode(),
                    redacted(self.url),
                )
                self._state = "up"
            return
        if exc is not None and self._state != "degraded":
            self._state = "degraded"
            log.warning(
                "Redis broker %s: %s %s (%s: %s); degraded: this process serves "
                "its own clients only, and reconnects in the background",
                self._node.decode(),
                redacted(self.url),
                "left for the new master" if isinstance(exc, MasterMoved) else "unreachable",
                type(exc).__name__,
                exc,
            )
