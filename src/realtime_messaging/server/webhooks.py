"""The webhook worker: posts the events of the outbox (migration 0016) to their subscribers.

Events are written by triggers in the transaction of the change that caused them; this worker
only reads the committed outbox. Each round claims due rows with ``FOR UPDATE SKIP LOCKED`` and
holds them, in one transaction, while it posts them and records the outcome, so several server
processes share the outbox without sending an event twice in the normal case, and a process
that dies mid-round leaves its rows to the others (sent again: at least once). A row waits while
an earlier row of the same subscription and conversation is pending, which keeps the order per
conversation. A paused subscription's events wait in the outbox, parked outside the claim
(``next_attempt_at`` = infinity), until it is resumed (:func:`resume`). docs/webhooks.md
describes what receivers see.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import aiohttp
import asyncpg
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from .. import __version__
from ..config import WebhookSettings
from .periodic import DATABASE_ERRORS

log = logging.getLogger(__name__)

EVENTS = (
    "message.created",
    "message.updated",
    "message.deleted",
    "delivery.failed",
    "conversation.assigned",
    "conversation.closed",
)
#: The wake-up the outbox triggers send at commit.
CHANNEL = "rtm_webhooks"
SIGNATURE_HEADER = "X-Rtm-Signature"
TIMESTAMP_HEADER = "X-Rtm-Timestamp"
EVENT_HEADER = "X-Rtm-Event"
EVENT_ID_HEADER = "X-Rtm-Event-Id"
#: Conversations (per subscription) claimed per round, posted concurrently.
BATCH = 32
#: Events of one conversation posted one after the other in a round, behind its first.
CHAIN = 32
#: Bytes of a receiver's answer read at most, for the attempt's error text.
MAX_RESPONSE_BYTES = 4096
#: Characters of an error kept per attempt.
MAX_ERROR_CHARS = 500
#: Delivered and dead rows (and their attempts) are kept this long, then pruned.
RETENTION_SECONDS = 7 * 24 * 3600.0
#: How often the pending count and endpoint health for /metrics are read, and rows pruned.
STATS_INTERVAL = 5.0
PRUNE_INTERVAL = 60.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 of ``timestamp + "." + body`` under the
    subscription's secret, hex, with the scheme's version in front."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def retry_delay(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Seconds before the attempt after the ``attempt``-th failure: doubling from ``base``, at
    most ``cap``, with equal jitter (half fixed, half random) so that retries of many events to
    one endpoint spread out."""
    delay = min(cap, base * 2.0 ** min(attempt - 1, 60))
    return delay / 2 + delay / 2 * rand()


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """Whether a webhook may be posted to this IP address: public unicast ones only, unless
    private targets are allowed (loopback, private ranges, link-local; never multicast or the
    unspecified address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_multicast or ip.is_unspecified:
        return False
    return allow_private or ip.is_global


def check_url(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` cannot be a webhook target (None: it can, as far as the URL says; names are
    checked again when they resolve, at every delivery)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "only http and https URLs are allowed"
    host = parts.hostname
    if not host:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL are not allowed (sign with the secret instead)"
    if port == 0:
        return "port 0 is not a valid target"
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if not allow_private and (host == "localhost" or host.endswith(".localhost")):
            return "loopback targets are not allowed (RTM_WEBHOOK_ALLOW_PRIVATE)"
        return None
    if not address_allowed(host, allow_private=allow_private):
        return (
            "private, loopback and link-local targets are not allowed (RTM_WEBHOOK_ALLOW_PRIVATE)"
        )
    return None


class GuardedResolver(AbstractResolver):
    """Resolves names and drops the addresses webhooks may not reach, at connection time: a
    name checked when the webhook was registered cannot later point inside (DNS rebinding)."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [
            r for r in found if address_allowed(r["host"], allow_private=self._allow_private)
        ]
        if not allowed:
            raise OSError(f"{host} resolves only to addresses webhooks may not reach")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class Stats:
    """What /metrics shows of the webhooks (server/metrics.py)."""

    pending: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    #: Consecutive failures per subscription id (every registered one: their number is bounded).
    failing: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result."""

    status: int | None
    error: str | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.error is None


_CLAIM = """
SELECT o.id, o.event_id, o.event_type, o.payload, o.attempts, o.created_at, o.window_from,
       o.webhook_id, o.conversation_id, w.url, w.secret
FROM rtm.webhook_outbox AS o
JOIN rtm.webhooks AS w ON w.id = o.webhook_id
WHERE o.delivered_at IS NULL AND o.dead_at IS NULL AND o.next_attempt_at <= clock_timestamp()
  AND w.active
  AND NOT EXISTS (
      SELECT 1 FROM rtm.webhook_outbox AS e
      WHERE e.webhook_id = o.webhook_id AND e.conversation_id = o.conversation_id
        AND e.id < o.id AND e.delivered_at IS NULL AND e.dead_at IS NULL)
ORDER BY o.next_attempt_at, o.id
LIMIT $1
FOR UPDATE OF o SKIP LOCKED
"""

# The pending events behind a claimed one, in order. No SKIP LOCKED: no other worker can hold
# them, since claiming any of them needs the first one, which this worker holds.
_FOLLOWERS = """
SELECT o.id, o.event_id, o.event_type, o.payload, o.attempts, o.created_at, o.window_from,
       o.webhook_id, o.conversation_id, o.next_attempt_at <= clock_timestamp() AS due, w.url,
       w.secret
FROM rtm.webhook_outbox AS o
JOIN rtm.webhooks AS w ON w.id = o.webhook_id
WHERE o.webhook_id = $1 AND o.conversation_id = $2 AND o.id > $3
  AND o.delivered_at IS NULL AND o.dead_at IS NULL
ORDER BY o.id
LIMIT $4
FOR UPDATE OF o
"""

_NEXT_DUE = """
SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp())::float8
FROM rtm.webhook_outbox
WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at > clock_timestamp()
  AND next_attempt_at < 'infinity'
"""

# A subscription's pending events, pause or resume: parked, or due now with a fresh retry
# window. Rows a worker holds (posting them as the pause commits) are left to it: the claim
# reads active subscriptions only, and the resume or the sweep below catches them.
_PARK = """
UPDATE rtm.webhook_outbox SET next_attempt_at = 'infinity'
WHERE id IN (SELECT id FROM rtm.webhook_outbox
             WHERE webhook_id = $1 AND delivered_at IS NULL AND dead_at IS NULL
               AND next_attempt_at < 'infinity'
             FOR UPDATE SKIP LOCKED)
"""
_UNPARK = """
UPDATE rtm.webhook_outbox SET next_attempt_at = clock_timestamp(), window_from = clock_timestamp()
WHERE id IN (SELECT id FROM rtm.webhook_outbox
             WHERE webhook_id = $1 AND delivered_at IS NULL AND dead_at IS NULL
             FOR UPDATE SKIP LOCKED)
"""
# Events parked for subscriptions that are active: written by a transaction that read the
# subscription as paused just before its resume committed (the parked index finds them).
_SWEEP_PARKED = """
UPDATE rtm.webhook_outbox SET next_attempt_at = clock_timestamp(), window_from = clock_timestamp()
WHERE webhook_id = ANY ($1::uuid[]) AND next_attempt_at = 'infinity'
  AND delivered_at IS NULL AND dead_at IS NULL
"""


async def pause(conn: asyncpg.Connection, webhook_id: UUID) -> None:
    """Park the subscription's pending events (in the caller's transaction, after the
    subscription was marked inactive)."""
    await conn.execute(_PARK, webhook_id)


async def resume(conn: asyncpg.Connection, webhook_id: UUID) -> None:
    """Make the subscription's pending events due now, in their order, each with a whole
    retry window from now (in the caller's transaction, after it was marked active)."""
    await conn.execute(_UNPARK, webhook_id)
    await conn.execute("SELECT pg_notify($1, '')", CHANNEL)


class WebhookWorker:
    """Delivers the outbox; one per server process, any number per database."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        settings: WebhookSettings,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._pool = pool
        self._url = database_url
        self._settings = settings
        self._rand = rand
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stats_at = 0.0
        self._pruned_at = 0.0
        self.stats = Stats()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(allow_private=self._settings.allow_private), limit=BATCH
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout),
            headers={"User-Agent": f"realtime-messaging-webhooks/{__version__}"},
        )
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="webhook-worker")

    async def stop(self) -> None:
        """Finish the round in flight (its posts are bounded by the timeout), then stop."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, self._settings.timeout + 5)
            except TimeoutError:
                pass  # cancelled by wait_for: the round's rows are released, sent again later
        if self._listener is not None:
            await self._listener.close(timeout=2)
            self._listener = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            delay = self._settings.poll_interval
            try:
                await self._listen()
                await self._housekeeping()
                if await self.run_once():
                    continue
                due = await self._pool.fetchval(_NEXT_DUE)
                if due is not None:
                    delay = max(0.0, min(delay, due))
            except DATABASE_ERRORS as exc:
                log.warning("webhook round failed (%s); trying again shortly", exc)
            except Exception:
                log.exception("webhook round failed")
            if self._stopping:
                break
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _listen(self) -> None:
        """A connection that hears the triggers' wake-up; without one, polling still works."""
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = None
        conn = await asyncpg.connect(self._url, timeout=5)
        await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
        self._listener = conn

    async def run_once(self) -> int:
        """One round: claim the first pending event of up to :data:`BATCH` conversations and
        the due ones behind each, post each conversation's in order (concurrently across
        conversations), record each attempt; the number of events posted."""
        assert self._session is not None, "start() first"
        async with self._pool.acquire() as conn, conn.transaction():
            heads = await conn.fetch(_CLAIM, BATCH)
            if not heads:
                return 0
            chains: list[list[asyncpg.Record]] = []
            for head in heads:
                chain = [head]
                for row in await conn.fetch(
                    _FOLLOWERS, head["webhook_id"], head["conversation_id"], head["id"], CHAIN - 1
                ):
                    if not row["due"]:
                        break
                    chain.append(row)
                chains.append(chain)
            deadline = time.monotonic() + self._settings.timeout
            posted = await asyncio.gather(*(self._post_chain(c, deadline) for c in chains))
            rows = [row for done in posted for row, _ in done]
            outcomes = [outcome for done in posted for _, outcome in done]
            await self._record(conn, rows, outcomes)
        return len(rows)

    async def _post_chain(
        self, chain: list[asyncpg.Record], deadline: float
    ) -> list[tuple[asyncpg.Record, Outcome]]:
        """Post a conversation's events in order; stop at the first failure (the rest wait for
        its retry) or, after the first, once the round has run for the timeout (the rows stay
        locked until the round ends)."""
        done: list[tuple[asyncpg.Record, Outcome]] = []
        for row in chain:
            if done and time.monotonic() > deadline:
                break
            outcome = await self._post(row)
            done.append((row, outcome))
            if not outcome.ok:
                break
        return done

    async def _post(self, row: asyncpg.Record) -> Outcome:
        assert self._session is not None
        payload = row["payload"]
        body = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
        url: str = row["url"]
        started = time.perf_counter()
        refused = check_url(url, allow_private=self._settings.allow_private)
        if refused is not None:
            return Outcome(None, f"refused: {refused}", 0.0)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: row["event_type"],
            EVENT_ID_HEADER: str(row["event_id"]),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(row["secret"], timestamp, body),
        }
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                answer = await response.content.read(MAX_RESPONSE_BYTES)
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            return Outcome(None, _clip(f"{kind}: {exc}"), _ms(started))
        if 200 <= status < 300:
            return Outcome(status, None, _ms(started))
        text = answer.decode("utf-8", errors="replace")
        return Outcome(status, _clip(f"HTTP {status}: {text}"), _ms(started))

    async def _record(
        self, conn: asyncpg.Connection, rows: list[asyncpg.Record], outcomes: list[Outcome]
    ) -> None:
        settings = self._settings
        now = time.time()
        attempts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        health: dict[UUID, Outcome] = {}
        for row, outcome in zip(rows, outcomes, strict=True):
            attempt = row["attempts"] + 1
            attempts.append(
                (
                    row["id"],
                    row["webhook_id"],
                    row["event_id"],
                    row["event_type"],
                    attempt,
                    outcome.status,
                    outcome.error,
                    outcome.duration_ms,
                )
            )
            if outcome.ok:
                updates.append((row["id"], attempt, True, False, 0.0, None))
                self.stats.delivered += 1
            else:
                delay = retry_delay(attempt, settings.retry_base, settings.retry_max, self._rand)
                window_from = row["window_from"] or row["created_at"]
                dead = now + delay > window_from.timestamp() + settings.retry_window
                updates.append((row["id"], attempt, False, dead, delay, outcome.error))
                self.stats.failed += 1
                self.stats.dead += int(dead)
                if dead:
                    log.warning(
                        "webhook event %s to %s given up after %d attempts: %s",
                        row["event_id"],
                        row["webhook_id"],
                        attempt,
                        outcome.error,
                    )
            # The latest outcome per endpoint decides its health.
            health[row["webhook_id"]] = outcome
        await conn.executemany(
            "INSERT INTO rtm.webhook_attempts (outbox_id, webhook_id, event_id, event_type, "
            "attempt, status_code, error, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            attempts,
        )
        await conn.executemany(
            "UPDATE rtm.webhook_outbox SET attempts = $2, last_error = $6, "
            "delivered_at = CASE WHEN $3 THEN clock_timestamp() END, "
            "dead_at = CASE WHEN $4 THEN clock_timestamp() END, "
            "next_attempt_at = clock_timestamp() + make_interval(secs => $5) WHERE id = $1",
            updates,
        )
        # In id order: two workers updating the same endpoints never wait on each other in a
        # cycle.
        for webhook_id in sorted(health):
            outcome = health[webhook_id]
            # Seen at once in /metrics; the next refresh reads what every process recorded.
            failing = self.stats.failing
            key = str(webhook_id)
            failing[key] = 0 if outcome.ok else failing.get(key, 0) + 1
            if outcome.ok:
                await conn.execute(
                    "UPDATE rtm.webhooks SET consecutive_failures = 0, "
                    "last_success_at = clock_timestamp() WHERE id = $1",
                    webhook_id,
                )
            else:
                await conn.execute(
                    "UPDATE rtm.webhooks SET consecutive_failures = consecutive_failures + 1, "
                    "last_error = $2, last_failure_at = clock_timestamp() WHERE id = $1",
                    webhook_id,
                    outcome.error,
                )

    async def _housekeeping(self) -> None:
        """Refresh what /metrics shows and release events parked for active subscriptions (a
        writer that raced a resume); prune old delivered and dead rows."""
        now = time.monotonic()
        if now - self._stats_at >= STATS_INTERVAL:
            self._stats_at = now
            self.stats.pending = await self._pool.fetchval(
                "SELECT count(*) FROM rtm.webhook_outbox "
                "WHERE delivered_at IS NULL AND dead_at IS NULL"
            )
            rows = await self._pool.fetch(
                "SELECT id, consecutive_failures, active FROM rtm.webhooks"
            )
            self.stats.failing = {str(r["id"]): r["consecutive_failures"] for r in rows}
            active = [r["id"] for r in rows if r["active"]]
            if active and await self._pool.execute(_SWEEP_PARKED, active) != "UPDATE 0":
                self._wake.set()
        if now - self._pruned_at >= PRUNE_INTERVAL:
            self._pruned_at = now
            await self._pool.execute(
                "DELETE FROM rtm.webhook_outbox WHERE id IN (SELECT id FROM rtm.webhook_outbox "
                "WHERE created_at < clock_timestamp() - make_interval(secs => $1) "
                "AND (delivered_at IS NOT NULL OR dead_at IS NOT NULL) LIMIT 10000)",
                RETENTION_SECONDS,
            )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
