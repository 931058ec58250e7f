"""Housekeeping the server does by itself, in every process (each step is idempotent):

* typing indicators are deleted soon after they expire, so every subscriber sees typing stop
  through the change feed without anyone running ``rtm cleanup``; the next round is due when
  the next indicator expires (at most ``typing_interval`` later, at least
  :data:`MIN_TYPING_PAUSE`), so that steady typing is cleaned up a few rows at a time, not in
  one burst of every row that expired within the interval (a burst of deletes is a burst of
  frames to every staff inbox: benchmarks/README.md, "Typing p99");
* deliveries still ``sent`` past the delivery deadline become ``failed``.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from .periodic import DATABASE_ERRORS, every

log = logging.getLogger(__name__)

#: The shortest pause between two typing-expiry rounds (20 a second at most, per process).
MIN_TYPING_PAUSE = 0.05

#: Delete the expired indicators, and say in how many seconds the next one expires (NULL: none
#: left). One statement: the rows it counts (``> now()``) are not those the function deletes.
_EXPIRE_TYPING = """
SELECT public.cleanup_expired_typing_indicators() AS deleted,
       (SELECT extract(epoch FROM min(t.expires_at) - now())::float8
        FROM public.message_typing_indicators AS t WHERE t.expires_at > now()) AS next_in
"""

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
            asyncio.create_task(self._expire_typing_forever()),
            asyncio.create_task(
                every(self._delivery_interval, self.fail_overdue, "delivery deadline")
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _expire_typing_forever(self) -> None:
        while True:
            try:
                next_in = await self._pool.fetchval(_EXPIRE_TYPING, column=1)
            except DATABASE_ERRORS as exc:
                log.warning("typing expiry failed (%s); it runs again shortly", exc)
                next_in = None
            await asyncio.sleep(typing_pause(next_in, self._typing_interval))

    async def fail_overdue(self) -> int:
        reason = f"not delivered within {self._deadline:g} seconds"
        status = await self._pool.execute(_FAIL_OVERDUE, float(self._deadline), reason)
        return int(status.split()[-1])


def typing_pause(next_in: float | None, interval: float) -> float:
    """How long the typing expiry sleeps: until the next indicator expires, within
    [:data:`MIN_TYPING_PAUSE`, ``interval``]."""
    if next_in is None:
        return interval
    return min(interval, max(MIN_TYPING_PAUSE, next_in))
