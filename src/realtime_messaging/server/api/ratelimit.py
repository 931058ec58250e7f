"""Rate limits of the original design, as moving windows: at most N hits in any span of the
window's length, so a burst at a window edge cannot double a limit, and a client can keep its
own exact count (the SDK's helpers do).

Shared through Redis when ``RTM_REDIS_URL`` is set (the ``limits`` library's moving window, a
Lua script on the server, through redis-py's asyncio client), so that several processes enforce
one budget (with a Sentinel URL, on the server the sentinels name the master; with a Cluster
URL, on the cluster through limits' cluster storage). While Redis
cannot be reached each process counts on its own (logged once per change): a request is never
refused or failed because Redis is away. In one process the hits are kept here, per key, oldest
first: ``limits``' in-memory storage sweeps every key through a worker thread after each hit,
which was measured at a quarter of the server's CPU at 100 requests per second
(benchmarks/README.md, the SDK benchmark).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from ...exceptions import ConfigurationError
from .errors import ApiError

log = logging.getLogger(__name__)

#: How long a request may wait on Redis (connecting or answering) before it counts locally.
REDIS_TIMEOUT = 0.5
#: After Redis failed, how long requests count locally before Redis is tried again.
REDIS_RETRY_AFTER = 1.0

_KINDS = ("typing", "presence", "read_receipts", "requests")


@dataclass(frozen=True, slots=True)
class Limits:
    """Each limit in the ``limits`` notation ("10/minute")."""

    typing: str  # per participant per conversation
    presence: str  # per user or customer
    read_receipts: str  # per reader; a request counts once, a batch of up to 500 too
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
        self._pool: Any = None
        self._sentinel: Any = None
        self._cluster: Any = None
        #: While Redis is away: the monotonic time before which it is not tried again.
        self._shared_down_until: float | None = None
        if redis_url:
            # redis-py's asyncio client (the ``redis`` extra): coredis, limits' default, is not
            # a dependency. A pool of our own: short timeouts and no retries, so a request never
            # waits long on a Redis that is away, and closed with the server.
            try:
                from redis.asyncio import ConnectionPool
                from redis.asyncio.retry import Retry
                from redis.backoff import NoBackoff

                from ...broker.redis_urls import (
                    check_url,
                    is_cluster_url,
                    is_sentinel_url,
                    master_pool,
                    parse_sentinel_url,
                    sentinel_manager,
                )
            except ImportError as exc:
                raise ConfigurationError(
                    "RTM_REDIS_URL needs the redis package: pip install 'realtime-messaging[redis]'"
                ) from exc
            check_url(redis_url)
            bounds: dict[str, Any] = {
                "socket_timeout": REDIS_TIMEOUT,
                "socket_connect_timeout": REDIS_TIMEOUT,
                "retry": Retry(NoBackoff(), 0),
            }
            if is_cluster_url(redis_url):
                self._shared = MovingWindowRateLimiter(_cluster_storage(redis_url, bounds))
                self._cluster = self._shared.storage
            elif is_sentinel_url(redis_url):
                # The broker's Sentinel deployment, through a pool of the same kind: each new
                # connection asks the sentinels for the master; one on a demoted master fails
                # (READONLY, or closed by Sentinel) and the next asks again.
                parsed = parse_sentinel_url(redis_url)
                self._sentinel = sentinel_manager(parsed, REDIS_TIMEOUT)
                self._pool = master_pool(parsed, self._sentinel, **bounds)
            else:
                self._pool = ConnectionPool.from_url(redis_url, **bounds)
            if self._pool is not None:
                options: dict[str, Any] = {"connection_pool": self._pool}
                storage = RedisStorage(
                    # Given the pool, limits uses its URI only to pick its plain Redis storage
                    # (the URL itself would not do: limits takes unix:// for Valkey's).
                    "async+redis://",
                    implementation="redispy",
                    wrap_exceptions=True,
                    key_prefix="rtm:limits",
                    **options,
                )
                self._shared = MovingWindowRateLimiter(storage)
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

    async def check_read_receipts(self, reader: object) -> None:
        """Read-receipt requests: per reader; a batch (up to 500 messages) is one request."""
        await self.check("read_receipts", str(reader))

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
        shared = await self._shared_wait(item, kind, key, cost)
        if shared is not None:
            wait = shared
            if wait <= 0:
                return
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

    async def _shared_wait(
        self, item: RateLimitItem, kind: str, key: str, cost: int
    ) -> float | None:
        """Count the hits in Redis: 0 if they fit, else the seconds until they would; None when
        there is no Redis or it cannot be reached (then the caller counts in-process)."""
        shared = self._shared
        if shared is None:
            return None
        now = time.monotonic()
        if self._shared_down_until is not None and now < self._shared_down_until:
            return None
        try:
            if await shared.hit(item, kind, key, cost=cost):
                wait = 0.0
            else:
                stats = await shared.get_window_stats(item, kind, key)
                wait = max(0.001, stats.reset_time - time.time())
        except Exception as exc:  # StorageError (wrapped redis errors), timeouts, anything
            if self._shared_down_until is None:
                log.warning(
                    "rate limits: Redis unreachable (%s: %s); counting in this process "
                    "until it answers again",
                    type(exc).__name__,
                    exc,
                )
            self._shared_down_until = time.monotonic() + REDIS_RETRY_AFTER
            return None
        if self._shared_down_until is not None:
            log.warning("rate limits: Redis answers again; limits are shared again")
            self._shared_down_until = None
        return wait

    async def close(self) -> None:
        """Close the Redis connections, if any."""
        if self._pool is not None:
            await self._pool.disconnect()
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                await client.aclose()
        if self._cluster is not None:
            await self._cluster.bridge.storage.aclose()


def _cluster_storage(redis_url: str, bounds: dict[str, Any]) -> Any:
    """limits' Redis Cluster storage (redis-py's cluster client) for a ``redis+cluster://``
    URL: each key (one per limit and participant) lives on the master owning its slot."""
    from limits.aio.storage import RedisClusterStorage
    from redis.asyncio.connection import SSLConnection

    from ...broker.redis_urls import parse_cluster_url

    parsed = parse_cluster_url(redis_url)
    node = dict(parsed.node)
    connection_class = node.pop("connection_class", None)
    tls = isinstance(connection_class, type) and issubclass(connection_class, SSLConnection)
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in parsed.seeds)
    return RedisClusterStorage(
        f"async+redis+cluster://{hosts}",
        implementation="redispy",
        wrap_exceptions=True,
        key_prefix="rtm:limits",
        **{**bounds, **node, "ssl": tls},
    )
