"""HTTP conventions shared by every endpoint: the response envelope and its errors, and what
counts as the database being away."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from .auth import AuthUnavailable


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def ok(data: Any, *, status: int = 200) -> web.Response:
    body = {"success": True, "version": "v1", "timestamp": _now(), "data": data}
    return web.json_response(body, status=status, dumps=_dumps)


def error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    body = {
        "success": False,
        "version": "v1",
        "timestamp": _now(),
        "error": {"code": code, "message": message},
    }
    return web.json_response(body, status=status, dumps=_dumps, headers=headers)


#: Seconds a client is told to wait (``Retry-After``) while the database is away; readiness
#: returns within a second of the database (docs/api.md).
RETRY_AFTER_UNAVAILABLE = 2
UNAVAILABLE_MESSAGE = "the database is unavailable; retry shortly"
INTERNAL_MESSAGE = "the server could not complete the request"

#: SQLSTATEs that say the database is away rather than that the request is wrong: class 08
#: (connection exceptions), the server shutting down, crashing or still starting up
#: (57P01-57P03), no connection slot left (53300).
_AWAY_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is away (down, restarting, unreachable, full): the same
    request may well succeed in a moment, so it is a 503, not a 500.

    OSError covers a refused or vanished socket and a timed-out connect (TimeoutError);
    asyncpg's InterfaceError a connection found closed (``connection is closed``).
    """
    if isinstance(exc, (AuthUnavailable, OSError, asyncpg.InterfaceError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state.startswith("08") or state in _AWAY_STATES
    return False


def retry_after() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_UNAVAILABLE)}


def unavailable() -> web.Response:
    """503 ``unavailable`` with ``Retry-After``: the database is away, retry shortly."""
    return error(503, "unavailable", UNAVAILABLE_MESSAGE, headers=retry_after())


def internal_error() -> web.Response:
    """500 ``internal_error``: a fault of the server's own; details go to the log, not the client."""
    return error(500, "internal_error", INTERNAL_MESSAGE)


def bearer_token(request: web.Request) -> str | None:
    """``Authorization: Bearer``, else the ``apikey`` header, else the ``apikey`` query parameter."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("apikey") or request.query.get("apikey") or None
