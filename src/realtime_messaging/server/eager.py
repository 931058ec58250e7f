"""Run a coroutine at once, up to its first real wait, instead of in a new task.

Most upgrades (a cached API key) and most joins (one process, a public topic) never wait for
anything, yet a task for each cost a task object, a turn of the loop and, for the upgrade, a
pause and resume of reading (benchmarks/README.md, "Connect path, second pass"). Python 3.12's eager tasks
do this; 3.11 does not have them.

Until its first wait such a coroutine runs in no task, so the code on that stretch must not
need ``asyncio.current_task()``. ``asyncio.timeout`` does (and ``asyncio.wait_for`` from 3.12
on), and so do libraries that use it before their first wait: asyncpg's pool when it opens a
connection, redis-py's commands. Hence only the upgrade and the join run this way; they bound
their own waits with ``asyncio.wait``, and reach the database through batches
(:class:`~.batching.Coalesced`) or :func:`in_task`, which run in tasks of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class Started:
    """A coroutine stopped at its first wait: await it (once) to go on, or close it."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        """``yield from`` for a coroutine already started: what it waits on goes to whoever
        awaits this (a task), and what comes back (a value, or an exception such as a
        cancellation) goes to the coroutine."""
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task: a cancellation, usually
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = coro.send(sent)
                except StopIteration:
                    return

    def close(self) -> None:
        """Abandon the coroutine where it waits (its ``finally`` blocks run)."""
        self._coro.close()


def step(coro: Coroutine[Any, Any, None]) -> Started | None:
    """Run ``coro`` until it first waits: ``None`` if it finished on the way, else where it
    stopped. An exception it raises before its first wait propagates here."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return Started(coro, waiting_on)


async def in_task(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` run in a task of its own: for work that may need
    ``asyncio.current_task()`` (module docstring) on a stretch that may run without one."""
    return await asyncio.create_task(coro)
