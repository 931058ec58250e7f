"""The server's own sessions never JIT-compile (issue 12, finding 7).

The change feed stamps every few milliseconds a statement that runs in about a millisecond. On a
PostgreSQL with JIT (on by default wherever it is built with LLVM, as most packages are), its
estimate crossed ``jit_above_cost`` and every run spent 20 to 220 ms compiling. The sessions the
server opens therefore turn JIT off (``store.database.SERVER_SETTINGS``).

Here every JIT threshold is lowered to 0, so that a session where JIT is on compiles whatever it
runs. The embedded PostgreSQL has no JIT provider, so there the "no JIT section" assertions cannot
fail; CI runs these tests against the PostgreSQL service as well (``.ci/run``), where they can.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from realtime_messaging.server.app import start
from realtime_messaging.store.changefeed import _STAMP, BATCH, connect_feed
from tests.conftest import TEST_SECRET, fresh_database, make_settings

#: Every statement costs more than 0: with these, a session where JIT is on compiles each one.
JIT_ALWAYS = (
    "SET LOCAL jit_above_cost = 0; SET LOCAL jit_inline_above_cost = 0; "
    "SET LOCAL jit_optimize_above_cost = 0"
)


@pytest.fixture
async def url(admin_url: str) -> AsyncIterator[str]:
    """A database of the test's own (a server started on it stamps its feed, nobody else's)."""
    async with fresh_database(admin_url) as u:
        yield u


async def _stamp_plan(conn: asyncpg.Connection, *, analyze: bool = True) -> dict[str, Any]:
    """EXPLAIN (ANALYZE) of one stamping round with every JIT threshold at 0, rolled back."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(JIT_ALWAYS)
        options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
        plan: dict[str, Any] = json.loads(await conn.fetchval(f"EXPLAIN ({options}) {_STAMP}"))[0]
    finally:
        await tx.rollback()
    return plan


async def _jit_available(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        available: bool = await conn.fetchval("SELECT pg_jit_available()")
        if available:
            # Not vacuous where JIT exists: a session with the server's defaults compiles the
            # very statement that the server's sessions must not.
            assert "JIT" in await _stamp_plan(conn)
        return available
    finally:
        await conn.close()


async def test_the_change_feeds_session_never_jit_compiles_the_stamp(url: str) -> None:
    jit_available = await _jit_available(url)
    feed = await connect_feed(url)
    try:
        plan = await _stamp_plan(feed)
        jit = await feed.fetchval("SHOW jit")
    finally:
        await feed.close()
    assert "JIT" not in plan, (jit_available, plan["JIT"])
    assert jit == "off"  # the embedded server has no JIT, but its setting is on by default


async def test_the_servers_pool_sessions_never_jit_compile(url: str) -> None:
    await _jit_available(url)
    running = await start(make_settings(), url, TEST_SECRET)
    try:
        async with running.pool.acquire() as conn:
            plan = await _stamp_plan(conn)
            jit = await conn.fetchval("SHOW jit")
    finally:
        await running.close()
    assert "JIT" not in plan, plan["JIT"]
    assert jit == "off"


async def test_the_stamp_is_planned_for_at_most_one_batch(url: str) -> None:
    """The planner's view of the statement, on a fresh database as after every migration: it
    can return at most one batch, and its cost stays below where PostgreSQL's defaults would
    JIT-compile it (any server, JIT or not: estimates do not depend on it)."""
    conn = await asyncpg.connect(url)
    try:
        plan = (await _stamp_plan(conn, analyze=False))["Plan"]
        default_jit_above_cost = float(
            await conn.fetchval("SELECT boot_val FROM pg_settings WHERE name = 'jit_above_cost'")
        )
    finally:
        await conn.close()
    assert plan["Plan Rows"] <= BATCH, plan["Plan Rows"]
    assert plan["Total Cost"] < default_jit_above_cost / 10, plan["Total Cost"]


async def test_the_servers_sessions_notice_a_vanished_machine_within_half_a_minute(
    url: str,
) -> None:
    """TCP keepalives on the pool's and the change feed's sessions (a vanished machine's feed
    session would otherwise hold its advisory lock for hours). Over a Unix socket (the embedded
    server) PostgreSQL ignores them and reads 0; CI runs this against the TCP service too."""
    running = await start(make_settings(), url, TEST_SECRET)
    feed = await connect_feed(url)
    try:
        async with running.pool.acquire() as conn:
            sessions = [conn, feed]
            for session in sessions:
                tcp = await session.fetchval("SELECT inet_client_addr() IS NOT NULL")
                idle, interval, count = [
                    await session.fetchval(f"SHOW {name}")
                    for name in (
                        "tcp_keepalives_idle",
                        "tcp_keepalives_interval",
                        "tcp_keepalives_count",
                    )
                ]
                if tcp:
                    assert (idle, interval, count) == ("10", "5", "3")
                else:
                    assert (idle, interval, count) == ("0", "0", "0")
    finally:
        await feed.close()
        await running.close()
