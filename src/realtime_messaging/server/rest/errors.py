"""PostgREST's error shape for everything under ``/rest/v1``: ``{code, message, details,
hint}``, ``code`` a PostgreSQL SQLSTATE where there is one, else a ``PGRST`` code; statuses as
PostgREST maps them (docs/rest.md)."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from ..api.errors import ApiError
from ..http import INTERNAL_MESSAGE, UNAVAILABLE_MESSAGE, database_unavailable, retry_after
from .query import QueryError

log = logging.getLogger(__name__)

PREFIX = "/rest/v1/"


#: What :func:`render` answers, for the OpenAPI document.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "PostgREST's error: a SQLSTATE or PGRST code, PostgreSQL's message",
    "required": ["code", "message", "details", "hint"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "details": {"type": ["string", "null"]},
        "hint": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}


class RestError(ApiError):
    """An error with PostgREST's fields; raised by the ``/rest/v1`` handlers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: str | None = None,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, code, message, headers=headers)
        self.details = details
        self.hint = hint


def from_query_error(exc: QueryError) -> RestError:
    return RestError(exc.status, exc.code, exc.message, details=exc.details)


def _status_of(state: str, anonymous: bool) -> int:
    """PostgREST's SQLSTATE to HTTP status map (docs ``errors.rst``), with one addition: P0002,
    which the documented functions raise for a row that does not exist or is not the caller's,
    is a 404 as in the rest of the API."""
    if state == "42501":
        return 401 if anonymous else 403
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "P0001": 400,
        "P0002": 404,
        "42883": 404,
        "42P01": 404,
        "42P17": 500,
    }
    if state in exact:
        return exact[state]
    by_class = {
        "08": 503,
        "09": 500,
        "0L": 403,
        "0P": 403,
        "25": 500,
        "28": 403,
        "2D": 500,
        "38": 500,
        "39": 500,
        "3B": 500,
        "40": 500,
        "53": 503,
        "54": 500,
        "55": 500,
        "57": 500,
        "58": 500,
        "F0": 500,
        "HV": 500,
        "P0": 500,
        "XX": 500,
    }
    return by_class.get(state[:2], 400)


def from_database(exc: asyncpg.PostgresError, *, anonymous: bool) -> RestError:
    """A PostgreSQL error as PostgREST reports it: its SQLSTATE, message, detail and hint."""
    state = getattr(exc, "sqlstate", None) or "XX000"
    status = _status_of(state, anonymous)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return RestError(
        status,
        state,
        getattr(exc, "message", None) or str(exc),
        details=getattr(exc, "detail", None),
        hint=getattr(exc, "hint", None),
        headers=headers,
    )


#: The project's own error codes (raised by the shared framework: authentication, rate limits,
#: argument checks) as the nearest PostgREST / PostgreSQL code.
_CODES = {
    "unauthorized": "PGRST301",
    "forbidden": "42501",
    "not_found": "PGRST202",
    "invalid_json": "PGRST102",
    "invalid_body": "PGRST102",
    "validation_error": "22023",
    "unavailable": "PGRST001",
    "internal_error": "XX000",
    "payload_too_large": "PGRST413",
    "method_not_allowed": "PGRST117",
}


def render(exc: ApiError) -> web.Response:
    """The response for ``exc`` in PostgREST's shape (every key present, ``code`` a string).

    The API's 422 (a well-formed request with values the rules refuse) is PostgREST's 400."""
    details = exc.details if isinstance(exc, RestError) else None
    hint = exc.hint if isinstance(exc, RestError) else None
    code = exc.code if isinstance(exc, RestError) else _CODES.get(exc.code, exc.code)
    body: dict[str, Any] = {"code": code, "message": exc.message, "details": details, "hint": hint}
    headers = {"Proxy-Status": f"PostgREST; error={code}", **(exc.headers or {})}
    if exc.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return web.Response(
        body=orjson.dumps(body),
        status=400 if exc.status == 422 else exc.status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


@web.middleware
async def postgrest_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What escapes the handlers under ``/rest/v1`` (aiohttp's own 404/405/413, the database
    away, a fault of ours) in PostgREST's shape rather than the API envelope."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "PGRST125", 405: "PGRST117", 413: "PGRST413"}.get(exc.status, "PGRST000")
        message = exc.text if exc.status == 413 and exc.text else exc.reason
        return render(RestError(exc.status, code, message))
    except Exception as exc:
        if database_unavailable(exc):
            log.warning("database unavailable in %s %s: %r", request.method, request.path, exc)
            return render(RestError(503, "PGRST001", UNAVAILABLE_MESSAGE, headers=retry_after()))
        log.exception("error in %s %s", request.method, request.path)
        return render(RestError(500, "XX000", INTERNAL_MESSAGE))
