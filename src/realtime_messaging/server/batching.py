"""Look-ups asked for in the same turn of the event loop, answered by one query."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Coalesced(Generic[K, V]):
    """Lookups asked for in the same turn of the event loop answered by one query.

    A thousand clients rejoining after a restart would otherwise cost a thousand round trips
    each for their tokens and conversations, queued on a pool of ten connections.
    """

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]]) -> None:
        self._fetch = fetch
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}

    async def get(self, key: K) -> V | None:
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._run)
        self._waiting.setdefault(key, []).append(future)
        return await future

    def _run(self) -> None:
        waiting, self._waiting = self._waiting, {}
        task = asyncio.ensure_future(self._fetch(list(waiting)))
        task.add_done_callback(lambda done: self._answer(done, waiting))

    @staticmethod
    def _answer(
        done: asyncio.Future[dict[K, V]], waiting: dict[K, list[asyncio.Future[V | None]]]
    ) -> None:
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
