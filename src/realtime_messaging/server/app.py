"""The composition root: builds the aiohttp application from settings and runs it."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import signal
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

from .. import __version__
from ..broker import Broker, LocalBroker
from ..config import Settings
from ..exceptions import ConfigurationError
from ..keys import anon_key, load_or_create_secret
from ..storage import open_storage
from ..store.changefeed import Change, ChangeFeed
from ..store.database import SERVER_SETTINGS, Database
from ..store.liveness import other_live_processes
from . import access, rest
from .api import admin, edits, messaging, queues, rpc, search
from .api import attachments as attachments_api
from .api import webhooks as webhooks_api
from .api.framework import Api, openapi
from .api.ratelimit import Limits, RateLimiter
from .auth import Authenticator
from .broadcast_api import BroadcastApi
from .broadcast_api import openapi_paths as broadcast_openapi_paths
from .cors import Cors
from .http import database_unavailable, error, internal_error, unavailable
from .listen import BACKLOG, banner, base_url, bound_socket, reload_certificate, tls_context
from .liveness import LivenessPolicy, LivenessTracker
from .maintenance import Maintenance
from .metrics import Metrics
from .pgchanges import ChangeRouter, load_tables
from .public_url import PublicUrl, listen_url
from .purge import PurgeWorker
from .realtime import RealtimeServer
from .realtime.frontdoor import Doors
from .supervisor import serve_as_worker
from .web import WebAssets
from .webhooks import WebhookWorker

DB_POOL: web.AppKey[asyncpg.Pool] = web.AppKey("db_pool", asyncpg.Pool)
FEED: web.AppKey[ChangeFeed] = web.AppKey("feed", ChangeFeed)
REALTIME: web.AppKey[RealtimeServer] = web.AppKey("realtime", RealtimeServer)

log = logging.getLogger(__name__)

#: Paths whose every error is answered in the envelope: the API and REST broadcast. (``/rest/v1``
#: answers PostgREST's error shape: :func:`.rest.postgrest_errors`.)
ENVELOPED = ("/api/", "/realtime/v1/api/")
#: The longest the change feed waits between attempts to reconnect (give or take half, as
#: jitter), so that readiness returns within a second of the database (docs/api.md). An attempt
#: is one connection: cheap even against a database that is down for long.
FEED_MAX_BACKOFF = 0.5
#: ``/readyz`` answers within this long even when no pool connection answers (a dead one, or
#: none to be had): waiting is not an answer a load balancer can use.
READY_CHECK_TIMEOUT = 0.5


@web.middleware
async def envelope_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error under :data:`ENVELOPED` in the envelope, never aiohttp's plain-text page:
    aiohttp's own (unknown route, wrong method, body too large), the database away (503
    ``unavailable``, retry), and anything unexpected (500 ``internal_error``, logged with its
    traceback)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith(ENVELOPED):
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status, "bad_request"
        )
        message = exc.text if exc.status == 413 and exc.text else exc.reason
        return error(exc.status, code, message)
    except Exception as exc:
        if not request.path.startswith(ENVELOPED):
            raise
        if database_unavailable(exc):
            log.warning("database unavailable in %s %s: %r", request.method, request.path, exc)
            return unavailable()
        log.exception("error in %s %s", request.method, request.path)
        return internal_error()


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers and the change feed is connected; answered within
    :data:`READY_CHECK_TIMEOUT` (docs/api.md)."""
    try:
        # The bound covers getting a connection too (asyncpg's query timeout does not).
        async with asyncio.timeout(READY_CHECK_TIMEOUT):
            await request.app[DB_POOL].fetchval("SELECT 1")
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc) or f"the database did not answer within {READY_CHECK_TIMEOUT} s"
        return web.json_response({"status": "unavailable", "reason": reason}, status=503)
    if not request.app[FEED].live.is_set():
        return web.json_response(
            {"status": "unavailable", "reason": "change feed down"}, status=503
        )
    # A process cut off from Redis still serves its own clients: it stays in rotation, and
    # says so (docs/realtime.md, "Several processes").
    broker = request.app[REALTIME].broker.status()
    state = "local" if broker.name == "local" else "up" if broker.up else "degraded"
    return web.json_response({"status": "ok", "broker": state})


