"""Housekeeping the server does by itself, in every process (each step is idempotent):

* typing indicators are deleted soon after they expire, so every subscriber sees typing stop
  through the change feed without anyone running ``rtm cleanup``;
* deliveries still ``sent`` past the delivery deadline become ``failed``.
"""

from __future__ import annotations

import asyncio

import asyncpg

from .periodic import every

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
            asyncio.create_task(every(self._typing_interval, self.expire_typing, "typing expiry")),
            asyncio.create_task(
                every(self._delivery_interval, self.fail_overdue, "delivery deadline")
            ),
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
