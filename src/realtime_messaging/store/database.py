"""Which database a process uses: ``RTM_DATABASE_URL``, or the embedded server in the data dir."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

import asyncpg

from ..config import Settings
from ..exceptions import DatabaseUnavailableError
from .embedded import EmbeddedPostgres
from .migrate import migrate

#: Session settings of the connections the server works through (its pool, the change feed's).
#: JIT off: the server runs short OLTP statements, and JIT (on by default wherever PostgreSQL is
#: built with LLVM) compiles any plan whose estimate crosses ``jit_above_cost``, which an
#: estimate made without statistics easily does: the change feed's stamp statement, which runs
#: in a millisecond, spent 20 to 220 ms per run compiling (issue 12).
#:
#: TCP keepalives probed after 10 s of silence, every 5 s, 3 times: PostgreSQL notices a server
#: process whose machine vanished (power, network) within about 25 s and ends its session,
#: releasing what it held; above all the change feed's advisory lock, which would otherwise stall
#: postgres_changes for every process until the kernel's default gives up (about two hours on
#: Linux). Ignored on Unix sockets (the embedded server), where a peer cannot vanish that way.
SERVER_SETTINGS: Final[Mapping[str, str]] = {
    "jit": "off",
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}


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
