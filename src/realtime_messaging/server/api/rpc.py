"""``POST /rest/v1/rpc/<function>``: the five documented SQL functions, PostgREST style.

The body is a JSON object of named arguments; the function runs as the caller (so its own
checks and row-level security apply) and its result is the response body, as PostgREST returns
it (a bare JSON value, not the API envelope). Errors are PostgREST's too: ``{code, message,
details, hint}`` with the function's SQLSTATE (:mod:`..rest.errors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from aiohttp import web

from ...domain.bounds import metadata_problem
from ...store.caller import as_caller
from ..http import database_unavailable
from ..rest.errors import ERROR_SCHEMA, from_database, render
from .errors import ApiError
from .framework import Api, Context, read_json


@dataclass(frozen=True, slots=True)
class _Function:
    args: tuple[tuple[str, str, bool], ...]  # (name, SQL type, required)


FUNCTIONS: dict[str, _Function] = {
    "mark_message_as_read": _Function(
        (("message_id", "uuid", True), ("user_id", "uuid", False), ("customer_id", "uuid", False))
    ),
    "update_typing_indicator": _Function(
        (
            ("conversation_id", "uuid", True),
            ("user_id", "uuid", False),
            ("customer_id", "uuid", False),
            ("is_typing", "boolean", True),
            ("expires_in_seconds", "integer", False),
        )
    ),
    "update_user_presence": _Function(
        (
            ("user_id", "uuid", False),
            ("customer_id", "uuid", False),
            ("status", "text", True),
            ("metadata", "jsonb", False),
        )
    ),
    "get_unread_message_count": _Function(
        (("user_id", "uuid", False), ("customer_id", "uuid", False))
    ),
    "cleanup_expired_typing_indicators": _Function(()),
}


_JSON_TYPES = {
    "uuid": {"type": "string", "format": "uuid"},
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    "text": {"type": "string"},
    "jsonb": {},
}


def _arguments_schema(function: _Function) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            arg: {"anyOf": [_JSON_TYPES[sql_type], {"type": "null"}]}
            for arg, sql_type, _ in function.args
        },
        "required": [arg for arg, _, required in function.args if required],
        "additionalProperties": False,
    }


def _row(*columns: str) -> dict[str, Any]:
    """A table row as PostgREST renders it: snake_case columns, more may be added later."""
    return {"type": "object", "required": list(columns)}


#: Every result the five functions can give: a count, or the row they wrote.
RESULT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "description": "get_unread_message_count, cleanup_expired_..."},
        _row("id", "message_id", "read_at", "conversation_id"),
        _row("id", "conversation_id", "is_typing", "expires_at"),
        _row("id", "status", "last_seen_at", "metadata"),
    ]
}


def _convert(name: str, sql_type: str, value: Any) -> Any:
    if value is None:
        return None
    if sql_type == "uuid":
        if isinstance(value, str):
            try:
                return UUID(value)
            except ValueError:
                pass
        raise ApiError(400, "validation_error", f"{name}: not a UUID")
    if sql_type == "boolean":
        if isinstance(value, bool):
            return value
        raise ApiError(400, "validation_error", f"{name}: not a boolean")
    if sql_type == "integer":
        if isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31:
            return value
        raise ApiError(400, "validation_error", f"{name}: not an integer")
    if sql_type == "jsonb":
        return orjson.dumps(value).decode()
    if isinstance(value, str):
        return value
    raise ApiError(400, "validation_error", f"{name}: not a string")


async def _rate_limit(ctx: Context, name: str, args: dict[str, Any]) -> None:
    """The same limit as the API's endpoint for the same action, on the same key.

    The key is the caller's own participant id; the service role is counted against the
    participant it names. An anonymous caller is refused by the function itself.
    """
    caller = ctx.caller
    if caller.role == "service_role":
        participant = args.get("user_id") or args.get("customer_id")
    else:
        participant = caller.user_id or caller.customer_id
    if participant is None:
        return
    if name == "update_typing_indicator":
        await ctx.limiter.check_typing(participant, args["conversation_id"])
    elif name == "update_user_presence":
        await ctx.limiter.check_presence(participant)
    elif name == "mark_message_as_read":
        await ctx.limiter.check_read_receipts(participant)


def register(api: Api) -> None:
    @api.route(
        "POST",
        "/rest/v1/rpc/{function}",
        summary="Call one of the documented SQL functions with named arguments",
        auth="any",
        # The function's own result, as bare JSON (PostgREST), not the envelope.
        response=RESULT_SCHEMA,
        request_schema={
            "description": "The function's named arguments (which ones depends on the function)",
            "anyOf": [_arguments_schema(f) for f in FUNCTIONS.values()],
        },
        path_schemas={"function": {"enum": sorted(FUNCTIONS)}},
        tags=("rpc",),
        errors=render,
        error_schema=ERROR_SCHEMA,
    )
    async def rpc(ctx: Context, _: None) -> web.Response:
        name = ctx.path_param("function")
        function = FUNCTIONS.get(name)
        if function is None:
            raise ApiError(404, "not_found", f"function {name} not found")
        body = await read_json(ctx.request, ctx.limits)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_body", "the body must be an object of named arguments")
        known = {arg for arg, _, _ in function.args}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ApiError(400, "validation_error", f"unknown argument(s): {', '.join(unknown)}")
        names: list[str] = []
        args: dict[str, Any] = {}
        for arg, sql_type, required in function.args:
            if arg not in body:
                if required:
                    raise ApiError(400, "validation_error", f"{arg}: required")
                if sql_type != "uuid":
                    continue  # let the function's default apply
            names.append(f"{arg} => ${len(args) + 1}::{sql_type}")
            args[arg] = _convert(arg, sql_type, body.get(arg))
        metadata = body.get("metadata")
        if metadata is not None:
            problem = metadata_problem(metadata, ctx.limits)
            if problem is not None:
                raise ApiError(422, "validation_error", f"metadata: {problem}")
        await _rate_limit(ctx, name, args)
        # to_jsonb: whatever the function returns (a scalar, a row, void) comes out as JSON, as
        # PostgREST renders it.
        sql = f"SELECT to_jsonb(public.{name}({', '.join(names)}))::text"
        async with ctx.pool.acquire() as conn:
            try:
                async with as_caller(conn, ctx.caller):
                    result = await conn.fetchval(sql, *args.values())
            except asyncpg.PostgresError as exc:
                if database_unavailable(exc):
                    raise
                raise from_database(exc, anonymous=ctx.caller.role == "anon") from exc
        return web.Response(text=result or "null", content_type="application/json")
