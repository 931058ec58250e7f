"""Which database a process uses: ``RTM_DATABASE_URL``, or the embedded server in the data dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from ..config import Settings
from ..exceptions import DatabaseUnavailableError
from .embedded import EmbeddedPostgres
from .migrate import migrate


class Database:
    """The database URL in use and, when embedded, the handle that keeps the server alive."""

    def __init__(self, settings: Settings) -> None:
        self._embedded: EmbeddedPostgres | None = None
        if settings.database_url:
            self.url = settings.database_url
        else:
            self._embedded = EmbeddedPostgres(settings.data_dir)
            self.url = self._embedded.url()

    @property
    def embedded(self) -> bool:
        return self._embedded is not None

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return their names."""
        async with self.connect() as conn:
            return [f"{m.version:04d}_{m.name}" for m in await migrate(conn)]

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            conn = await asyncpg.connect(self.url, timeout=10)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise DatabaseUnavailableError(f"cannot connect to the database: {exc}") from exc
        try:
            yield conn
        finally:
            await conn.close()

    def detach(self) -> None:
        """Keep the embedded server running after this process exits."""
        if self._embedded is not None:
            self._embedded.detach()
            self._embedded = None

    def close(self) -> None:
        if self._embedded is not None:
            self._embedded.close()
            self._embedded = None
