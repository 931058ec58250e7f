"""A database outage as clients see it (review finding 9): while PostgreSQL is away the API
answers 503 ``unavailable`` with ``Retry-After``, in the envelope; a request cut off mid-flight
gets the envelope too, never aiohttp's plain-text page; anything unexpected is a 500 in the
envelope; ``/readyz`` is 200 again within a second of the database accepting connections.

These tests stop and start a PostgreSQL of their own, not the one the rest of the run shares.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from realtime_messaging.server.app import envelope_errors
from realtime_messaging.store.embedded import EmbeddedPostgres
from realtime_messaging.store.migrate import migrate
from tests.conftest import RunningServer, Seed, running_server

#: The contract of docs/api.md: ready again within a second of the database; the bound leaves
#: half a second for a loaded test machine.
READY_AGAIN_WITHIN = 1.5
#: An outage long enough for a reconnect backoff to grow to its cap (it was 5 s, with jitter).
LONG_OUTAGE = 5.5
POLL = 0.02
FEED_LOGGER = "realtime_messaging.store.changefeed"


@pytest.fixture(scope="module")
def pg() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL this module may stop; every test leaves it running."""
    with tempfile.TemporaryDirectory(prefix="rtm-outage-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        try:
            yield server
        finally:
            server.close()


@pytest.fixture(scope="module")
async def url(pg: EmbeddedPostgres) -> str:
    conn = await asyncpg.connect(pg.url())
    try:
        await migrate(conn)
        # Prepared transactions hold their locks through a shutdown (see the cut-off test).
        await conn.execute("ALTER SYSTEM SET max_prepared_transactions = 4")
    finally:
        await conn.close()
    await asyncio.to_thread(pg.restart)
    return pg.url()


@asynccontextmanager
async def outage(pg: EmbeddedPostgres) -> AsyncIterator[None]:
    """PostgreSQL stopped (fast shutdown: sessions are cut) for the block, started after it."""
    await asyncio.to_thread(pg.stop)
    try:
        yield
    finally:
        await asyncio.to_thread(pg.start)


async def _ready(http: aiohttp.ClientSession, srv: RunningServer) -> None:
    async with asyncio.timeout(20):
        while True:
            async with http.get(srv.http_url + "/readyz") as response:
                if response.status == 200:
                    return
            await asyncio.sleep(POLL)


async def _call(
    http: aiohttp.ClientSession, srv: RunningServer, method: str, path: str, token: str, body: Any
) -> tuple[int, str, dict[str, str], bytes]:
    async with http.request(
        method, srv.http_url + path, json=body, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        return response.status, response.content_type, dict(response.headers), await response.read()


def _assert_unavailable(reply: tuple[int, str, dict[str, str], bytes], what: str) -> None:
    status, content_type, headers, raw = reply
    assert content_type == "application/json", (what, status, raw[:200])
    body = json.loads(raw)
    assert status == 503, (what, body)
    if "/rest/v1/" in what:  # PostgREST's error shape (docs/rest.md)
        assert set(body) == {"code", "message", "details", "hint"}, (what, body)
        assert body["code"] == "PGRST001", (what, body)
    else:
        assert set(body) == {"success", "version", "timestamp", "error"}, (what, body)
        assert body["success"] is False and body["error"]["code"] == "unavailable", (what, body)
    assert 1 <= int(headers.get("Retry-After", "0")) <= 5, (what, headers)


async def _seed(url: str) -> dict[str, Any]:
    async with asyncpg.create_pool(url, min_size=1, max_size=2) as pool:
        seed = Seed(pool)
        customer, portal = await seed.customer()
        _, staff = await seed.staff()
        conv = await seed.conversation(customer)
    return {"portal": portal, "staff": staff, "conv": conv}


async def test_while_the_database_is_down_the_api_answers_503_unavailable(
    pg: EmbeddedPostgres, url: str
) -> None:
    ids = await _seed(url)
    async with running_server(url) as srv, aiohttp.ClientSession() as http:
        await _ready(http, srv)
        requests: list[tuple[str, str, str, Any]] = [
            # Tokens checked against the database (the authenticator cannot reach it)...
            ("GET", "/api/conversations", ids["portal"], None),
            ("GET", f"/api/conversations/{ids['conv']}", ids["staff"], None),
            # ...and the service key, checked without it: the handler's query fails.
            ("POST", "/api/admin/customers", srv.service_key, {"name": "c"}),
            (
                "POST",
                "/api/messages/realtime/subscribe",
                srv.service_key,
                {"conversationId": str(ids["conv"])},
            ),
            ("POST", "/rest/v1/rpc/cleanup_expired_typing_indicators", srv.service_key, {}),
        ]
        async with outage(pg):
            for method, path, token, body in requests:
                _assert_unavailable(await _call(http, srv, method, path, token, body), path)
        await _ready(http, srv)
        status, _, _, raw = await _call(
            http, srv, "POST", "/api/admin/customers", srv.service_key, {"name": "c"}
        )
        assert status == 201, raw


async def test_a_request_cut_off_mid_flight_gets_the_envelope(
    pg: EmbeddedPostgres, url: str
) -> None:
    """An update waiting on a row lock when the database shuts down: the handler's connection
    dies under it (and so does the rollback on the way out). The lock is a prepared
    transaction's, which the shutdown does not release: with a session's, the update could be
    granted the lock and commit in the instant between the session's end and its own."""
    ids = await _seed(url)
    async with running_server(url) as srv, aiohttp.ClientSession() as http:
        await _ready(http, srv)
        locker = await asyncpg.connect(url)
        watcher = await asyncpg.connect(url)
        prepared = False
        try:
            await locker.execute("BEGIN")
            await locker.execute(
                "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", ids["conv"]
            )
            await locker.execute("PREPARE TRANSACTION 'rtm-outage-lock'")
            prepared = True
            update = asyncio.create_task(
                _call(
                    http,
                    srv,
                    "PATCH",
                    f"/api/conversations/{ids['conv']}",
                    ids["staff"],
                    {"subject": "cut off"},
                )
            )
            async with asyncio.timeout(20):
                while not await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'UPDATE public.conversations%'"
                ):
                    await asyncio.sleep(POLL)
            async with outage(pg):
                async with asyncio.timeout(20):
                    reply = await update
                _assert_unavailable(reply, "PATCH cut off")
        finally:
            locker.terminate()
            watcher.terminate()
            if prepared:
                release = await asyncpg.connect(url)
                try:
                    await release.execute("ROLLBACK PREPARED 'rtm-outage-lock'")
                finally:
                    await release.close()
        await _ready(http, srv)


class _Attempts(logging.Handler):
    """Wakes the test at each warning of the change feed (a failed reconnect)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()


async def _accepting(url: str) -> float:
    """The loop time at which PostgreSQL first accepts a connection."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=1)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(POLL)
            continue
        accepted = loop.time()
        await conn.close()
        return accepted


async def test_readiness_returns_within_a_second_of_the_database(
    pg: EmbeddedPostgres, url: str
) -> None:
    """The worst case: the database comes back just after the change feed failed to reconnect,
    late in a long outage. ``/readyz`` itself always answers promptly."""
    loop = asyncio.get_running_loop()
    attempts = _Attempts()
    feed_log = logging.getLogger(FEED_LOGGER)
    async with running_server(url, feed_poll_interval=0.2) as srv, aiohttp.ClientSession() as http:
        await _ready(http, srv)
        feed_log.addHandler(attempts)
        try:
            await asyncio.to_thread(pg.stop)
            stopped = loop.time()
            try:
                async with asyncio.timeout(LONG_OUTAGE + 30):
                    while True:
                        attempts.event.clear()
                        await attempts.event.wait()
                        if loop.time() - stopped >= LONG_OUTAGE:
                            break
            finally:
                accepting = asyncio.create_task(_accepting(url))
                await asyncio.to_thread(pg.start)
            async with asyncio.timeout(20):
                accepted = await accepting
                while True:
                    asked = loop.time()
                    async with http.get(srv.http_url + "/readyz") as response:
                        answered = loop.time()
                        assert answered - asked < 1.0, "readyz took too long to answer"
                        if response.status == 200:
                            break
                        assert response.status == 503
                    await asyncio.sleep(POLL)
        finally:
            feed_log.removeHandler(attempts)
        back_after = answered - accepted
        assert back_after < READY_AGAIN_WITHIN, f"ready {back_after:.2f} s after the database"


# -- errors that are not the database's ----------------------------------------------------


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


async def _db_gone(request: web.Request) -> web.Response:
    raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")


async def test_unexpected_errors_are_500_in_the_envelope(caplog: pytest.LogCaptureFixture) -> None:
    """Whatever escapes a handler under the API prefixes is answered in the envelope (and logged
    with its traceback), not as aiohttp's plain-text page. (/rest/v1 answers PostgREST's shape:
    tests/rest/test_http.py.)"""
    app = web.Application(middlewares=[envelope_errors])
    prefixes = ("/api/x", "/realtime/v1/api/x")
    for prefix in prefixes:
        app.router.add_get(prefix + "/boom", _boom)
        app.router.add_get(prefix + "/db", _db_gone)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}") as http:
            for prefix in prefixes:
                with caplog.at_level(logging.ERROR):
                    caplog.clear()
                    async with http.get(prefix + "/boom") as response:
                        assert response.status == 500, prefix
                        assert response.content_type == "application/json", prefix
                        body = json.loads(await response.read())
                    assert body["success"] is False and body["version"] == "v1"
                    assert body["error"] == {
                        "code": "internal_error",
                        "message": "the server could not complete the request",
                    }
                    (logged,) = [r for r in caplog.records if r.exc_info]
                    assert isinstance(logged.exc_info[1], RuntimeError)  # type: ignore[index]
                async with http.get(prefix + "/db") as response:
                    _assert_unavailable(
                        (
                            response.status,
                            response.content_type,
                            dict(response.headers),
                            await response.read(),
                        ),
                        prefix,
                    )
    finally:
        await runner.cleanup()
