"""Fan-out between server processes: what a process publishes reaches every process's hub.

The in-process broker is the default; a Redis one (for several processes) implements the same
:class:`Broker` protocol.
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


class Sink(Protocol):
    def deliver(self, envelope: Envelope) -> None: ...


class Broker(Protocol):
    """Publishes envelopes to the sink of every process, this one included."""

    def publish(self, envelope: Envelope) -> None: ...

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
