"""`rtm migrate` gives the same schema on the embedded PostgreSQL 16 and on a stock 15."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import asyncpg
import pytest

from realtime_messaging.store.embedded import EmbeddedPostgres
from tests.conftest import fresh_database

SERVICE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# Everything a migration defines in the two schemas, as text that does not depend on oids.
FINGERPRINT = """
SELECT 'column', format('%s.%s.%s %s %s %s', table_schema, table_name, column_name,
                        data_type, is_nullable, column_default)
FROM information_schema.columns WHERE table_schema IN ('public', 'rtm')
UNION ALL
SELECT 'constraint', format('%s.%s %s', n.nspname, c.conname, pg_get_constraintdef(c.oid))
FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
WHERE n.nspname IN ('public', 'rtm')
UNION ALL
SELECT 'index', indexdef FROM pg_indexes WHERE schemaname IN ('public', 'rtm')
UNION ALL
SELECT 'trigger', pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid JOIN pg_namespace n ON n.oid = r.relnamespace
WHERE n.nspname IN ('public', 'rtm') AND NOT t.tgisinternal
UNION ALL
SELECT 'function', format('%s.%s(%s) %s', n.nspname, p.proname,
                          pg_get_function_identity_arguments(p.oid), md5(p.prosrc))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('public', 'rtm')
UNION ALL
SELECT 'policy', format('%s.%s %s %s %s %s', schemaname, tablename, policyname, cmd, qual, with_check)
FROM pg_policies WHERE schemaname IN ('public', 'rtm')
UNION ALL
SELECT 'rls', format('%s %s', c.oid::regclass, c.relrowsecurity)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('public', 'rtm') AND c.relkind = 'r'
"""


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 2).close()
    except OSError:
        return False
    return True


async def _fingerprint(admin_url: str) -> set[tuple[str, str]]:
    async with fresh_database(admin_url) as url:
        conn = await asyncpg.connect(url)
        try:
            version = await conn.fetchval("SHOW server_version_num")
            rows = await conn.fetch(FINGERPRINT)
        finally:
            await conn.close()
    return {(r[0], r[1]) for r in rows} | {("version", str(int(version) // 10000))}


async def test_migrations_give_the_same_schema_on_15_and_the_embedded_16() -> None:
    external = os.environ.get("RTM_TEST_DATABASE_URL")
    if not external and _reachable("127.0.0.1", 5432):
        external = SERVICE_URL
    if not external:
        pytest.skip(
            "no external PostgreSQL (RTM_TEST_DATABASE_URL or 127.0.0.1:5432) to compare with"
        )
    with tempfile.TemporaryDirectory(prefix="rtm-schema-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp))
        try:
            ours = await _fingerprint(embedded.url())
        finally:
            embedded.close()
    theirs = await _fingerprint(external)
    versions = {v for kind, v in ours | theirs if kind == "version"}
    assert "16" in versions and len(versions) == 2, versions
    ours = {x for x in ours if x[0] != "version"}
    theirs = {x for x in theirs if x[0] != "version"}
    assert len(ours) > 100
    assert ours - theirs == set() and theirs - ours == set()
