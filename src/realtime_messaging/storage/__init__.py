"""Where attachment bytes live (docs/files.md): a directory under the data dir by default, an
S3-compatible object store when ``RTM_S3_BUCKET`` is set."""

from __future__ import annotations

from pathlib import Path

from .base import NotStored, Storage, StorageError, TooLarge, check_key, new_key
from .directory import DirectoryStorage
from .s3 import S3Config, S3Storage

__all__ = [
    "DirectoryStorage",
    "NotStored",
    "S3Config",
    "S3Storage",
    "Storage",
    "StorageError",
    "TooLarge",
    "check_key",
    "new_key",
    "open_storage",
]


async def open_storage(data_dir: Path, s3: S3Config | None) -> Storage:
    """The configured store, ready for use: S3 when configured, else ``data_dir/attachments``."""
    if s3 is None:
        return DirectoryStorage(data_dir / "attachments")
    store = S3Storage(s3)
    await store.start()
    return store
