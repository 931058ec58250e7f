"""The access log: one line per HTTP request, and the request id that ties a request to its
log lines (``X-Request-Id``, taken from the client when well formed, else made here, and echoed
in the response)."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Iterable
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("realtime_messaging.access")

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
#: A client's request id is kept when it is this safe: bounded, no spaces or control characters.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
#: Query parameters whose values are credentials: never logged.
SECRET_PARAMS = frozenset({"apikey", "token", "access_token"})
#: Paths a load balancer or a scraper polls every few seconds: answered, they log at debug only.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


#: Made request ids: a random prefix per process and a counter, 32 hex digits in all. They
#: need to be unique, not secret, and a random one per request cost a system call.
_PREFIX = secrets.token_hex(8)
_serial = itertools.count()


def request_id(given: str) -> str:
    """A request's id: the client's ``X-Request-Id`` (``given``) when safe, else a new one."""
    return given if _SAFE_ID.fullmatch(given) else f"{_PREFIX}{next(_serial):016x}"


def loggable_path(path: str, query: Iterable[tuple[str, str]]) -> str:
    """The path and query, with the values of :data:`SECRET_PARAMS` dropped."""
    parts = [
        f"{quote(k, safe='')}="
        if k.lower() in SECRET_PARAMS
        else f"{quote(k, safe='')}={quote(v, safe='')}"
        for k, v in query
    ]
    return f"{path}?{'&'.join(parts)}" if parts else path


def log_request(method: str, path: str, status: int, started: float, rid: str) -> None:
    """The access line of one request (``started``: its ``perf_counter`` time); probes that
    succeed log at debug only."""
    duration = round((time.perf_counter() - started) * 1000, 1)
    probe = path in PROBES and status < 400
    log.log(
        logging.DEBUG if probe else logging.INFO,
        "%s %s %d %.1fms id=%s",
        method,
        path,
        status,
        duration,
        rid,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration,
            "request_id": rid,
        },
    )


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log the request once answered (a WebSocket once closed: its line says 101 and how
    long it lived)."""
    rid = request_id(request.headers.get("X-Request-Id", ""))
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        path = loggable_path(request.path, request.query.items())
        log_request(request.method, path, status, started, rid)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``X-Request-Id`` on every response (including errors aiohttp raises)."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers["X-Request-Id"] = rid


def install(app: web.Application) -> None:
    """The access log first, so that it sees every request and its final status."""
    app.middlewares.insert(0, access_log)
    app.on_response_prepare.append(echo_request_id)
