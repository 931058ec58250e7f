"""Fan-out between server processes: what a process publishes reaches every process's hub.

The in-process broker is the default; :class:`~realtime_messaging.broker.redis.RedisBroker`
(for several processes, ``RTM_REDIS_URL``) implements the same :class:`Broker` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event for every subscriber of ``topic``, in every process.

    ``exclude`` names the subscription that sent a broadcast without ``self``, so that it alone
    is skipped. ``binary`` carries the raw payload of a binary (kind 3) user broadcast, and
    ``json_encoded`` says whether those bytes are JSON.
    """

    topic: str
    event: str
    payload: Any
    exclude: str | None = None
    user_event: str | None = None
    binary: bytes | None = None
    json_encoded: bool = True
    meta: Any = None


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """What ``/readyz`` and the metrics say about the broker.

    ``up`` is false while other processes cannot be reached: this process still delivers what
    it publishes to its own subscribers. The counts are envelopes sent to and received from other
    processes, and those that could not be sent (broker down, or its queue full).
    """

    name: str
    up: bool
    published: int = 0
    received: int = 0
    dropped: int = 0


class Sink(Protocol):
    def deliver(self, envelope: Envelope) -> None: ...


class Broker(Protocol):
    """Publishes envelopes to the sink of every process, this one included.

    ``publish`` never blocks: it delivers to this process's sink at once and hands the envelope
    on for the others. The hub reports the topics this process has members of
    (``topic_added``/``topic_removed``), so that a process receives only those topics' traffic;
    a join awaits ``ready(topic)``, after which publications from every process reach it.
    """

    def publish(self, envelope: Envelope) -> None: ...

    def topic_added(self, topic: str) -> None: ...

    def topic_removed(self, topic: str) -> None: ...

    async def ready(self, topic: str) -> None: ...

    def status(self) -> BrokerStatus: ...

    async def start(self, sink: Sink) -> None: ...

    async def stop(self) -> None: ...


class LocalBroker:
    """One process: publishing is delivering."""

    def __init__(self) -> None:
        self._sink: Sink | None = None

    async def start(self, sink: Sink) -> None:
        self._sink = sink

    async def stop(self) -> None:
        self._sink = None

    def publish(self, envelope: Envelope) -> None:
        if self._sink is not None:
            self._sink.deliver(envelope)

    def topic_added(self, topic: str) -> None:
        pass

    def topic_removed(self, topic: str) -> None:
        pass

    async def ready(self, topic: str) -> None:
        pass

    def status(self) -> BrokerStatus:
        return BrokerStatus("local", up=True)
