"""Attachments as files in a directory (the default: ``<data dir>/attachments``).

Writes go to a temporary file in the same directory, are flushed to disk, then renamed into
place: a reader never sees half a file, and a crash leaves only a temporary file (``.part``),
never a truncated attachment. File I/O runs in a thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from .base import NotStored, TooLarge, check_key


class DirectoryStorage:
    """Objects at ``root/<conversation>/<hex>``; the key is checked, never a client's name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> int:
        path = self._path(key)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        handle: BinaryIO = await asyncio.to_thread(open, temp, "xb")
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(max_bytes)
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(_flush, handle)
            handle.close()
            await asyncio.to_thread(os.replace, temp, path)
        except BaseException:
            handle.close()
            await asyncio.to_thread(temp.unlink, missing_ok=True)
            raise
        return size

    async def open(self, key: str, *, chunk_size: int = 64 * 1024) -> AsyncGenerator[bytes, None]:
        path = self._path(key)
        try:
            handle: BinaryIO = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError as exc:
            raise NotStored(key) from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def url(
        self, key: str, *, expires_in: int, disposition: str, content_type: str
    ) -> str | None:
        return None

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def close(self) -> None:
        return None


def _flush(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
