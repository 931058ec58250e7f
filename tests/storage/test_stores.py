"""Both stores against the same contract: streamed puts, size limits that keep nothing, reads,
deletes, and keys that cannot name anything but their own objects. The S3 store runs against a
real S3 server (moto's, on loopback)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from realtime_messaging.storage import (
    DirectoryStorage,
    NotStored,
    S3Storage,
    TooLarge,
    new_key,
)

MiB = 1024 * 1024


async def stream(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


async def read_all(store: DirectoryStorage | S3Storage, key: str) -> bytes:
    return b"".join([c async for c in store.open(key)])


def key() -> str:
    return new_key(uuid.uuid4())


async def test_directory_store_round_trip_and_delete(tmp_path: Path) -> None:
    store = DirectoryStorage(tmp_path)
    data = os.urandom(300_000)
    k = key()
    assert await store.put(k, stream(data), max_bytes=len(data)) == len(data)
    assert await read_all(store, k) == data
    assert sorted(p.name for p in (tmp_path / k).parent.iterdir()) == [k.split("/")[1]]
    await store.delete(k)
    await store.delete(k)  # again: no error
    with pytest.raises(NotStored):
        await read_all(store, k)


async def test_directory_store_keeps_nothing_of_a_file_over_the_limit(tmp_path: Path) -> None:
    store = DirectoryStorage(tmp_path)
    k = key()
    pulled = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield b"x" * 65536

    with pytest.raises(TooLarge):
        await store.put(k, counted(), max_bytes=MiB)
    assert pulled == 17  # stopped at the first chunk past 1 MiB, not at the end of the stream
    assert list((tmp_path / k).parent.iterdir()) == []  # no temporary file left either


async def test_directory_store_refuses_keys_it_did_not_make(tmp_path: Path) -> None:
    store = DirectoryStorage(tmp_path / "root")
    (tmp_path / "secret").write_bytes(b"s")
    for bad in ("../secret", f"{uuid.uuid4()}/../../secret", "/etc/passwd", "a/b", ""):
        with pytest.raises(ValueError):
            await store.put(bad, stream(b"x"), max_bytes=10)
        with pytest.raises(ValueError):
            await read_all(store, bad)
    assert (tmp_path / "secret").read_bytes() == b"s"


async def test_s3_store_small_and_multipart_uploads(s3_store: S3Storage) -> None:
    small, large = os.urandom(1000), os.urandom(11 * MiB + 123)
    k1, k2 = key(), key()
    assert await s3_store.put(k1, stream(small), max_bytes=20 * MiB) == len(small)
    assert await s3_store.put(k2, stream(large, 1024 * 1024), max_bytes=20 * MiB) == len(large)
    assert await read_all(s3_store, k1) == small
    assert hashlib.sha256(await read_all(s3_store, k2)).digest() == hashlib.sha256(large).digest()
    bucket = s3_store.config.bucket
    listed = await s3_store.client.list_objects_v2(Bucket=bucket)
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(["rtm/" + k1, "rtm/" + k2])
    # The large one went up in parts: its ETag is a multipart ETag ("<md5>-<parts>").
    head = await s3_store.client.head_object(Bucket=bucket, Key="rtm/" + k2)
    assert head["ETag"].strip('"').endswith("-3")
    await s3_store.delete(k1)
    with pytest.raises(NotStored):
        await read_all(s3_store, k1)


async def test_s3_store_aborts_an_upload_over_the_limit(s3_store: S3Storage) -> None:
    k = key()
    with pytest.raises(TooLarge):
        await s3_store.put(k, stream(os.urandom(12 * MiB), MiB), max_bytes=11 * MiB)
    bucket = s3_store.config.bucket
    listed = await s3_store.client.list_objects_v2(Bucket=bucket)
    assert listed.get("KeyCount", 0) == 0
    uploads = await s3_store.client.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []


async def test_s3_presigned_url_serves_the_headers_it_was_given(s3_store: S3Storage) -> None:
    k = key()
    await s3_store.put(k, stream(b"%PDF-1.4 hello"), max_bytes=100)
    disposition = "attachment; filename=\"a.pdf\"; filename*=UTF-8''a.pdf"
    url = await s3_store.url(
        k, expires_in=60, disposition=disposition, content_type="application/pdf"
    )
    assert url is not None
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert await response.read() == b"%PDF-1.4 hello"
        assert response.headers["Content-Disposition"] == disposition
        assert response.headers["Content-Type"] == "application/pdf"
    # (moto does not check presigned signatures, so a tampered URL is not tested here: the
    # server's own signed links are, in tests/api/test_attachments.py.)
