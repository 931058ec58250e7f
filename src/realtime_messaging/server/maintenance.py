"""Housekeeping the server does by itself, in every process (each step is idempotent):

* typing indicators are deleted soon after they expire, so every subscriber sees typing stop
  through the change feed without anyone running ``rtm cleanup``;
* deliveries still ``sent`` past the delivery deadline become ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger(__name__)

_FAIL_OVERDUE = """
UPDATE public.message_delivery_status
SET status = 'failed', failed_reason = $2
WHERE status = 'sent' AND updated_at < now() - make_interval(secs => $1)
"""


class Maintenance:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        typing_interval: float = 0.5,
        delivery_deadline: float = 24 * 3600.0,
        delivery_interval: float = 30.0,
    ) -> None:
        self._pool = pool
        self._typing_interval = typing_interval
        self._deadline = delivery_deadline
        self._delivery_interval = delivery_interval
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self._typing_interval, self.expire_typing)),
            asyncio.create_task(self._every(self._delivery_interval, self.fail_overdue)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def expire_typing(self) -> int:
        deleted: int = await self._pool.fetchval(
            "SELECT public.cleanup_expired_typing_indicators()"
        )
        return deleted

    async def fail_overdue(self) -> int:
        reason = f"not delivered within {self._deadline:g} seconds"
        status = await self._pool.execute(_FAIL_OVERDUE, float(self._deadline), reason)
        return int(status.split()[-1])

    @staticmethod
    async def _every(interval: float, step: Callable[[], Awaitable[int]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("maintenance step failed (%s); it runs again shortly", exc)
