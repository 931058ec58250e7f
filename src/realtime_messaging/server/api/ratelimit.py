"""Rate limits of the original design, on the ``limits`` library.

In memory for one process; shared through Redis when ``RTM_REDIS_URL`` is set, so that several
processes enforce one budget. Sliding-window counters: a burst at a window edge cannot double a
limit (the previous window still counts, weighted), and each key is two counters. (The moving
window strategy keeps every hit and, in memory, sweeps every key through a thread after each
hit: measured at a quarter of the server's CPU at 100 requests per second, benchmarks/README.md.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from .framework import ApiError


@dataclass(frozen=True, slots=True)
class Limits:
    """Each limit in the ``limits`` notation ("10/minute")."""

    typing: str  # per participant per conversation
    presence: str  # per user or customer
    read_receipts: str  # per reader; a batch counts each message
    requests: str  # per token, every API request


class RateLimiter:
    def __init__(self, limits: Limits, redis_url: str | None = None) -> None:
        storage: Storage
        if redis_url:
            storage = RedisStorage(
                "async+" + redis_url if not redis_url.startswith("async+") else redis_url
            )
        else:
            storage = MemoryStorage()
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._items: dict[str, RateLimitItem] = {
            name: parse(getattr(limits, name))
            for name in ("typing", "presence", "read_receipts", "requests")
        }

    async def check(self, kind: str, key: str, cost: int = 1) -> None:
        """Count ``cost`` hits; raise a 429 :class:`ApiError` with ``Retry-After`` when over."""
        item = self._items[kind]
        if cost > item.amount:
            raise ApiError(
                429,
                "rate_limited",
                f"{kind.replace('_', ' ')}: {cost} at once is over the limit of {item.amount} per {item.GRANULARITY.name}",
                headers={"Retry-After": str(item.get_expiry())},
            )
        if await self._limiter.hit(item, kind, key, cost=cost):
            return
        stats = await self._limiter.get_window_stats(item, kind, key)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise ApiError(
            429,
            "rate_limited",
            f"{kind.replace('_', ' ')} limit of {item.amount} per {item.GRANULARITY.name} reached; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )
