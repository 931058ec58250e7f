"""The purge worker: deletes the stored bytes of files nobody can reach any more
(docs/files.md, "Purging").

The database decides what goes: a trigger queues the storage key of every deleted
``rtm.attachments`` row in ``rtm.storage_purge`` (migration 0019), in the transaction that
deleted it, whatever deleted it: a message deleted or edited, a conversation deleted by cascade,
or this worker expiring an upload never sent. The worker only empties the queue, so a file is
never deleted while a row still points at it, and a crash between the two leaves a key queued,
never a lost file or a leaked one. Every server process runs one; rows are claimed with
``FOR UPDATE SKIP LOCKED``, so each key is deleted by one of them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..config import FileSettings
from ..storage import Storage
from .periodic import DATABASE_ERRORS

log = logging.getLogger(__name__)

#: Rows per statement (uploads expired, keys claimed), and statements per round of each kind:
#: a round is bounded whatever the backlog, the next one continues.
BATCH = 100
BATCHES_PER_ROUND = 10
#: Store deletes in flight at once.
CONCURRENCY = 8
#: A failed delete is tried again after RETRY_BASE seconds, doubling up to RETRY_MAX.
RETRY_BASE = 30.0
RETRY_MAX = 3600.0
MAX_ERROR_CHARS = 500

_EXPIRE = """
DELETE FROM rtm.attachments
WHERE id IN (SELECT id FROM rtm.attachments
             WHERE message_id IS NULL
               AND created_at < clock_timestamp() - make_interval(secs => $1)
             ORDER BY created_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
"""

_CLAIM = """
SELECT storage_key, attempts FROM rtm.storage_purge
WHERE next_attempt_at <= clock_timestamp()
ORDER BY next_attempt_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""


@dataclass
class PurgeStats:
    """What /metrics shows of the purge (server/metrics.py)."""

    #: Keys waiting in the queue, all processes (read every round).
    queued: int = 0
    #: This process's work: objects deleted, failed deletes, unsent uploads expired.
    purged: int = 0
    failed: int = 0
    expired: int = 0


class PurgeWorker:
    """Expires unsent uploads and deletes queued objects from ``storage`` every
    ``settings.purge_interval`` seconds; one per server process, any number per database."""

    def __init__(self, pool: asyncpg.Pool, storage: Storage, settings: FileSettings) -> None:
        self._pool = pool
        self._storage = storage
        self._settings = settings
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deletes = asyncio.Semaphore(CONCURRENCY)
        self.stats = PurgeStats()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="storage-purge")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def wake(self) -> None:
        """Run a round now rather than at the next interval."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_once()
            except DATABASE_ERRORS as exc:
                log.warning("storage purge failed (%s); it runs again shortly", exc)
            except Exception:
                log.exception("storage purge failed")
            try:
                async with asyncio.timeout(self._settings.purge_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def run_once(self) -> tuple[int, int]:
        """One round: expire unsent uploads, then delete queued objects; how many of each."""
        expired = 0
        for _ in range(BATCHES_PER_ROUND):
            status = await self._pool.execute(_EXPIRE, self._settings.pending_ttl, BATCH)
            done = int(status.split()[-1])
            expired += done
            if done < BATCH:
                break
        self.stats.expired += expired
        purged = 0
        for _ in range(BATCHES_PER_ROUND):
            claimed, deleted = await self._drain_batch()
            purged += deleted
            if claimed < BATCH:
                break
        self.stats.queued = await self._pool.fetchval("SELECT count(*) FROM rtm.storage_purge")
        return expired, purged

    async def _drain_batch(self) -> tuple[int, int]:
        """Claim due keys, delete their objects, forget the deleted ones and reschedule the
        others; (claimed, deleted). The rows stay locked meanwhile: no other process takes them."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, BATCH)
            if not rows:
                return 0, 0
            errors = await asyncio.gather(*(self._delete(r["storage_key"]) for r in rows))
            done = [r["storage_key"] for r, e in zip(rows, errors, strict=True) if e is None]
            retries: list[tuple[Any, ...]] = [
                (r["storage_key"], r["attempts"] + 1, retry_delay(r["attempts"] + 1), e)
                for r, e in zip(rows, errors, strict=True)
                if e is not None
            ]
            if done:
                await conn.execute(
                    "DELETE FROM rtm.storage_purge WHERE storage_key = ANY ($1::text[])", done
                )
            if retries:
                await conn.executemany(
                    "UPDATE rtm.storage_purge SET attempts = $2, last_error = $4, "
                    "next_attempt_at = clock_timestamp() + make_interval(secs => $3) "
                    "WHERE storage_key = $1",
                    retries,
                )
        self.stats.purged += len(done)
        self.stats.failed += len(retries)
        return len(rows), len(done)

    async def _delete(self, key: str) -> str | None:
        """Delete one object; the error to record, or None (done, or there was none).

        Any failure of the store is caught: it is recorded and retried, never allowed to stop
        the worker or the other deletes of the batch."""
        async with self._deletes:
            try:
                await self._storage.delete(key)
            except ValueError:
                # Not a key this server makes, so nothing it stored: nothing to delete.
                log.warning("storage purge: %r is not a storage key; dropped", key)
                return None
            except Exception as exc:
                log.warning("storage purge: deleting %s failed (%s); retried later", key, exc)
                text = f"{type(exc).__name__}: {exc}"
                return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
        return None


def retry_delay(attempt: int) -> float:
    """Seconds before trying a failed delete again, after its ``attempt``-th failure."""
    return min(RETRY_MAX, RETRY_BASE * 2.0 ** min(attempt - 1, 30))
