"""Look-ups asked for while the previous batch of them is on its way, answered by one query."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: How long a batch on its way holds the next one back at most: a query stuck on a dead
#: connection must not stop every look-up of the process.
MAX_HOLD = 0.5
#: Batches on their way at once, per kind of look-up.
IN_FLIGHT = 2


class Coalesced(Generic[K, V]):
    """Lookups answered in batches, one query each, at most :data:`IN_FLIGHT` batches on
    their way at a time.

    A thousand clients rejoining after a restart would otherwise cost a thousand round trips
    each for their tokens and conversations, queued on a pool of ten connections. A batch
    takes what was asked for in the same turn of the event loop and, while the batches are on
    their way, the next one gathers everything asked for meanwhile: under a storm the batches
    grow with the round trip instead of holding the few frames of one turn (each query costs
    the loop far more than a key in it), and an idle server still asks at once. Two may be on
    their way, so that one slow batch (a fresh pool connection, a long turn of a busy loop)
    does not hold every later look-up back: in a reconnect storm a first replay of one channel
    took 87 ms while 664 others waited behind it (issue 16, the reconnect row). A batch slower
    than :data:`MAX_HOLD` stops counting.
    """

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]]) -> None:
        self._fetch = fetch
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._scheduled = False
        #: The batches on their way that count against IN_FLIGHT.
        self._holding: set[int] = set()
        #: Batches sent, and keys in them (for tests and profiling).
        self.batches = 0
        self.keys = 0

    async def get(self, key: K) -> V | None:
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._waiting and not self._scheduled and len(self._holding) < IN_FLIGHT:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        if len(self._holding) >= IN_FLIGHT or not self._waiting:
            return
        waiting, self._waiting = self._waiting, {}
        self.batches += 1
        self.keys += len(waiting)
        batch = self.batches
        self._holding.add(batch)
        overdue = asyncio.get_running_loop().call_later(MAX_HOLD, self._release, batch)
        task = asyncio.ensure_future(self._fetch(list(waiting)))
        task.add_done_callback(lambda done: self._answer(done, waiting, batch, overdue))

    def _release(self, batch: int) -> None:
        if batch in self._holding:
            self._holding.discard(batch)
            self._schedule()  # what was asked for meanwhile

    def _answer(
        self,
        done: asyncio.Future[dict[K, V]],
        waiting: dict[K, list[asyncio.Future[V | None]]],
        batch: int,
        overdue: asyncio.TimerHandle,
    ) -> None:
        overdue.cancel()
        self._release(batch)
        error = done.exception() if not done.cancelled() else asyncio.CancelledError()
        found = done.result() if error is None else {}
        for key, futures in waiting.items():
            for future in futures:
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(found.get(key))
