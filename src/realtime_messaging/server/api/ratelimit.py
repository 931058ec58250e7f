"""Rate limits of the original design, as moving windows: at most N hits in any span of the
window's length, so a burst at a window edge cannot double a limit, and a client can keep its
own exact count (the SDK's helpers do).

Shared through Redis when ``RTM_REDIS_URL`` is set (the ``limits`` library's moving window, a
Lua script on the server), so that several processes enforce one budget. In one process the
hits are kept here, per key, oldest first: ``limits``' in-memory storage sweeps every key
through a worker thread after each hit, which was measured at a quarter of the server's CPU at
100 requests per second (benchmarks/README.md, the SDK benchmark).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from .errors import ApiError

_KINDS = ("typing", "presence", "read_receipts", "requests")


@dataclass(frozen=True, slots=True)
class Limits:
    """Each limit in the ``limits`` notation ("10/minute")."""

    typing: str  # per participant per conversation
    presence: str  # per user or customer
    read_receipts: str  # per reader; a batch counts each message
    requests: str  # per token, every API request


class MovingWindows:
    """The hit times of each key within its window; idle keys are forgotten as time passes."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._windows: dict[str, float] = {}
        self._next_prune = 0.0

    def hit(self, kind: str, key: str, limit: int, window: float, cost: int, now: float) -> float:
        """Record ``cost`` hits and return 0, or return the seconds until they would fit."""
        if cost > limit:
            return math.inf
        self._windows[kind] = window
        hits = self._hits.setdefault((kind, key), deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        over = len(hits) + cost - limit
        if over > 0:
            # When the over-th oldest hit leaves the window, there is room for these.
            return hits[over - 1] + window - now
        hits.extend([now] * cost)
        if now >= self._next_prune:
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        """Drop keys with no hit left in their window (amortised: at most once a second)."""
        self._next_prune = now + 1.0
        stale = [k for k, hits in self._hits.items() if hits[-1] <= now - self._windows[k[0]]]
        for k in stale:
            del self._hits[k]


class RateLimiter:
    def __init__(self, limits: Limits, redis_url: str | None = None) -> None:
        self._shared: MovingWindowRateLimiter | None = None
        if redis_url:
            url = redis_url if redis_url.startswith("async+") else "async+" + redis_url
            self._shared = MovingWindowRateLimiter(RedisStorage(url))
        self._local = MovingWindows()
        self._items: dict[str, RateLimitItem] = {
            name: parse(getattr(limits, name)) for name in _KINDS
        }

    # One key per action and participant, whichever door the action comes through (the API,
    # RPC, the socket): the budgets below are the only spellings of these keys.

    async def check_requests(self, token: str) -> None:
        """Requests: per token, on every HTTP door (the API, RPC, REST broadcast)."""
        await self.check("requests", hashlib.sha256(token.encode()).hexdigest())

    async def check_typing(self, participant: object, conversation: object) -> None:
        """Typing: per participant per conversation."""
        await self.check("typing", f"{participant}:{conversation}")

    async def check_presence(self, participant: object) -> None:
        """Presence changes: per staff user or customer."""
        await self.check("presence", str(participant))

    async def check_read_receipts(self, reader: object, cost: int = 1) -> None:
        """Read receipts: per reader; a batch counts each message."""
        await self.check("read_receipts", str(reader), cost)

    async def check(self, kind: str, key: str, cost: int = 1) -> None:
        """Count ``cost`` hits; raise a 429 :class:`ApiError` with ``Retry-After`` when over."""
        item = self._items[kind]
        name = kind.replace("_", " ")
        per = item.GRANULARITY.name
        if cost > item.amount:
            raise ApiError(
                429,
                "rate_limited",
                f"{name}: {cost} at once is over the limit of {item.amount} per {per}",
                headers={"Retry-After": str(item.get_expiry())},
            )
        if self._shared is not None:
            if await self._shared.hit(item, kind, key, cost=cost):
                return
            stats = await self._shared.get_window_stats(item, kind, key)
            wait = stats.reset_time - time.time()
        else:
            wait = self._local.hit(
                kind, key, item.amount, float(item.get_expiry()), cost, time.monotonic()
            )
            if wait <= 0:
                return
        retry = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"{name} limit of {item.amount} per {per} reached; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )
