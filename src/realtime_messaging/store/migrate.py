"""Versioned SQL migrations shipped in ``store/migrations``, applied in order under an advisory lock.

Each file ``NNNN_name.sql`` runs in its own transaction and is recorded in
``rtm.schema_migrations`` with a checksum, so re-running is a no-op and an edited migration that
was already applied is reported instead of silently diverging.

Every start of ``rtm serve`` migrates, and almost always finds nothing to do: that case is
answered from one query, without the lock (see :func:`migrate`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from ..exceptions import MigrationError

# Any fixed 64-bit key; every process migrating the same database serialises on it.
MIGRATION_LOCK_KEY = 0x52544D5F4D494752  # "RTM_MIGR"

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The migrations shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("realtime_messaging.store").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions: {versions}")
    return found


def _check_applied(migrations: list[Migration], applied: dict[int, str]) -> bool:
    """Whether every migration is in ``applied`` (version: checksum); MigrationError for one
    that was applied with other contents."""
    pending = False
    for migration in migrations:
        checksum = applied.get(migration.version)
        if checksum is None:
            pending = True
        elif checksum != migration.checksum:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} was changed after "
                "it was applied; add a new migration instead"
            )
    return not pending


async def _applied(conn: asyncpg.Connection) -> dict[int, str] | None:
    """The recorded migrations (version: checksum); None before the first migration."""
    try:
        rows = await conn.fetch("SELECT version, checksum FROM rtm.schema_migrations")
    except asyncpg.UndefinedTableError:  # no rtm schema or table yet
        return None
    return {r["version"]: r["checksum"] for r in rows}


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply every pending migration on ``conn``; return the ones applied now.

    An up-to-date database is answered from one read of ``rtm.schema_migrations``, without the
    advisory lock or any DDL: a restart should not wait behind another process's migration it
    does not need, nor pay a round trip per statement (issue 16). The table only ever gains
    rows, each committed with its migration, so a read that finds them all is final. Anything
    pending takes the lock and looks again under it. (Inside a caller's transaction the read is
    skipped: on a fresh database its error would abort that transaction.)"""
    migrations = load_migrations()
    if not conn.is_in_transaction():
        applied = await _applied(conn)
        if applied is not None and _check_applied(migrations, applied):
            return []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """
            CREATE SCHEMA IF NOT EXISTS rtm;
            CREATE TABLE IF NOT EXISTS rtm.schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            """
        )
        applied = await _applied(conn) or {}
        _check_applied(migrations, applied)
        done: list[Migration] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO rtm.schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
