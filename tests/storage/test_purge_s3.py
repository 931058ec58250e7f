"""The purge worker against the S3 store (moto's S3 server on loopback): queued objects are
deleted from the bucket, and a key with no object is no error (docs/files.md, "Purging")."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from realtime_messaging.config import FileSettings
from realtime_messaging.server.purge import PurgeWorker
from realtime_messaging.storage import NotStored, S3Storage, new_key
from tests.conftest import fresh_database


@pytest.fixture
async def qpool(admin_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with (
        fresh_database(admin_url) as url,
        asyncpg.create_pool(url, min_size=1, max_size=2) as p,
    ):
        yield p


async def test_queued_objects_leave_the_bucket(s3_store: S3Storage, qpool: asyncpg.Pool) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"bytes of a deleted file"

    kept, purged, missing = (new_key(uuid.uuid4()) for _ in range(3))
    for key in (kept, purged):
        await s3_store.put(key, chunks(), max_bytes=100)
    await qpool.executemany(
        "INSERT INTO rtm.storage_purge (storage_key) VALUES ($1)", [(purged,), (missing,)]
    )
    worker = PurgeWorker(qpool, s3_store, FileSettings())
    assert await worker.run_once() == (0, 2)
    with pytest.raises(NotStored):
        await anext(s3_store.open(purged))
    assert [c async for c in s3_store.open(kept)] == [b"bytes of a deleted file"]
    assert await qpool.fetchval("SELECT count(*) FROM rtm.storage_purge") == 0
    assert worker.stats.failed == 0
