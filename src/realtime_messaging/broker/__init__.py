"""Fan-out between server processes: what a process publishes reaches every process's hub.

The in-process broker is the default for one process. Several processes use one of the others,
each implementing the same :class:`Broker` protocol: :class:`~.redis.RedisBroker` (one Redis
server or Sentinel), :class:`~.redis_cluster.RedisClusterBroker` (Redis Cluster, sharded pub/sub)
and :class:`~.postgres.PostgresBroker` (through the database, no Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class Envelope:
    """One event for every subscriber of ``topic``, in every process; never changed once
    made (not frozen only because a frozen dataclass costs four times as much to build, and
    one is built per message on the hot path).

    ``exclude`` names the subscription that sent a broadcast without ``self``, so that it alone
    is skipped. ``binary`` carries the raw payload of a binary (kind 3) user broadcast, and
    ``json_encoded`` says whether those bytes are JSON. ``origin`` is the node id of the process
    that published it, set by a broker on receipt from another process (``None``: published
    here): cross-process presence attributes remote metas to their process by it.
    ``private`` set: a broadcast from a private channel reaches only the topic's private
    channels, one from a public channel only its public ones, as on Supabase (a private
    channel's traffic never leaks to a public joiner); ``None`` (presence, the server's own
    events): every member.
    """

    topic: str
    event: str
    payload: Any
    exclude: str | None = None
    user_event: str | None = None
    binary: bytes | None = None
    json_encoded: bool = True
    meta: Any = None
    origin: str | None = None
    private: bool | None = None


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """What ``/readyz`` and the metrics say about the broker.

    ``up`` is false while other processes cannot be reached: this process still delivers what
    it publishes to its own subscribers. The counts are envelopes sent to and received from other
    processes, and those that could not be sent (broker down, or its queue full); ``malformed``
    counts what came from the broker and could not be decoded (skipped).
    """

    name: str
    up: bool
    published: int = 0
    received: int = 0
    dropped: int = 0
    malformed: int = 0


class Sink(Protocol):
    """Where a broker hands what reaches this process.

    ``deliver`` gets topic traffic (this process's own publications too); ``control`` gets
    what another process sent with :meth:`Broker.send` (``origin`` set); ``connected`` is
    called each time delivery between processes (re)starts, after which anything published
    while it was down may have been missed, so state kept from other processes is resynced.
    """

    def deliver(self, envelope: Envelope) -> None: ...

    def control(self, envelope: Envelope) -> None: ...

    def connected(self) -> None: ...


class Broker(Protocol):
    """Publishes envelopes to the sink of every process, this one included.

    ``publish`` never blocks: it delivers to this process's sink at once and hands the envelope
    on for the others. The hub reports the topics this process has members of
    (``topic_added``/``topic_removed``), so that a process receives only those topics' traffic;
    a join awaits ``ready(topic)``, after which publications from every process reach it.

    ``send`` carries a control envelope (presence replication, heartbeats) to the sink's
    ``control`` of every other process (``node`` None) or of the process with that node id;
    never to this one. It keeps the order of ``publish`` and ``send`` calls from one process:
    a receiver sees them in the order they were made. ``node`` is this process's id.
    """

    node: str

    def publish(self, envelope: Envelope) -> None: ...

    def send(self, envelope: Envelope, node: str | None = None) -> None: ...

    def topic_added(self, topic: str) -> None: ...

    def topic_removed(self, topic: str) -> None: ...

    async def ready(self, topic: str) -> None: ...

    def status(self) -> BrokerStatus: ...

    async def start(self, sink: Sink) -> None: ...

    async def stop(self) -> None: ...


class LocalBroker:
    """One process: publishing is delivering; there is no other process to send to."""

    def __init__(self, node: str = "local") -> None:
        self.node = node
        self._sink: Sink | None = None

    async def start(self, sink: Sink) -> None:
        self._sink = sink

    async def stop(self) -> None:
        self._sink = None

    def publish(self, envelope: Envelope) -> None:
        if self._sink is not None:
            self._sink.deliver(envelope)

    def send(self, envelope: Envelope, node: str | None = None) -> None:
        pass

    def topic_added(self, topic: str) -> None:
        pass

    def topic_removed(self, topic: str) -> None:
        pass

    async def ready(self, topic: str) -> None:
        pass

    def status(self) -> BrokerStatus:
        return BrokerStatus("local", up=True)
