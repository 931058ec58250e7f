"""Shared fixtures: a database of this test run's own, on the embedded server by default.

Set ``RTM_TEST_DATABASE_URL`` to an admin URL of another PostgreSQL server (15 or newer) to run
against it instead; a fresh database is created there and dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from realtime_messaging.config import Settings
from realtime_messaging.keys import anon_key, service_role_key
from realtime_messaging.server.app import start
from realtime_messaging.store.embedded import EmbeddedPostgres
from realtime_messaging.store.migrate import migrate
from realtime_messaging.tokens import hash_portal_token, mint_staff_token, new_portal_token

#: A test still running after this long prints every asyncio task's stack (where it waits).
HANG_REPORT_AFTER = 120.0


def _report_tasks(test: str) -> None:
    print(f"\n--- {test} has run for {HANG_REPORT_AFTER:g} s; asyncio tasks:", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


@pytest.fixture(autouse=True)
async def _hang_report(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    handle = asyncio.get_running_loop().call_later(
        HANG_REPORT_AFTER, _report_tasks, request.node.nodeid
    )
    yield
    handle.cancel()


def with_database(url: str, database: str) -> str:
    """Replace the database of a libpq URL, keeping host, port, user and query."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """An admin URL of the server the tests use."""
    external = os.environ.get("RTM_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="rtm-test-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        try:
            yield server.url()
        finally:
            server.close()


@pytest.fixture(scope="session")
async def database_url(admin_url: str) -> AsyncIterator[str]:
    """A migrated database created for this test run and dropped after it."""
    async with fresh_database(admin_url) as url:
        yield url


@asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """A new migrated database on the test server, dropped on exit (for tests that need one alone)."""
    name = f"rtm_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(admin_url, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        yield url
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on the test database (connections log in as the admin role)."""
    async with asyncpg.create_pool(database_url, min_size=1, max_size=8) as p:
        yield p


@pytest.fixture
async def conn(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """One connection for a test."""
    async with pool.acquire() as c:
        yield c


# -- a running server -------------------------------------------------------------------


@dataclass(frozen=True)
class RunningServer:
    http_url: str
    realtime_url: str
    ws_url: str
    anon_key: str
    service_key: str
    secret: str
    database_url: str


TEST_SECRET = "test-secret-" + "x" * 40


def make_settings(**overrides: object) -> Settings:
    """Settings for an in-process server on a free loopback port, with fast token checks."""
    base = Settings(
        database_url=None,
        jwt_secret=TEST_SECRET,
        host="127.0.0.1",
        port=0,
        token_check_interval=0.2,
    )
    return base.with_overrides(**overrides)


@asynccontextmanager
async def running_server(database_url: str, **overrides: object) -> AsyncIterator[RunningServer]:
    """Start the real application in this event loop; stop it on exit."""
    settings = make_settings(**overrides)
    running = await start(settings, database_url, TEST_SECRET)
    try:
        yield RunningServer(
            http_url=running.url,
            # http -> ws, https (settings with tls_cert and tls_key) -> wss
            realtime_url=running.url.replace("http", "ws", 1) + "/realtime/v1",
            ws_url=running.url.replace("http", "ws", 1) + "/realtime/v1/websocket",
            anon_key=anon_key(TEST_SECRET),
            service_key=service_role_key(TEST_SECRET),
            secret=TEST_SECRET,
            database_url=database_url,
        )
    finally:
        await running.close()


class RestartableServer:
    """A server that can be stopped and started again on the same port (a restart)."""

    def __init__(self, database_url: str, **settings: object) -> None:
        self.database_url = database_url
        self.settings = settings
        self.port = 0
        self.server: RunningServer | None = None
        self._running: AbstractAsyncContextManager[RunningServer] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> RunningServer:
        async with self._lock:
            if self.server is None:
                running = running_server(self.database_url, port=self.port, **self.settings)
                self.server = await running.__aenter__()
                self._running = running
                self.port = urlsplit(self.server.http_url).port or 0
            return self.server

    async def stop(self) -> None:
        async with self._lock:
            running, self._running, self.server = self._running, None, None
            if running is not None:
                await running.__aexit__(None, None, None)


@pytest.fixture(scope="session")
async def server(database_url: str) -> AsyncIterator[RunningServer]:
    """One server for the whole run (tests needing special settings start their own)."""
    async with running_server(database_url) as srv:
        yield srv


class Seed:
    """Creates customers, staff users, conversations and their tokens directly in SQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def customer(self, *, ttl_seconds: int = 3600) -> tuple[uuid.UUID, str]:
        customer_id = await self._pool.fetchval(
            "INSERT INTO customers (name, email) VALUES ('Customer', 'c@example.com') RETURNING id"
        )
        return customer_id, await self.portal_token(customer_id, ttl_seconds=ttl_seconds)

    async def portal_token(self, customer_id: uuid.UUID, *, ttl_seconds: int = 3600) -> str:
        token = new_portal_token()
        await self._pool.execute(
            "INSERT INTO portal_tokens (token_hash, customer_id, expires_at) "
            "VALUES ($1, $2, now() + make_interval(secs => $3))",
            hash_portal_token(token),
            customer_id,
            float(ttl_seconds),
        )
        return token

    async def revoke(self, token: str) -> None:
        await self._pool.execute(
            "UPDATE portal_tokens SET revoked_at = now() WHERE token_hash = $1",
            hash_portal_token(token),
        )

    async def staff(self) -> tuple[uuid.UUID, str]:
        user_id = await self._pool.fetchval(
            "INSERT INTO users (name, email) VALUES ('Agent', 'a@example.com') RETURNING id"
        )
        return user_id, self.staff_token(user_id)

    def staff_token(self, user_id: uuid.UUID, ttl_seconds: int = 3600) -> str:
        return mint_staff_token(TEST_SECRET, user_id, ttl_seconds=ttl_seconds)

    async def conversation(self, customer_id: uuid.UUID) -> uuid.UUID:
        conversation_id: uuid.UUID = await self._pool.fetchval(
            "INSERT INTO conversations (customer_id, subject) VALUES ($1, 'Help') RETURNING id",
            customer_id,
        )
        return conversation_id


@pytest.fixture
def seed(pool: asyncpg.Pool) -> Seed:
    return Seed(pool)
