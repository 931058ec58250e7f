"""The composition root: builds the aiohttp application from settings and runs it."""

from __future__ import annotations

import asyncio
import gc
import secrets
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

from .. import __version__
from ..broker import LocalBroker
from ..config import Settings
from ..keys import anon_key, load_or_create_secret, service_role_key
from ..store.changefeed import Change, ChangeFeed
from ..store.database import Database
from .api import admin, messaging, rpc
from .api.framework import Api, openapi
from .api.ratelimit import Limits, RateLimiter
from .auth import Authenticator
from .broadcast_api import BroadcastApi
from .http import error
from .liveness import LivenessPolicy, LivenessTracker
from .maintenance import Maintenance
from .metrics import Metrics
from .pgchanges import ChangeRouter, load_tables
from .realtime import RealtimeServer

DB_POOL: web.AppKey[asyncpg.Pool] = web.AppKey("db_pool", asyncpg.Pool)
FEED: web.AppKey[ChangeFeed] = web.AppKey("feed", ChangeFeed)
REALTIME: web.AppKey[RealtimeServer] = web.AppKey("realtime", RealtimeServer)


@web.middleware
async def envelope_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (unknown route, wrong method, body too large) in the API envelope."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith(("/api/", "/rest/")):
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status, "bad_request"
        )
        message = exc.text if exc.status == 413 and exc.text else exc.reason
        return error(exc.status, code, message)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers and the change feed is connected."""
    try:
        await request.app[DB_POOL].fetchval("SELECT 1", timeout=2)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return web.json_response({"status": "unavailable", "reason": str(exc)}, status=503)
    if not request.app[FEED].live.is_set():
        return web.json_response(
            {"status": "unavailable", "reason": "change feed down"}, status=503
        )
    return web.json_response({"status": "ok"})


async def build_app(
    settings: Settings, pool: asyncpg.Pool, database_url: str, secret: str
) -> web.Application:
    """Wire every part; the only place that knows them all."""
    app = web.Application(client_max_size=settings.max_frame_bytes)
    router = ChangeRouter(await load_tables(pool))
    authenticator = Authenticator(secret, pool)
    limits = Limits(
        typing=settings.rate_typing,
        presence=settings.rate_presence,
        read_receipts=settings.rate_read_receipts,
        requests=settings.rate_requests,
    )
    limiter = RateLimiter(limits, settings.redis_url)
    process_id = secrets.token_hex(8)
    liveness = LivenessTracker(
        pool,
        process_id,
        LivenessPolicy(
            away_after=settings.presence_away_after,
            grace=settings.presence_grace,
            heartbeat_interval=settings.process_heartbeat_interval,
            dead_after=settings.process_dead_after,
            settle_interval=settings.presence_settle_interval,
        ),
    )
    realtime = RealtimeServer(
        settings, authenticator, LocalBroker(), router, pool, liveness, limiter
    )
    metrics = Metrics(realtime, router)

    def route(changes: Sequence[Change]) -> None:
        router.route(changes)
        realtime.presence_changed(changes)

    feed = ChangeFeed(
        database_url,
        metrics.observing(route),
        retention_seconds=settings.change_retention_seconds,
        poll_interval=settings.feed_poll_interval,
    )
    metrics.watch(feed)
    realtime.feed_position = lambda: feed.position or 0
    maintenance = Maintenance(
        pool,
        typing_interval=settings.typing_cleanup_interval,
        delivery_deadline=settings.delivery_deadline_seconds,
        delivery_interval=min(30.0, settings.delivery_deadline_seconds / 2),
    )
    api = Api(authenticator, pool, limiter, liveness.participant_activity)
    messaging.register(api, anon_key=anon_key(secret), max_message_bytes=settings.max_message_bytes)
    admin.register(api, secret=secret)
    rpc.register(api)
    spec = openapi(api, title="realtime-messaging", version=__version__)
    app.middlewares.append(metrics.middleware)
    app.middlewares.append(envelope_errors)
    app[DB_POOL] = pool
    app[FEED] = feed
    app[REALTIME] = realtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics.handler)
    app.router.add_get("/realtime/v1/websocket", realtime.handle)
    app.router.add_get("/socket/websocket", realtime.handle)
    app.router.add_routes(BroadcastApi(realtime).routes())
    app.router.add_routes(api.aiohttp_routes())

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(spec)

    app.router.add_get("/openapi.json", openapi_json)

    async def start(app: web.Application) -> None:
        await liveness.start()
        await realtime.start()
        await feed.start()
        await maintenance.start()

    async def stop(app: web.Application) -> None:
        await maintenance.stop()
        await feed.stop()
        await realtime.stop()
        await liveness.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return app


@dataclass(frozen=True, slots=True)
class Running:
    url: str
    runner: web.AppRunner
    pool: asyncpg.Pool

    async def close(self) -> None:
        await self.runner.cleanup()
        try:
            await asyncio.wait_for(self.pool.close(), 10)
        except TimeoutError:  # a connection never released: drop them all
            self.pool.terminate()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released pool connections skip asyncpg's default reset (``RESET ALL``, ``UNLISTEN *``…,
    a second round trip per query): queries here set their role and claims per transaction
    (``as_caller``) and leave no session state. An open transaction is still rolled back."""


async def start(settings: Settings, database_url: str, secret: str) -> Running:
    """Start serving on ``settings.host:port`` (port 0: any free port) and return at once."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10, reset=_keep_session)
    app = await build_app(settings, pool, database_url, secret)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    sock = socket.create_server((settings.host, settings.port), backlog=4096)
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    port = sock.getsockname()[1]
    return Running(f"http://{settings.host}:{port}", runner, pool)


async def serve(settings: Settings, db: Database) -> None:
    """Migrate, then serve until SIGINT or SIGTERM."""
    await db.migrate()
    secret = load_or_create_secret(settings)
    running = await start(settings, db.url, secret)
    # Everything built so far lives as long as the process: keep the collector off it, and
    # collect young objects less often. Measured: full collections while 10,000 sockets
    # connected paused the loop for up to half a second (benchmarks/README.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    print(
        f"realtime-messaging is running.\n"
        f"  API URL: {running.url}\n"
        f"  Realtime URL: {running.url.replace('http', 'ws', 1)}/realtime/v1/websocket\n"
        f"  DB URL: {db.url}\n"
        f"  anon key: {anon_key(secret)}\n"
        f"  service_role key: {service_role_key(secret)}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await running.close()
