"""``/rest/v1/<table>``: select, insert, upsert, update and delete, PostgREST style, run as the
caller under row-level security (docs/rest.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from ...store.caller import as_caller
from ..api.framework import Api, Context, read_json
from ..http import database_unavailable
from . import sql
from .errors import ERROR_SCHEMA, RestError, from_database, from_query_error, render
from .query import MAX_ROWS, Prefer, Query, QueryError, parse_prefer, parse_query

OBJECT = "application/vnd.pgrst.object+json"
PATH = "/rest/v1/{table}"

_ROWS_SCHEMA: dict[str, Any] = {
    "description": "the rows, or one row as an object with Accept: " + OBJECT,
    "anyOf": [{"type": "array", "items": {"type": "object"}}, {"type": "object"}],
}
_BODY_SCHEMA: dict[str, Any] = {
    "description": "one row or an array of rows, as objects of column values",
    "anyOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}],
}


def _table(ctx: Context, catalog: sql.Catalog) -> sql.Table:
    name = ctx.path_param("table")
    table = catalog.get(name)
    if table is None:
        raise RestError(
            404, "PGRST205", f"Could not find the table 'public.{name}' in the schema cache"
        )
    for header in ("Accept-Profile", "Content-Profile"):
        schema = ctx.request.headers.get(header)
        if schema is not None and schema != "public":
            raise RestError(
                406,
                "PGRST106",
                f"Invalid schema: {schema}",
                hint="Only the following schemas are exposed: public",
            )
    return table


def _query(ctx: Context, *, ranged: bool = False) -> Query:
    try:
        return parse_query(
            ctx.request.query.items(),
            range_header=ctx.request.headers.get("Range") if ranged else None,
        )
    except QueryError as exc:
        raise from_query_error(exc) from exc


def _prefer(ctx: Context) -> Prefer:
    return parse_prefer(ctx.request.headers.getall("Prefer", []))


def _single(ctx: Context) -> bool:
    return OBJECT in ctx.request.headers.get("Accept", "")


def _build(build: Callable[[], sql.Statement]) -> sql.Statement:
    try:
        return build()
    except QueryError as exc:
        raise from_query_error(exc) from exc


async def _run(ctx: Context, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    """``work`` in one transaction as the caller; PostgreSQL's errors as PostgREST's."""
    async with ctx.pool.acquire() as conn:
        try:
            async with as_caller(conn, ctx.caller):
                return await work(conn)
        except asyncpg.PostgresError as exc:
            if database_unavailable(exc):
                raise
            raise from_database(exc, anonymous=ctx.caller.role == "anon") from exc


async def _execute(conn: asyncpg.Connection, statement: sql.Statement) -> tuple[str | None, int]:
    """(the rows as JSON array text, how many), or (None, how many) for ``return=minimal``."""
    rows, n, _ = await _execute_write(conn, statement)
    return rows, n


async def _execute_write(
    conn: asyncpg.Connection, statement: sql.Statement
) -> tuple[str | None, int, int | None]:
    """As :func:`_execute`, and how many rows an upsert inserted (None: not an upsert)."""
    if statement.rows:
        row = await conn.fetchrow(statement.sql, *statement.args)
        assert row is not None
        return row[0], row[1], row[2] if len(row) > 2 else None
    status: str = await conn.execute(statement.sql, *statement.args)
    return None, int(status.rsplit(" ", 1)[-1]), None


def _check_single(single: bool, n: int) -> None:
    """``.single()``: exactly one row, else 406 PGRST116 (and the transaction rolls back)."""
    if single and n != 1:
        raise RestError(
            406,
            "PGRST116",
            "Cannot coerce the result to a single JSON object",
            details=f"The result contains {n} rows",
        )


def _respond(
    rows: str | None, *, single: bool, status: int, content_range: str, empty: int | None = None
) -> web.Response:
    """The rows (or with ``return=minimal`` no body: ``empty``, by default 204 for a 200)."""
    headers = {"Content-Range": content_range}
    if rows is None:
        if empty is None:
            empty = 204 if status == 200 else status
        return web.Response(status=empty, headers=headers)
    body = rows
    if single:
        body = orjson.dumps(orjson.loads(rows)[0]).decode()
    return web.Response(
        text=body,
        status=status,
        content_type=OBJECT if single else "application/json",
        charset="utf-8",
        headers=headers,
    )


def _range(offset: int, n: int, total: int | None) -> str:
    of = "*" if total is None else str(total)
    return f"{offset}-{offset + n - 1}/{of}" if n else f"*/{of}"


def _rows_of(body: Any) -> list[dict[str, Any]]:
    rows = body if isinstance(body, list) else [body]
    if not all(isinstance(row, dict) for row in rows):
        raise RestError(400, "PGRST102", "Empty or invalid json", details="rows must be objects")
    if len(rows) > MAX_ROWS:
        raise RestError(400, "PGRST102", f"at most {MAX_ROWS} rows per request")
    return rows


def register(api: Api, catalog: sql.Catalog) -> None:
    """The four routes of ``/rest/v1/<table>`` (GET answers HEAD too)."""
    common: dict[str, Any] = {
        "auth": "any",
        "tags": ("rest",),
        "errors": render,
        "error_schema": ERROR_SCHEMA,
        "path_schemas": {"table": {"enum": sorted(catalog)}},
    }

    @api.route(
        "GET",
        PATH,
        summary="Read rows (PostgREST select); 206 for part of a counted range",
        response=_ROWS_SCHEMA,
        also_statuses=(206,),
        **common,
    )
    async def rest_select(ctx: Context, _: None) -> web.Response:
        table = _table(ctx, catalog)
        query = _query(ctx, ranged=True)
        prefer, single = _prefer(ctx), _single(ctx)
        read = _build(lambda: sql.read(table, query))
        counting = sql.count(table, query) if prefer.count else None

        async def work(conn: asyncpg.Connection) -> tuple[str | None, int, int | None]:
            rows, n = await _execute(conn, read)
            total = None
            if counting is not None:
                total = await conn.fetchval(counting.sql, *counting.args)
            _check_single(single, n)
            return rows, n, total

        rows, n, total = await _run(ctx, work)
        status = 200
        if total is not None:
            if query.offset > total:
                raise RestError(
                    416,
                    "PGRST103",
                    "Requested range not satisfiable",
                    details=f"An offset of {query.offset} was requested, but there are only "
                    f"{total} rows.",
                    headers={"Content-Range": f"*/{total}"},
                )
            if n < total and not single:
                status = 206
        return _respond(
            rows, single=single, status=status, content_range=_range(query.offset, n, total)
        )

    @api.route(
        "POST",
        PATH,
        summary="Insert or upsert rows (PostgREST insert); the rows with "
        "Prefer: return=representation; 200 for an upsert that inserted none",
        response=_ROWS_SCHEMA,
        status=201,
        also_statuses=(200,),
        empty_statuses=(201,),
        request_schema=_BODY_SCHEMA,
        **common,
    )
    async def rest_insert(ctx: Context, _: None) -> web.Response:
        table = _table(ctx, catalog)
        query = _query(ctx)
        prefer, single = _prefer(ctx), _single(ctx)
        rows = _rows_of(await read_json(ctx.request, ctx.limits))
        # An empty array writes nothing and answers an empty one (PostgREST's), no statement.
        statement = (
            _build(
                lambda: sql.insert(
                    table,
                    query,
                    rows,
                    representation=prefer.representation,
                    merge=prefer.merge_duplicates,
                    ignore=prefer.ignore_duplicates,
                )
            )
            if rows
            else None
        )

        async def work(conn: asyncpg.Connection) -> tuple[str | None, int, int | None]:
            empty: tuple[str | None, int, int | None] = ("[]", 0, None)
            result = empty if statement is None else await _execute_write(conn, statement)
            _check_single(single, result[1])
            return result

        written, n, inserted = await _run(ctx, work)
        if not prefer.representation:
            written = None
        total = str(n) if prefer.count else "*"
        # An upsert (merge-duplicates) that inserted nothing answers 200, body or not, as
        # PostgREST does; any other insert 201.
        status = 200 if prefer.merge_duplicates and not inserted else 201
        return _respond(
            written, single=single, status=status, content_range=f"*/{total}", empty=status
        )

    async def _change(
        ctx: Context, build: Callable[[sql.Table, Query, bool], sql.Statement]
    ) -> web.Response:
        table = _table(ctx, catalog)
        query = _query(ctx)
        prefer, single = _prefer(ctx), _single(ctx)
        statement = _build(lambda: build(table, query, prefer.representation))

        async def work(conn: asyncpg.Connection) -> tuple[str | None, int]:
            result = await _execute(conn, statement)
            _check_single(single, result[1])
            return result

        changed, n = await _run(ctx, work)
        content_range = _range(0, n, n if prefer.count else None)
        return _respond(changed, single=single, status=200, content_range=content_range)

    @api.route(
        "PATCH",
        PATH,
        summary="Update the rows the filters select (PostgREST update)",
        response=_ROWS_SCHEMA,
        empty_statuses=(204,),
        request_schema={"type": "object", "description": "column values to set"},
        **common,
    )
    async def rest_update(ctx: Context, _: None) -> web.Response:
        patch = await read_json(ctx.request, ctx.limits)
        if not isinstance(patch, dict):
            raise RestError(400, "PGRST102", "Empty or invalid json", details="expected an object")
        if not patch:
            _table(ctx, catalog)
            _query(ctx)
            return _respond(
                "[]" if _prefer(ctx).representation else None,
                single=False,
                status=200,
                content_range="*/*",
            )
        return await _change(
            ctx, lambda table, query, rep: sql.update(table, query, patch, representation=rep)
        )

    @api.route(
        "DELETE",
        PATH,
        summary="Delete the rows the filters select (PostgREST delete)",
        response=_ROWS_SCHEMA,
        empty_statuses=(204,),
        **common,
    )
    async def rest_delete(ctx: Context, _: None) -> web.Response:
        # A body (supabase-py sends {}) is ignored, as PostgREST does.
        return await _change(
            ctx, lambda table, query, rep: sql.delete(table, query, representation=rep)
        )
