"""Joins waiting for their topic's subscription to be confirmed (``Broker.ready``).

The Redis brokers subscribe a topic when a join asks for it and answer the join once Redis has
confirmed the subscription (or after a bound): until then a publication from another process
could be missed. This keeps the joins waiting, by topic (a topic stays wanted while one waits)
and by the key the confirmation arrives under (the topic, or its channel on a cluster).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K")


class Joins(Generic[K]):
    """The joins waiting for a confirmation, and how many wait on each topic."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._futures: dict[K, list[asyncio.Future[None]]] = {}

    def __contains__(self, topic: str) -> bool:
        """Whether a join waits on ``topic``."""
        return topic in self._counts

    def topics(self) -> set[str]:
        return set(self._counts)

    def keys(self) -> list[K]:
        return list(self._futures)

    async def wait(
        self,
        topic: str,
        key: K,
        timeout: float,
        want: Callable[[str], None],
        unwant: Callable[[str], None],
    ) -> bool:
        """Wait (at most ``timeout``) for ``key``'s confirmation: ``want`` is called once this
        join counts for the topic, ``unwant`` once it no longer does. True if confirmed (or
        released) in time."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(key, []).append(future)
        self._counts[topic] = self._counts.get(topic, 0) + 1
        want(topic)
        try:
            # asyncio.wait, not asyncio.timeout: a join runs this before it has a task
            # (server/eager.py).
            done, _ = await asyncio.wait([future], timeout=timeout)
            return bool(done)
        finally:
            left = self._counts[topic] - 1
            if left:
                self._counts[topic] = left
            else:
                del self._counts[topic]
            waiting = self._futures.get(key)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._futures[key]
            unwant(topic)

    def confirm(self, key: K) -> None:
        """Redis confirmed ``key``'s subscription: its joins go on."""
        for future in self._futures.pop(key, ()):
            if not future.done():
                future.set_result(None)

    def release(self, keys: Iterable[K] | None = None) -> None:
        """Let the joins waiting on ``keys`` (all: None) go on unconfirmed: their connection
        was lost or the broker stops, and a join must not wait for what cannot come."""
        for key in list(self._futures) if keys is None else list(keys):
            self.confirm(key)
