"""Stored files do not outlive their rows: the bytes of a deleted message's files, of a deleted
conversation's, of a file an edit dropped and of an upload never sent are deleted from the real
directory store, by the server's purge worker; a failing store is retried later; two workers
delete each key once. Databases of this module's own (the purge drains a whole database)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from realtime_messaging.config import FileSettings
from realtime_messaging.server.purge import PurgeWorker
from realtime_messaging.storage import DirectoryStorage, StorageError, new_key
from tests.api.conftest import Http, assert_error, assert_ok
from tests.conftest import RunningServer, Seed, fresh_database, running_server

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
WAIT = 15.0


async def until(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    """Wait until a condition on the store or the database holds (checked every 20 ms)."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


# -- through the server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def server_db(admin_url: str) -> AsyncIterator[str]:
    async with fresh_database(admin_url) as url:
        yield url


@pytest.fixture(scope="module")
async def files(
    server_db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[RunningServer, Path]]:
    """A server purging every 50 ms into a data directory of its own (uploads expire after
    the default day: the tests age them)."""
    data_dir = tmp_path_factory.mktemp("purge")
    settings = FileSettings(max_bytes=1024 * 1024, purge_interval=0.05)
    async with running_server(server_db, data_dir=data_dir, files=settings) as srv:
        yield srv, data_dir


@pytest.fixture
async def spool(server_db: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(server_db, min_size=1, max_size=4) as p:
        yield p


@pytest.fixture
async def web(files: tuple[RunningServer, Path]) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        yield Http(session, files[0].http_url)


class Desk:
    """A customer's conversation on the purging server, and its files on disk."""

    def __init__(self, web: Http, pool: asyncpg.Pool, data_dir: Path) -> None:
        self.web = web
        self.pool = pool
        self.data_dir = data_dir
        self.portal = ""
        self.conversation = uuid.uuid4()
        self._paths: dict[str, Path] = {}

    async def open(self) -> Desk:
        seed = Seed(self.pool)
        customer, self.portal = await seed.customer()
        self.conversation = await seed.conversation(customer)
        return self

    async def upload(self) -> str:
        status, reply, _ = await self.web.call(
            "POST",
            f"/api/conversations/{self.conversation}/attachments",
            self.portal,
            data=PNG,
            params={"filename": "p.png"},
            headers={"Content-Type": "image/png"},
        )
        attachment: str = assert_ok(status, reply, 201)["id"]
        key = await self.pool.fetchval(
            "SELECT storage_key FROM rtm.attachments WHERE id = $1", uuid.UUID(attachment)
        )
        self._paths[attachment] = self.data_dir / "attachments" / key
        assert self.path(attachment).read_bytes() == PNG
        return attachment

    async def send(self, *attachments: str) -> str:
        status, reply, _ = await self.web.call(
            "POST",
            f"/api/conversations/{self.conversation}/messages",
            self.portal,
            json={"content": "see", "attachmentIds": list(attachments)},
        )
        message: str = assert_ok(status, reply, 201)["id"]
        return message

    async def link(self, attachment: str) -> str:
        status, reply, _ = await self.web.call("GET", f"/api/attachments/{attachment}", self.portal)
        url: str = assert_ok(status, reply)["url"]
        return url

    def path(self, attachment: str) -> Path:
        return self._paths[attachment]

    async def gone(self, *attachments: str) -> None:
        """Wait until the files are deleted from disk and the purge queue is empty; their rows
        are gone too."""

        async def purged() -> bool:
            if any(self.path(a).exists() for a in attachments):
                return False
            return not await self.pool.fetchval("SELECT count(*) FROM rtm.storage_purge")

        await until(purged)
        rows = await self.pool.fetchval(
            "SELECT count(*) FROM rtm.attachments WHERE id = ANY ($1::uuid[])",
            [uuid.UUID(a) for a in attachments],
        )
        assert rows == 0


@pytest.fixture
async def desk(web: Http, spool: asyncpg.Pool, files: tuple[RunningServer, Path]) -> Desk:
    return await Desk(web, spool, files[1]).open()


async def test_a_deleted_messages_files_leave_the_store_and_their_links_stop_working(
    desk: Desk, files: tuple[RunningServer, Path]
) -> None:
    kept, dropped = await desk.upload(), await desk.upload()
    message = await desk.send(dropped)
    await desk.send(kept)
    url = await desk.link(dropped)
    status, reply, _ = await desk.web.call("DELETE", f"/api/messages/{message}", desk.portal)
    assert_ok(status, reply)
    await desk.gone(dropped)
    async with desk.web.session.get(url) as response:
        assert_error(response.status, await response.json(), 404, "not_found")
    status, reply, _ = await desk.web.call("GET", f"/api/attachments/{dropped}", desk.portal)
    assert_error(status, reply, 404, "not_found")
    # The other message's file is untouched.
    assert desk.path(kept).read_bytes() == PNG
    async with desk.web.session.get(await desk.link(kept)) as response:
        assert response.status == 200 and await response.read() == PNG
    async with desk.web.session.get(f"{files[0].http_url}/metrics") as response:
        metrics = await response.text()
    purged = [line for line in metrics.splitlines() if line.startswith("rtm_storage_purged_total")]
    assert purged and float(purged[0].split()[-1]) >= 1
    assert "rtm_storage_purge_queued 0.0" in metrics


async def test_a_deleted_conversations_files_leave_the_store(desk: Desk) -> None:
    sent, unsent = await desk.upload(), await desk.upload()
    await desk.send(sent)
    await desk.pool.execute("DELETE FROM conversations WHERE id = $1", desk.conversation)
    await desk.gone(sent, unsent)


async def test_a_message_row_deleted_or_an_edit_dropping_a_file_takes_the_file_along(
    desk: Desk,
) -> None:
    first, second, third = await desk.upload(), await desk.upload(), await desk.upload()
    message = uuid.UUID(await desk.send(first, second))
    await desk.pool.execute(
        "UPDATE customer_messages SET attachments = (SELECT jsonb_agg(e) "
        "FROM jsonb_array_elements(attachments) e WHERE e ->> 'id' = $2) WHERE id = $1",
        message,
        first,
    )
    await desk.gone(second)
    assert desk.path(first).read_bytes() == PNG
    # Deleted outright (SQL, /rest/v1): the file does not fall back to an unsent upload.
    other = uuid.UUID(await desk.send(third))
    await desk.pool.execute("DELETE FROM customer_messages WHERE id = $1", other)
    await desk.gone(third)
    assert desk.path(first).read_bytes() == PNG


async def test_uploads_never_sent_expire_sent_and_recent_ones_stay(desk: Desk) -> None:
    old_unsent, recent_unsent, old_sent = (
        await desk.upload(),
        await desk.upload(),
        await desk.upload(),
    )
    await desk.send(old_sent)
    await desk.pool.execute(
        "UPDATE rtm.attachments SET created_at = now() - interval '25 hours' "
        "WHERE id = ANY ($1::uuid[])",
        [uuid.UUID(old_unsent), uuid.UUID(old_sent)],
    )
    await desk.gone(old_unsent)
    # The round that expired it saw the other two, and kept them.
    assert desk.path(recent_unsent).read_bytes() == PNG
    assert desk.path(old_sent).read_bytes() == PNG
    status, reply, _ = await desk.web.call("GET", f"/api/attachments/{old_unsent}", desk.portal)
    assert_error(status, reply, 404, "not_found")
    # It no longer counts against the uploader's pending files, and cannot be sent.
    status, reply, _ = await desk.web.call(
        "POST",
        f"/api/conversations/{desk.conversation}/messages",
        desk.portal,
        json={"attachmentIds": [old_unsent]},
    )
    assert_error(status, reply, 422, "validation_error")


# -- the worker alone -------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def worker_db(admin_url: str) -> AsyncIterator[str]:
    async with fresh_database(admin_url) as url:
        yield url


@pytest.fixture
async def wpool(worker_db: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(worker_db, min_size=1, max_size=6) as p:
        await p.execute("TRUNCATE rtm.storage_purge")
        yield p


class Store(DirectoryStorage):
    """The directory store, recording every delete; keys in ``failing`` fail like a store that
    is down."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.deleted: list[str] = []
        self.failing: set[str] = set()

    async def delete(self, key: str) -> None:
        await asyncio.sleep(0)  # let a concurrent worker run in between
        if key in self.failing:
            raise StorageError("the store is down")
        await super().delete(key)
        self.deleted.append(key)


async def stored(store: Store, pool: asyncpg.Pool, n: int) -> list[str]:
    """``n`` objects in the store, queued for the purge."""

    async def chunks() -> AsyncIterator[bytes]:
        yield PNG

    keys = [new_key(uuid.uuid4()) for _ in range(n)]
    for key in keys:
        await store.put(key, chunks(), max_bytes=len(PNG))
    await pool.executemany(
        "INSERT INTO rtm.storage_purge (storage_key) VALUES ($1)", [(k,) for k in keys]
    )
    return keys


async def queue(pool: asyncpg.Pool) -> list[Any]:
    return list(await pool.fetch("SELECT * FROM rtm.storage_purge ORDER BY storage_key"))


async def test_a_failing_store_is_retried_later_and_the_rest_goes_on(
    wpool: asyncpg.Pool, tmp_path: Path
) -> None:
    store = Store(tmp_path)
    keys = await stored(store, wpool, 3)
    never_stored = new_key(uuid.uuid4())  # deleting a missing object is no error
    await wpool.execute("INSERT INTO rtm.storage_purge (storage_key) VALUES ($1)", never_stored)
    store.failing = {keys[0]}
    worker = PurgeWorker(wpool, store, FileSettings())
    assert await worker.run_once() == (0, 3)
    assert sorted(store.deleted) == sorted([*keys[1:], never_stored])
    assert (tmp_path / keys[0]).exists() and not (tmp_path / keys[1]).exists()
    (row,) = await queue(wpool)
    assert (row["storage_key"], row["attempts"]) == (keys[0], 1)
    assert "the store is down" in row["last_error"]
    assert worker.stats.failed == 1 and worker.stats.purged == 3 and worker.stats.queued == 1
    # Not due yet: the next round leaves it.
    assert await worker.run_once() == (0, 0)
    store.failing = set()
    await wpool.execute("UPDATE rtm.storage_purge SET next_attempt_at = now()")
    assert await worker.run_once() == (0, 1)
    assert not (tmp_path / keys[0]).exists() and await queue(wpool) == []


async def test_two_workers_delete_each_key_once(wpool: asyncpg.Pool, tmp_path: Path) -> None:
    store = Store(tmp_path)
    keys = await stored(store, wpool, 250)
    workers = [PurgeWorker(wpool, store, FileSettings()) for _ in range(2)]
    done = await asyncio.gather(*(w.run_once() for w in workers))
    assert sum(purged for _, purged in done) == 250
    assert sorted(store.deleted) == sorted(keys)
    assert await queue(wpool) == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


async def test_the_worker_keeps_running_through_store_failures(
    wpool: asyncpg.Pool, tmp_path: Path
) -> None:
    store = Store(tmp_path)
    keys = await stored(store, wpool, 2)
    store.failing = {keys[0]}
    worker = PurgeWorker(wpool, store, FileSettings(purge_interval=0.05))
    await worker.start()
    try:

        async def second_gone() -> bool:
            return not (tmp_path / keys[1]).exists()

        await until(second_gone)
        store.failing = set()
        await wpool.execute("UPDATE rtm.storage_purge SET next_attempt_at = now()")

        async def all_gone() -> bool:
            return not await queue(wpool)

        await until(all_gone)
    finally:
        await worker.stop()
    assert not (tmp_path / keys[0]).exists()