def _broker(settings: Settings, database_url: str, process_id: str) -> Broker:
    """The broker the settings name; its library is imported only when it is used."""
    try:
        kind = settings.broker_kind
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if kind == "redis":
        from ..broker.redis import RedisBroker
        from ..broker.redis_cluster import RedisClusterBroker
        from ..broker.redis_urls import is_cluster_url

        assert settings.redis_url is not None
        if is_cluster_url(settings.redis_url):
            return RedisClusterBroker(settings.redis_url, process_id)
        return RedisBroker(settings.redis_url, process_id)
    if kind == "postgres":
        from ..broker.postgres import PostgresBroker

        return PostgresBroker(database_url, process_id)
    return LocalBroker(process_id)


async def _warn_if_not_alone(pool: asyncpg.Pool, process_id: str, dead_after: float) -> None:
    """Several processes on one database without a broker between them serve their clients
    apart (a broadcast on one never reaches the other): say so, with the fix."""
    async with pool.acquire() as conn:
        others = await other_live_processes(conn, process_id, dead_after)
    if others:
        log.warning(
            "%d other server process(es) use this database, but RTM_BROKER is local: "
            "broadcasts and presence will not cross between them. Set RTM_REDIS_URL, or "
            "RTM_BROKER=postgres on every process (docs/deployment.md)",
            others,
        )


async def build_app(
    settings: Settings,
    pool: asyncpg.Pool,
    database_url: str,
    secret: str,
    *,
    bound_url: str | None = None,
) -> web.Application:
    """Wire every part; the only place that knows them all. ``bound_url``: where the server
    listens (the port actually bound), the public URL unless ``settings.public_url`` is set."""
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
    broker = _broker(settings, database_url, process_id)
    realtime = RealtimeServer(settings, authenticator, broker, router, pool, liveness, limiter)
    metrics = Metrics(realtime, router)

    def route(changes: Sequence[Change]) -> None:
        router.route(changes)
        realtime.presence_changed(changes)

    feed = ChangeFeed(
        database_url,
        metrics.observing(route),
        retention_seconds=settings.change_retention_seconds,
        poll_interval=settings.feed_poll_interval,
        max_backoff=FEED_MAX_BACKOFF,
    )
    metrics.watch(feed)
    realtime.feed_position = lambda: feed.position or 0
    maintenance = Maintenance(
        pool,
        typing_interval=settings.typing_cleanup_interval,
        delivery_deadline=settings.delivery_deadline_seconds,
        delivery_interval=min(30.0, settings.delivery_deadline_seconds / 2),
    )
    api = Api(authenticator, pool, limiter, liveness.participant_activity, settings.input_limits)
    public_url = PublicUrl.configured(
        settings.public_url or bound_url or listen_url(settings.host, settings.port),
        trust_proxy_headers=settings.trust_proxy_headers,
    )
    queues.register(api)  # before messaging: /api/conversations/counts is no {id}
    search.register(api)
    messaging.register(
        api,
        anon_key=anon_key(secret),
        max_message_bytes=settings.max_message_bytes,
        public_url=public_url,
    )
    await edits.apply_edit_window(pool, settings.edit_window_seconds)
    edits.register(api, max_message_bytes=settings.max_message_bytes)
    admin.register(api, secret=secret)
    webhooks_api.register(api, settings.webhooks)
    hooks = (
        WebhookWorker(pool, database_url, settings.webhooks) if settings.webhooks.enabled else None
    )
    if hooks is not None:
        metrics.watch_webhooks(hooks.stats)
    storage = await open_storage(settings.data_dir, settings.files.s3)
    downloads = attachments_api.register(
        api, storage=storage, settings=settings.files, secret=secret, public_url=public_url
    )
    purge = PurgeWorker(pool, storage, settings.files)
    metrics.watch_purge(purge.stats)
    rpc.register(api)
    await rest.register(api, pool)
    app.middlewares.append(metrics.middleware)
    app.middlewares.append(envelope_errors)
    app.middlewares.append(rest.postgrest_errors)
    Cors(settings.cors_origins).install(app)
    access.install(app)
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
    app.router.add_routes(downloads)
    web_assets = WebAssets(public_url, anon_key(secret), embed_origins=settings.embed_origins)
    app.router.add_routes(web_assets.routes())

    spec: dict[str, Any] = {}

    async def openapi_json(request: web.Request) -> web.Response:
        # Built on first request: generating the schemas is most of build_app's time, and
        # every start would pay it before serving (issue 16).
        if not spec:
            spec.update(openapi(api, title="realtime-messaging", version=__version__))
            spec["paths"].update(broadcast_openapi_paths())
            attachments_api.document(spec)
        return web.json_response(spec)

    app.router.add_get("/openapi.json", openapi_json)

    async def start(app: web.Application) -> None:
        await liveness.start()
        if isinstance(broker, LocalBroker):
            await _warn_if_not_alone(pool, process_id, settings.process_dead_after)
        await realtime.start()
        await feed.start()
        await maintenance.start()
        if hooks is not None:
            await hooks.start()
        await purge.start()

    async def stop(app: web.Application) -> None:
        await purge.stop()
        if hooks is not None:
            await hooks.stop()
        await maintenance.stop()
        await feed.stop()
        await realtime.stop()
        await liveness.stop()
        await limiter.close()
        await storage.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return app


