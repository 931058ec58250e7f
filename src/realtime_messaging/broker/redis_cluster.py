"""Several processes acting as one through a Redis Cluster, with sharded pub/sub (Redis 7+).

The same broker as :class:`.redis.RedisBroker` (one channel per topic ``<prefix>:t:<topic>``,
control channels ``<prefix>:ctl`` and ``<prefix>:n:<node>``, the :mod:`.wire` format, own echoes
skipped, subscribe on demand with linger, PING probes, backoff, health and counts), except that
every channel is a *sharded* channel: ``SPUBLISH`` and ``SSUBSCRIBE`` go to the master owning the
channel's slot (``redis.crc.key_slot``), and a message travels within that shard only, instead of
being copied to every node of the cluster as ``PUBLISH`` is (field guide §1.2).

- **Topology**: the masters and their slots come from ``CLUSTER SLOTS``, asked of a known node
  (the URL's seeds at first) every ``topology_interval`` and at once after a ``MOVED``, a
  ``sunsubscribe`` nobody asked for (the channel's slot migrated: field guide §6) or a lost
  connection. A channel whose slot changed hands is unsubscribed from the old master and
  subscribed on the new one; then the sink is told (``connected``) that messages may have been
  missed.
- **Per master** (:class:`_Shard`): a subscriber and a publisher connection, each redis-py
  asyncio connection driven directly (no pool, no hidden retries), each coming back on its own
  with capped, jittered backoff. ``SSUBSCRIBE``/``SUNSUBSCRIBE`` are one command per slot (the
  server refuses a cross-slot one), written together; ``SPUBLISH`` batches are pipelined.
- **Order**: a topic lives on one master and its publications go through one connection, so a
  topic keeps each publisher's order. Channels of different masters travel apart, so a control
  envelope (:meth:`RedisClusterBroker.send`) is written only once every earlier publication was
  answered, and later ones wait for it to be answered: a presence answer still comes after the
  diffs it follows (:mod:`..server.cluster`).
- **Health**: up while every master's two connections work and the control channels are
  subscribed; else degraded (logged once per change): this process keeps delivering to its own
  clients, and publications to an unreachable master are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ResponseError,
    TryAgainError,
)

from . import BrokerStatus, Envelope, Sink
from .backoff import Backoff
from .inbound import Inbound
from .joins import Joins
from .redis import _PIPELINE, publishes
from .redis_urls import parse_cluster_url, redacted
from .tasks import cancel_until_done
from .wire import encode

log = logging.getLogger(__name__)

_SLOTS = 16384
#: The least time between two reads of the slot map (a burst of MOVED asks for many).
_REFRESH_GAP = 0.1
Address = tuple[str, int]


def _by_slot(channels: list[bytes]) -> list[list[bytes]]:
    """The channels grouped by slot: one (S)SUBSCRIBE command each."""
    groups: dict[int, list[bytes]] = {}
    for channel in channels:
        groups.setdefault(key_slot(channel), []).append(channel)
    return list(groups.values())


@dataclass(eq=False)
class _Shard:
    """One master: its connections' state, what is subscribed on it, what is queued for it."""

    address: Address
    queue: deque[tuple[bytes, bytes]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # something queued
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # something to (un)subscribe
    dirty: set[bytes] = field(default_factory=set)  # channels to look at again
    active: set[bytes] = field(default_factory=set)  # SSUBSCRIBE sent on the connection
    confirmed: set[bytes] = field(default_factory=set)  # ... and answered
    sub_up: bool = False
    pub_up: bool = False
    sub_tried: bool = False
    pub_tried: bool = False
    busy: bool = False  # a batch written and not all answered
    pub_stale: BaseException | None = None  # why the publisher must reconnect
    last_heard: float = 0.0
    ping_sent: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"


class RedisClusterBroker:
    """The :class:`~realtime_messaging.broker.Broker` of several processes, through a Redis
    Cluster (``redis+cluster://``, :data:`.redis_urls.CLUSTER_FORM`)."""

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
        parsed = parse_cluster_url(url)
        self.url = url
        self._node = node_id.encode()
        if not 0 < len(self._node) < 256:
            raise ValueError("node_id must be 1 to 255 bytes")
        self.node = node_id
        self._seeds = list(parsed.seeds)
        options = dict(parsed.node)
        options.pop("protocol", None)  # RESP2 (below), whatever the URL says
        self._connection_class: type[Connection] = options.pop("connection_class", Connection)
        # As RedisBroker's: no retries, no socket timeout (every operation is bounded here
        # with asyncio.timeout), RESP2 so that pub/sub messages are plain replies in order.
        self._options: dict[str, Any] = {
            "socket_connect_timeout": io_timeout,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
            "socket_timeout": None,
            "protocol": 2,
            **options,
        }
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
        self._sink: Sink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # -- topology
        self._slots: list[Address | None] = [None] * _SLOTS
        self._shards: dict[Address, _Shard] = {}
        self._known = False  # a slot map was read
        self._topology_tried = False
        self._refresh = False  # read the slot map again at once
        self._tick = asyncio.Event()  # wakes the topology task
        self._orphans: set[bytes] = set()  # channels the server unsubscribed us from
        self._lost = False  # messages may have been missed: tell the sink after resubscribing
        # -- what to subscribe to
        self._local: set[str] = set()
        self._joins: Joins[bytes] = Joins()  # waiting in ready(), by channel
        self._wanted: set[bytes] = {self._everyone, self._control}
        self._release: dict[bytes, float] = {}  # channel -> when to SUNSUBSCRIBE it
        # -- what to publish: behind a control envelope not yet answered (the fence)
        self._held: deque[tuple[bytes, bytes, bool]] = deque()
        self._fence: _Shard | None = None
        # -- health
        self._state = "starting"
        self._settled = asyncio.Event()
        self._inbound = Inbound(self._node)
        self.published = 0
        self.dropped = 0

    # -- Broker ------------------------------------------------------------------------

    async def start(self, sink: Sink) -> None:
        """Discover the cluster in the background; return once every master's connections
        were tried (bounded)."""
        self._sink = sink
        self._tasks = [asyncio.create_task(self._topology(), name="rtm-cluster-topology")]
        try:
            async with asyncio.timeout(2 * self._io_timeout + 0.5):
                await self._settled.wait()
        except TimeoutError:
            pass  # still connecting: the process serves its own clients meanwhile

    async def stop(self) -> None:
        """Send what is queued (bounded), then close every connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._io_timeout
        while loop.time() < deadline and (
            self._held or any(s.pub_up and (s.queue or s.busy) for s in self._shards.values())
        ):
            await asyncio.sleep(0.01)
        self._closing = True
        self._tick.set()
        tasks = list(self._tasks)
        for shard in self._shards.values():
            shard.wake.set()
            shard.changed.set()
            tasks += shard.tasks
        await self._cancel(tasks)
        self._tasks = []
        self._sink = None
        self._joins.release()

    async def _cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        await cancel_until_done(tasks, self._io_timeout, "Redis Cluster broker")

    def publish(self, envelope: Envelope) -> None:
        """Deliver here at once; queue for the other processes (never blocks)."""
        sink = self._sink
        if sink is None:
            return
        sink.deliver(envelope)
        try:
            data = encode(envelope, self._node)
        except (TypeError, ValueError):  # not JSON: local delivery could not have encoded it
            log.exception("cannot forward an envelope on %s", envelope.topic)
            self.dropped += 1
            return
        self._enqueue(self._channel(envelope.topic), data, control=False)

    def send(self, envelope: Envelope, node: str | None = None) -> None:
        """Queue a control envelope for every other process, or for process ``node``."""
        if self._sink is None:
            return
        channel = self._everyone if node is None else self._node_prefix + node.encode()
        try:
            data = encode(envelope, self._node)
        except (TypeError, ValueError):
            log.exception("cannot send a control envelope %s", envelope.event)
            self.dropped += 1
            return
        self._enqueue(channel, data, control=True)

    def topic_added(self, topic: str) -> None:
        self._local.add(topic)
        self._want(topic)

    def topic_removed(self, topic: str) -> None:
        self._local.discard(topic)
        self._unwant(topic)

    async def ready(self, topic: str) -> None:
        """Return once publications on ``topic`` from every process reach this one: at once
        when subscribed already or when its master cannot be reached, else after one round trip
        (at most ``io_timeout``)."""
        channel = self._channel(topic)
        shard = self._owner(channel)
        if shard is None or not shard.sub_up or self._sink is None or channel in shard.confirmed:
            return
        if not await self._joins.wait(topic, channel, self._io_timeout, self._want, self._unwant):
            log.warning("Redis Cluster did not confirm the subscription to %s in time", topic)

    def status(self) -> BrokerStatus:
        return BrokerStatus(
            "redis",
            up=self._state == "up",
            published=self.published,
            received=self._inbound.received,
            dropped=self.dropped,
            malformed=self._inbound.malformed,
        )

    # -- channels and their masters ----------------------------------------------------

    def _channel(self, topic: str) -> bytes:
        """The Redis channel of a topic (any string: lone surrogates pass, never raise)."""
        return self._topic_prefix + topic.encode("utf-8", "surrogatepass")

    def _owner(self, channel: bytes) -> _Shard | None:
        address = self._slots[key_slot(channel)]
        return None if address is None else self._shards.get(address)

    def _mark(self, channel: bytes) -> None:
        """Have the master owning ``channel`` look at it again (subscribe or not)."""
        shard = self._owner(channel)
        if shard is not None:
            shard.dirty.add(channel)
            shard.changed.set()

    def _want(self, topic: str) -> None:
        channel = self._channel(topic)
        self._release.pop(channel, None)
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._mark(channel)

    def _unwant(self, topic: str) -> None:
        if topic in self._local or topic in self._joins:
            return
        channel = self._channel(topic)
        if channel in self._wanted and channel not in self._release:
            self._release[channel] = asyncio.get_running_loop().time() + self._linger
            self._tick.set()

    # -- topology ----------------------------------------------------------------------

    def _request_refresh(self) -> None:
        self._refresh = True
        self._tick.set()

    async def _topology(self) -> None:
        """Read the slot map every ``topology_interval`` (at once when asked); release
        lingering channels when due."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(self._max_backoff)
        next_read = loop.time()
        earliest = 0.0  # when a read asked for may next be made
        while not self._closing:
            now = loop.time()
            if (self._refresh and now >= earliest) or now >= next_read:
                self._refresh = False
                earliest = now + _REFRESH_GAP
                try:
                    ranges = await self._discover()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._topology_tried = True
                    self._health_changed(exc)
                    next_read = loop.time() + (
                        self._topology_interval if self._known else backoff.next()
                    )
                else:
                    backoff.reset()
                    await self._apply(ranges)
                    next_read = loop.time() + self._topology_interval
                now = loop.time()
            due = [channel for channel, at in self._release.items() if at <= now]
            for channel in due:
                del self._release[channel]
                self._wanted.discard(channel)
                self._mark(channel)
            wake = min([next_read, *self._release.values()])
            if self._refresh:
                wake = min(wake, earliest)
            self._tick.clear()
            try:
                async with asyncio.timeout(max(0.0, wake - now)):
                    await self._tick.wait()
            except TimeoutError:
                pass

    async def _discover(self) -> list[tuple[int, int, Address]]:
        """``CLUSTER SLOTS`` from the first known master or seed that answers: (first slot,
        last slot, master) ranges."""
        candidates = list(dict.fromkeys([*self._shards, *self._seeds]))
        failure: BaseException = ConnectionError("no node to ask")
        for address in candidates:
            conn = self._connection(address, "topology")
            try:
                async with asyncio.timeout(self._io_timeout):
                    await conn.connect()  # type: ignore[no-untyped-call]
                    await conn.send_command("CLUSTER", "SLOTS", check_health=False)
                    reply = await conn.read_response()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = exc
                continue
            finally:
                await conn.disconnect(nowait=True)
            ranges: list[tuple[int, int, Address]] = []
            for first, last, master, *_replicas in reply:
                host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
                if host in ("", "?"):  # the node does not know its own address: as asked
                    host = address[0]
                ranges.append((int(first), int(last), (host, int(master[1]))))
            if not ranges:
                failure = ConnectionError(f"{address[0]}:{address[1]} knows no slots")
                continue
            return ranges
        raise failure

    async def _apply(self, ranges: list[tuple[int, int, Address]]) -> None:
        """Take a slot map: start the new masters' connections, stop the old ones', and move
        every channel whose master changed."""
        slots: list[Address | None] = [None] * _SLOTS
        for first, last, address in ranges:
            slots[first : last + 1] = [address] * (last - first + 1)
        self._known = True
        self._topology_tried = True
        if slots != self._slots:
            if any(self._slots):
                log.warning(
                    "Redis Cluster broker %s: the slot map changed; moving subscriptions",
                    self.node,
                )
            self._slots = slots
            masters = {address for address in slots if address is not None}
            for address in masters - set(self._shards):
                shard = _Shard(address)
                shard.tasks = [
                    asyncio.create_task(self._subscriber(shard), name="rtm-cluster-subscriber"),
                    asyncio.create_task(self._publisher(shard), name="rtm-cluster-publisher"),
                ]
                self._shards[address] = shard
            for address in set(self._shards) - masters:
                shard = self._shards.pop(address)
                self.dropped += len(shard.queue)
                shard.queue.clear()
                await self._cancel(shard.tasks)
            for shard in self._shards.values():
                shard.dirty |= shard.active  # what is no longer its own is unsubscribed
                shard.changed.set()
            for channel in self._wanted:
                self._mark(channel)
            self._release_held()
        orphans, self._orphans = self._orphans, set()
        for channel in orphans:
            if channel in self._wanted:
                self._mark(channel)
        self._health_changed(None)
        if self._lost and self._state == "up" and self._sink is not None:
            self._lost = False
            self._sink.connected()

    def _connection(self, address: Address, role: str) -> AbstractConnection:
        return self._connection_class(
            host=address[0],
            port=address[1],
            client_name=f"rtm-{self.node}-{role}",
            **self._options,
        )

    def _misrouted(self, exc: ResponseError) -> bool:
        """Whether a command's error says the slot map is stale (then it is read again)."""
        if isinstance(exc, (MovedError, AskError, ClusterDownError, TryAgainError)):
            self._request_refresh()
            return True
        return False

    # -- subscribing -------------------------------------------------------------------

    async def _subscriber(self, shard: _Shard) -> None:
        backoff = Backoff(self._max_backoff)
        while not self._closing:
            conn: AbstractConnection | None = None
            try:
                conn = self._connection(shard.address, "sub")
                await self._subscribe_session(shard, conn, backoff)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._sub_lost(shard, exc)
            finally:
                if conn is not None:
                    await conn.disconnect(nowait=True)
            await asyncio.sleep(backoff.next())

    async def _subscribe_session(
        self, shard: _Shard, conn: AbstractConnection, backoff: Backoff
    ) -> None:
        """One subscriber connection to a master, from connecting to its failure."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._io_timeout):
            await conn.connect()  # type: ignore[no-untyped-call]
            # The first answer (to this PING) says the connection works.
            await conn.send_command("PING", check_health=False)
        shard.active = set()
        shard.confirmed = set()
        shard.dirty = set(self._wanted)
        shard.last_heard = loop.time()
        shard.ping_sent = loop.time()
        reader = asyncio.create_task(self._read(shard, conn), name="rtm-cluster-reader")
        try:
            while not self._closing:
                if reader.done():
                    reader.result()
                    raise ConnectionError("the subscriber connection ended")
                if shard.sub_up:
                    backoff.reset()
                shard.changed.clear()
                async with asyncio.timeout(self._io_timeout):
                    await self._sync(shard, conn)
                now = loop.time()
                wake = (shard.ping_sent or shard.last_heard) + self._probe_interval
                try:
                    async with asyncio.timeout(max(0.0, wake - now)):
                        await shard.changed.wait()
                except TimeoutError:
                    pass
                probe_at = loop.time()
                if (
                    shard.ping_sent is not None
                    and probe_at - shard.ping_sent >= self._probe_interval
                ):
                    raise ConnectionError(f"no answer to PING within {self._probe_interval:g} s")
                if shard.ping_sent is None and probe_at - shard.last_heard >= self._probe_interval:
                    shard.ping_sent = probe_at
                    async with asyncio.timeout(self._io_timeout):
                        await conn.send_command("PING", check_health=False)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _sync(self, shard: _Shard, conn: AbstractConnection) -> None:
        """Send the SSUBSCRIBE and SUNSUBSCRIBE commands the dirty channels call for."""
        dirty, shard.dirty = shard.dirty, set()
        subscribe: list[bytes] = []
        unsubscribe: list[bytes] = []
        for channel in dirty:
            if channel not in shard.active:
                if channel in self._wanted and self._slots[key_slot(channel)] == shard.address:
                    subscribe.append(channel)
            elif self._slots[key_slot(channel)] != shard.address:
                # Its slot moved: the master dropped the subscription itself (it answers
                # SUNSUBSCRIBE with MOVED), and sends nothing more on it.
                shard.active.discard(channel)
                shard.confirmed.discard(channel)
            elif channel not in self._wanted:
                unsubscribe.append(channel)
        shard.active.update(subscribe)
        shard.active.difference_update(unsubscribe)
        shard.confirmed.difference_update(unsubscribe)
        commands: list[tuple[Any, ...]] = [("SSUBSCRIBE", *group) for group in _by_slot(subscribe)]
        commands += [("SUNSUBSCRIBE", *group) for group in _by_slot(unsubscribe)]
        for start in range(0, len(commands), _PIPELINE):
            packed = conn.pack_commands(commands[start : start + _PIPELINE])
            await conn.send_packed_command(packed, check_health=False)

    async def _read(self, shard: _Shard, conn: AbstractConnection) -> None:
        """Every reply of a subscriber connection, in order; ends on its failure."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    reply = await conn.read_response()
                except ResponseError as exc:  # an SSUBSCRIBE refused: MOVED, CLUSTERDOWN, ...
                    if not self._misrouted(exc):
                        log.warning(
                            "Redis Cluster %s refused a subscription: %s", shard.name(), exc
                        )
                    # Which channel is not said (MOVED names its slot): look at them again
                    # once the map is read.
                    slot = exc.slot_id if isinstance(exc, MovedError) else None
                    refused = {
                        c
                        for c in shard.active - shard.confirmed
                        if slot is None or key_slot(c) == slot
                    }
                    self._orphans |= refused
                    shard.active -= refused
                    self._request_refresh()
                    reply = None
                shard.last_heard = loop.time()
                shard.ping_sent = None
                if not shard.sub_up:
                    shard.sub_tried = True
                    shard.sub_up = True
                    self._health_changed(None)
                if isinstance(reply, list) and len(reply) >= 2:
                    self._on_reply(shard, reply)
        finally:
            shard.changed.set()

    def _on_reply(self, shard: _Shard, reply: list[Any]) -> None:
        kind = reply[0]
        channel: bytes = reply[1]
        if kind == b"smessage":
            control = channel == self._everyone or channel == self._control
            self._inbound.relay(self._sink, reply[2], control=control)
        elif kind == b"ssubscribe":
            if channel in shard.active:
                shard.confirmed.add(channel)
                self._joins.confirm(channel)
                if channel == self._everyone or channel == self._control:
                    self._health_changed(None)
        elif kind == b"sunsubscribe" and channel in shard.active:
            # Not asked for: the channel's slot left this master (resharding, failover).
            shard.active.discard(channel)
            shard.confirmed.discard(channel)
            self._orphans.add(channel)
            self._lost = True
            self._request_refresh()
            if channel == self._everyone or channel == self._control:
                self._health_changed(None)

    def _sub_lost(self, shard: _Shard, exc: BaseException) -> None:
        shard.sub_tried = True
        shard.sub_up = False
        if shard.pub_up and shard.pub_stale is None:
            # Its publisher most likely went through the same fault: replace it now rather
            # than lose the next batch on it.
            shard.pub_stale = ConnectionError(
                f"the subscriber connection to {shard.name()} was lost"
            )
            shard.wake.set()
        self._joins.release(c for c in self._joins.keys() if self._owner(c) is shard)
        shard.active = set()
        shard.confirmed = set()
        self._request_refresh()  # a failover, perhaps
        self._health_changed(exc)

    # -- publishing --------------------------------------------------------------------

    def _enqueue(self, channel: bytes, data: bytes, *, control: bool) -> None:
        """Queue for the channel's master, unless it must wait behind a control envelope (or,
        being one, behind what was queued before it)."""
        if self._held or self._fence is not None or (control and self._busy()):
            if len(self._held) >= self._max_queue:
                self.dropped += 1
            else:
                self._held.append((channel, data, control))
            return
        shard = self._dispatch(channel, data)
        if control:
            self._fence = shard

    def _dispatch(self, channel: bytes, data: bytes) -> _Shard | None:
        shard = self._owner(channel)
        if shard is None or not shard.pub_up or len(shard.queue) >= self._max_queue:
            self.dropped += 1
            return None
        shard.queue.append((channel, data))
        shard.wake.set()
        return shard

    def _busy(self) -> bool:
        return any(shard.busy or shard.queue for shard in self._shards.values())

    def _release_held(self) -> None:
        """Queue what waited, up to the next control envelope that must wait in turn."""
        fence = self._fence
        if fence is not None:
            if (fence.busy or fence.queue) and self._shards.get(fence.address) is fence:
                return
            self._fence = None
        while self._held:
            channel, data, control = self._held[0]
            if control:
                if self._busy():
                    return
                self._held.popleft()
                self._fence = self._dispatch(channel, data)
                if self._fence is not None:
                    return
            else:
                self._held.popleft()
                self._dispatch(channel, data)

    async def _publisher(self, shard: _Shard) -> None:
        backoff = Backoff(self._max_backoff)
        timeout = self._io_timeout
        while not self._closing:
            conn: AbstractConnection | None = None
            batch: list[tuple[bytes, bytes]] = []
            try:
                conn = self._connection(shard.address, "pub")
                async with asyncio.timeout(timeout):
                    await conn.connect()  # type: ignore[no-untyped-call]
                shard.pub_stale = None
                shard.pub_tried = True
                shard.pub_up = True
                self._health_changed(None)
                backoff.reset()
                while not self._closing:
                    if shard.pub_stale is not None:
                        raise shard.pub_stale
                    if not shard.queue:
                        shard.busy = False
                        self._release_held()
                        if shard.queue:
                            continue
                        shard.wake.clear()
                        try:
                            async with asyncio.timeout(self._probe_interval):
                                await shard.wake.wait()
                        except TimeoutError:
                            # Idle: prove the connection still works.
                            async with asyncio.timeout(timeout):
                                await conn.send_command("PING", check_health=False)
                                await conn.read_response()
                        continue
                    shard.busy = True
                    queue = shard.queue
                    batch = [queue.popleft() for _ in range(min(_PIPELINE, len(queue)))]
                    refused = 0
                    async with asyncio.timeout(timeout):
                        await conn.send_packed_command(
                            publishes(batch, b"SPUBLISH"), check_health=False
                        )
                        for _ in batch:
                            try:
                                await conn.read_response()
                            except ResponseError as exc:  # MOVED: the map is read again
                                refused += 1
                                if not self._misrouted(exc):
                                    log.warning("Redis Cluster %s: %s", shard.name(), exc)
                    self.published += len(batch) - refused
                    self.dropped += refused
                    batch = []
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                shard.pub_tried = True
                shard.pub_up = False
                shard.busy = False
                # Unconfirmed or unsent: counted as not forwarded (some may have been).
                self.dropped += len(batch) + len(shard.queue)
                shard.queue.clear()
                self._release_held()
                self._request_refresh()
                self._health_changed(exc)
            finally:
                if conn is not None:
                    await conn.disconnect(nowait=True)
            await asyncio.sleep(backoff.next())

    # -- health ------------------------------------------------------------------------

    def _up(self) -> bool:
        if not self._known or not self._shards:
            return False
        if not all(shard.sub_up and shard.pub_up for shard in self._shards.values()):
            return False
        for channel in (self._everyone, self._control):
            shard = self._owner(channel)
            if shard is None or channel not in shard.confirmed:
                return False
        return True

    def _health_changed(self, exc: BaseException | None) -> None:
        """Log each change between up and degraded once (not every failed attempt); tell the
        sink each time delivery between processes (re)starts."""
        shards = self._shards.values()
        if self._topology_tried and (
            not self._known or all(s.sub_tried and s.pub_tried for s in shards)
        ):
            self._settled.set()
        if self._up():
            if self._state != "up":
                level = logging.WARNING if self._state == "degraded" else logging.INFO
                log.log(
                    level,
                    "Redis Cluster broker %s: connected to %s (%d masters); delivery between "
                    "processes on",
                    self.node,
                    redacted(self.url),
                    len(self._shards),
                )
                self._state = "up"
                self._lost = False
                if self._sink is not None:
                    self._sink.connected()
            return
        if self._state == "degraded" or (exc is None and self._state == "starting"):
            return
        self._state = "degraded"
        down = [s.name() for s in shards if not (s.sub_up and s.pub_up)]
        log.warning(
            "Redis Cluster broker %s: %s %s (%s); degraded: this process serves its own "
            "clients (and reaches the other masters' channels), and reconnects in the "
            "background",
            self.node,
            redacted(self.url),
            f"master(s) {', '.join(down)} unreachable" if down else "resubscribing",
            f"{type(exc).__name__}: {exc}" if exc is not None else "subscriptions moving",
        )
