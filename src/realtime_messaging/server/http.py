"""HTTP conventions shared by every endpoint: the response envelope and its errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web


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


def bearer_token(request: web.Request) -> str | None:
    """``Authorization: Bearer``, else the ``apikey`` header, else the ``apikey`` query parameter."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("apikey") or request.query.get("apikey") or None