@dataclass(frozen=True, slots=True)
class Running:
    """A started server."""

    url: str
    runner: web.AppRunner
    listener: asyncio.Server
    doors: Doors
    pool: asyncpg.Pool
    #: The TLS context new connections are served with (None: plain http and ws).
    tls: ssl.SSLContext | None = None
    #: Opening pool connections while the server starts (:func:`_warm`).
    warming: asyncio.Task[None] | None = None

    def reload(self, settings: Settings) -> None:
        """SIGHUP to one process (``systemctl reload``): read the TLS certificate and key again,
        for a renewed certificate without a restart. Nothing else is reloaded: the settings are
        read at start (under ``--workers`` the supervisor replaces the workers instead)."""
        if self.tls is None or settings.tls_cert is None or settings.tls_key is None:
            log.info("SIGHUP: nothing to reload (settings are read at start)")
            return
        try:
            reload_certificate(self.tls, settings.tls_cert, settings.tls_key)
        except ConfigurationError as exc:
            log.error(
                "SIGHUP: TLS certificate not reloaded, still serving the previous one: %s", exc
            )
            return
        log.info("SIGHUP: TLS certificate reloaded from %s", settings.tls_cert)

    async def close(self) -> None:
        """Drain: stop listening (new connections go to the other workers), close idle
        keep-alive connections, close the WebSockets with 1012 (``on_shutdown``), let requests
        in flight finish within the runner's shutdown timeout, then release the pool."""
        self.listener.close()
        self.doors.close_waiting()
        if self.warming is not None:
            self.warming.cancel()
        server = self.runner.server
        if server is not None:
            await asyncio.sleep(0)  # requests already received start being handled
            # Close the connections waiting for their next request. aiohttp (3.14) means to
            # close them before on_shutdown but only stops reading them, and closes them after
            # it: a request sent on one while the WebSockets drain would wait seconds, then be
            # cut off unanswered, instead of going to another worker at once.
            for conn in server.connections:
                if not conn._request_in_progress:
                    conn.force_close()
        await self.runner.cleanup()
        try:
            await asyncio.wait_for(self.pool.close(), 10)
        except TimeoutError:  # a connection never released: drop them all
            self.pool.terminate()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released pool connections skip asyncpg's default reset (``RESET ALL``, ``UNLISTEN *``…,
    a second round trip per query): queries here set their role and claims per transaction
    (``as_caller``) and leave no session state. An open transaction is still rolled back."""


async def start(
    settings: Settings, database_url: str, secret: str, *, worker: bool = False
) -> Running:
    """Start serving on ``settings.host:port`` (port 0: any free port) and return at once;
    https/wss when ``settings`` name a TLS certificate.

    ``worker``: one of the processes of ``rtm serve --workers``: the port is shared with the
    others (SO_REUSEPORT), and every response names the process that answered in an
    ``X-Rtm-Worker`` header (its pid), for operators and tests."""
    ssl_context = tls_context(settings.tls_cert, settings.tls_key)
    pool = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=10,
        reset=_keep_session,
        server_settings=dict(SERVER_SETTINGS),
    )
    warming = asyncio.create_task(_warm(pool), name="rtm-pool-warm-up")
    # Bound first: with port 0 the public URL's port is only known from the socket. It
    # listens when the site starts, once everything is built.
    sock = bound_socket(settings.host, settings.port, reuse_port=worker)
    try:
        url = base_url(settings.host, sock.getsockname()[1], tls=ssl_context is not None)
        app = await build_app(settings, pool, database_url, secret, bound_url=url)
        named: dict[str, str] = {}
        if worker:
            named["X-Rtm-Worker"] = str(os.getpid())

            async def name_worker(request: web.Request, response: web.StreamResponse) -> None:
                response.headers.update(named)

            app.on_response_prepare.append(name_worker)
        # Requests in flight at shutdown get half the graceful timeout: the rest is for the
        # WebSockets, the change feed and the pool, before a supervisor's SIGKILL.
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=settings.graceful_timeout / 2,
        )
        await runner.setup()
        assert runner.server is not None
        # Every connection starts at a front door: a WebSocket upgrade goes to picows, the
        # rest to aiohttp (realtime/frontdoor.py).
        doors = Doors(
            runner.server,
            app[REALTIME].admit,
            max_frame_bytes=settings.max_frame_bytes,
            response_headers=named,
        )
        listener = await asyncio.get_running_loop().create_server(
            doors, sock=sock, backlog=BACKLOG, ssl=ssl_context
        )
    except BaseException:
        warming.cancel()
        sock.close()
        pool.terminate()
        raise
    return Running(url, runner, listener, doors, pool, ssl_context, warming)


#: Pool connections opened in the background while the server starts, besides the one the
#: pool opens itself.
WARM_CONNECTIONS = 4


async def _warm(pool: asyncpg.Pool) -> None:
    """Open a few more pool connections while the rest of the server is built, without
    holding the start up.

    A restarted process meets its clients' rejoins at once: their token, conversation, staff
    and replay look-ups go out as concurrent batches, and each opened a connection of its own
    first (about 100 ms here, benchmarks/README.md, "SDK metrics", later on 2026-12-06). All
    are asked for in the same turn, so each takes a holder of its own; the one already open is
    handed back at once. Idle ones close after asyncpg's idle lifetime (5 minutes).
    """

    async def touch() -> None:
        async with pool.acquire():
            pass

    touches = [touch() for _ in range(WARM_CONNECTIONS + 1)]
    for outcome in await asyncio.gather(*touches, return_exceptions=True):
        if isinstance(outcome, Exception):
            log.debug("pool warm-up: %s", outcome)


async def serve(settings: Settings, db: Database, *, link: socket.socket | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then drain (:meth:`Running.close`).

    Alone, migrate first and print the banner. As a worker of ``rtm serve --workers`` (``link``:
    its end of a socket pair with the supervisor), the supervisor has done both: share the
    port, say when serving over ``link``, and stop when the supervisor is gone."""
    if link is None:
        await db.migrate()
    secret = load_or_create_secret(settings)
    running = await start(settings, db.url, secret, worker=link is not None)
    # Everything built so far lives as long as the process: keep the collector off it, and
    # collect young objects less often. Measured: full collections while 10,000 sockets
    # connected paused the loop for up to half a second (benchmarks/README.md). ``rtm serve``
    # keeps the collector off during the start: on again from here.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    gc.enable()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watch: asyncio.Task[None] | None = None
    if link is None:
        print(banner(running.url, db.url, secret), flush=True)
        loop.add_signal_handler(signal.SIGHUP, running.reload, settings)
    else:
        # SIGHUP is the supervisor's (it replaces the workers): a terminal's hangup, sent to
        # the whole process group, must not kill the workers without a drain.
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        watch = asyncio.create_task(serve_as_worker(link, stop))
    try:
        await stop.wait()
    finally:
        if watch is not None:
            watch.cancel()
        await running.close()
