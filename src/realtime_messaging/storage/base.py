"""The storage interface attachments are written through (docs/files.md).

Why an interface this small: the server only ever puts a stream under a key it chose, reads it
back, hands out a URL, and deletes it. Keys are made by :func:`new_key`, never from anything a
client sent (a filename, a content type), so no store needs to defend its paths against them;
each still refuses a key that is not of that shape.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol
from uuid import UUID

#: ``<conversation uuid>/<32 hex digits>``: the only keys a store accepts.
KEY_PATTERN = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/[0-9a-f]{32}"
)


class StorageError(Exception):
    """The store failed (unreachable, refused): the upload or download cannot proceed."""


class TooLarge(StorageError):
    """The stream went past ``max_bytes``; nothing was kept."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the file is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class NotStored(StorageError):
    """No object under that key."""


def new_key(conversation_id: UUID) -> str:
    """A fresh key: the conversation (to list or purge by) and 128 random bits."""
    return f"{conversation_id}/{secrets.token_hex(16)}"


def check_key(key: str) -> str:
    """``key`` if it is one :func:`new_key` makes; ValueError otherwise (a traversal, a forgery)."""
    if not KEY_PATTERN.fullmatch(key):
        raise ValueError("not a storage key")
    return key


class Storage(Protocol):
    """A place for attachment bytes."""

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> int:
        """Store ``chunks`` under ``key`` without holding them all in memory; the byte count.

        Raises :class:`TooLarge` as soon as more than ``max_bytes`` arrived (nothing is kept),
        :class:`StorageError` when the store fails. An exception from ``chunks`` propagates, and
        nothing is kept either."""
        ...

    def open(self, key: str, *, chunk_size: int = 64 * 1024) -> AsyncGenerator[bytes, None]:
        """The object's bytes in chunks; :class:`NotStored` when there is none."""
        ...

    async def url(
        self, key: str, *, expires_in: int, disposition: str, content_type: str
    ) -> str | None:
        """A presigned URL the store answers itself, with these response headers; None when
        the store has no URLs of its own (the server then streams :meth:`open`)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; no error when there is none."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
