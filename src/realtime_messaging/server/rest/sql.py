"""SQL for a parsed :class:`~.query.Query` on one exposed table (no I/O but :func:`load_catalog`).

Every identifier is a column of the table as read from the catalog, double-quoted; every value
is a parameter. Values travel as text and are cast to the column's own type (as PostgREST's
unknown-typed literals are), and write payloads as one ``jsonb`` through
``jsonb_populate_record[set]``, so PostgreSQL does every conversion and says what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from .query import MAX_ROWS, Filter, Logic, Node, Order, Query, QueryError

#: The tables served at ``/rest/v1/<table>`` (row-level security decides what each caller sees).
EXPOSED = (
    "conversations",
    "customer_messages",
    "message_read_receipts",
    "message_typing_indicators",
    "user_presence",
    "message_delivery_status",
    "customers",
    "users",
)

_OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_IS = {
    "null": "NULL",
    "not_null": "NOT NULL",
    "true": "TRUE",
    "false": "FALSE",
    "unknown": "UNKNOWN",
}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    #: column name -> its type as ``format_type`` spells it, in column order
    columns: dict[str, str]
    primary_key: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"public.{quote_ident(self.name)}"

    def column(self, name: str) -> str:
        """``name`` quoted, or PGRST204/42703 when the table has no such column."""
        if name not in self.columns:
            raise QueryError(
                f"column {self.name}.{name} does not exist",
                None,
                code="42703",
            )
        return quote_ident(name)

    def payload_column(self, name: str) -> str:
        if name not in self.columns:
            raise QueryError(
                f"Could not find the '{name}' column of '{self.name}' in the schema cache",
                code="PGRST204",
            )
        return quote_ident(name)


Catalog = dict[str, Table]


async def load_catalog(pool: asyncpg.Pool) -> Catalog:
    """The exposed tables' columns, types and primary keys, read once at start."""
    rows = await pool.fetch(
        """
        SELECT c.relname AS table, a.attname AS column,
               format_type(a.atttypid, a.atttypmod) AS type,
               coalesce(a.attnum = ANY(i.indkey), false) AS in_pk
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
             AND NOT a.attisdropped
        LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary
        WHERE c.relname = ANY($1::text[])
        ORDER BY c.relname, a.attnum
        """,
        list(EXPOSED),
    )
    columns: dict[str, dict[str, str]] = {}
    keys: dict[str, list[str]] = {}
    for row in rows:
        columns.setdefault(row["table"], {})[row["column"]] = row["type"]
        if row["in_pk"]:
            keys.setdefault(row["table"], []).append(row["column"])
    return {name: Table(name, columns[name], tuple(keys.get(name, ()))) for name in columns}


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL and its parameters; ``rows``: it answers one row (JSON array text, row count, and
    for an upsert how many of the rows were inserted), else it is run for its status tag
    (``INSERT 0 3``)."""

    sql: str
    args: list[Any]
    rows: bool = True

    def bind(self, params: Params) -> Statement:
        return Statement(self.sql, params.values, self.rows)


class Params:
    """Positional parameters as they are added: ``$1``, ``$2``..."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _condition(table: Table, node: Node, params: Params) -> str:
    if isinstance(node, Logic):
        joiner = " AND " if node.op == "and" else " OR "
        inner = joiner.join(_condition(table, child, params) for child in node.children)
        sql = f"({inner})"
    else:
        sql = _filter(table, node, params)
    return f"NOT {sql}" if node.negated else sql


def _filter(table: Table, f: Filter, params: Params) -> str:
    column = f"_t.{table.column(f.column)}"
    sql_type = table.columns[f.column]
    if f.op == "is":
        assert isinstance(f.value, str)
        return f"({column} IS {_IS[f.value]})"
    if f.op == "in":
        assert isinstance(f.value, tuple)
        return f"({column} = ANY(CAST({params.add(list(f.value))}::text[] AS {sql_type}[])))"
    assert isinstance(f.value, str)
    if f.op in ("like", "ilike"):
        return f"({column}::text {f.op.upper()} {params.add(f.value)}::text)"
    return f"({column} {_OPERATORS[f.op]} CAST({params.add(f.value)}::text AS {sql_type}))"


def where_clause(table: Table, query: Query, params: Params) -> str:
    if not query.where:
        return ""
    return " WHERE " + " AND ".join(_condition(table, node, params) for node in query.where)


def select_list(table: Table, query: Query, source: str = "_t") -> str:
    parts: list[str] = []
    for item in query.select:
        if item.column is None:
            parts.extend(f"{source}.{quote_ident(name)}" for name in table.columns)
        else:
            column = f"{source}.{table.column(item.column)}"
            parts.append(f"{column} AS {quote_ident(item.alias)}" if item.alias else column)
    return ", ".join(parts)


def _order(table: Table, order: tuple[Order, ...]) -> str:
    if not order:
        return ""
    terms = []
    for term in order:
        sql = f"_t.{table.column(term.column)} {'DESC' if term.descending else 'ASC'}"
        if term.nulls is not None:
            sql += f" NULLS {term.nulls.upper()}"
        terms.append(sql)
    return " ORDER BY " + ", ".join(terms)


def _as_json(inner: str) -> str:
    return f"SELECT coalesce(json_agg(_r), '[]')::text, count(*) FROM ({inner}) _r"


def read(table: Table, query: Query) -> Statement:
    """The selected rows as one JSON array, and how many; at most :data:`MAX_ROWS`."""
    params = Params()
    limit = MAX_ROWS if query.limit is None else min(query.limit, MAX_ROWS)
    sql = (
        f"SELECT {select_list(table, query)} FROM {table.qualified} AS _t"
        f"{where_clause(table, query, params)}{_order(table, query.order)}"
        f" LIMIT {limit} OFFSET {query.offset}"
    )
    return Statement(_as_json(sql), params.values)


def count(table: Table, query: Query) -> Statement:
    params = Params()
    sql = f"SELECT count(*) FROM {table.qualified} AS _t{where_clause(table, query, params)}"
    return Statement(sql, params.values)


def _writes_only(query: Query, what: str) -> None:
    """No limited writes; and, as Supabase's pg-safeupdate, no update or delete of every row."""
    if query.order or query.limit is not None or query.offset:
        raise QueryError(f"order, limit and offset are not supported on {what}")
    if not query.where:
        verb = "UPDATE" if what == "updates" else "DELETE"
        raise QueryError(
            f"{verb} requires a WHERE clause",
            "filter the rows to change (e.g. id=eq.<id>); every row at once is refused",
            code="21000",
        )


def _returning(table: Table, query: Query, statement: str, representation: bool) -> Statement:
    """The rows written as a JSON array and their number, or (``return=minimal``) the bare
    statement, whose status tag gives the number: no RETURNING, no read of the rows written."""
    if not representation:
        return Statement(statement, [], rows=False)
    sql = f"WITH _w AS ({statement} RETURNING _t.*) " + _as_json(
        f"SELECT {select_list(table, query, '_w')} FROM _w"
    )
    return Statement(sql, [], rows=True)


def insert(
    table: Table,
    query: Query,
    rows: list[dict[str, Any]],
    *,
    representation: bool,
    merge: bool = False,
    ignore: bool = False,
) -> Statement:
    """INSERT (or upsert, with ``merge``/``ignore``) of ``rows``, a JSON array of objects."""
    if query.columns is not None:
        names = list(dict.fromkeys(query.columns))
        rows = [{k: v for k, v in row.items() if k in names} for row in rows]
    else:
        names = list(dict.fromkeys(key for row in rows for key in row))
        if any(set(row) != set(names) for row in rows):
            raise QueryError("All object keys must match", code="PGRST102")
    columns = ", ".join(table.payload_column(name) for name in names)
    params = Params()
    if names:
        payload = params.add(orjson.dumps(rows).decode())
        statement = (
            f"INSERT INTO {table.qualified} AS _t ({columns}) SELECT {columns} "
            f"FROM jsonb_populate_recordset(NULL::{table.qualified}, {payload}::jsonb)"
        )
    elif len(rows) == 1:
        statement = f"INSERT INTO {table.qualified} AS _t DEFAULT VALUES"
    else:
        raise QueryError("rows with no columns can be inserted only one at a time")
    if merge or ignore:
        target = query.on_conflict or table.primary_key
        if not target:
            raise QueryError(f"'{table.name}' has no primary key: give on_conflict")
        conflict = ", ".join(table.column(name) for name in target)
        updates = [n for n in names if n not in target]
        if merge and updates:
            sets = ", ".join(f"{quote_ident(n)} = EXCLUDED.{quote_ident(n)}" for n in updates)
            statement += f" ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
        else:
            statement += f" ON CONFLICT ({conflict}) DO NOTHING"
        if merge:
            return _merging(table, query, statement, representation).bind(params)
    return _returning(table, query, statement, representation).bind(params)


def _merging(table: Table, query: Query, statement: str, representation: bool) -> Statement:
    """An upsert that also says how many of its rows it inserted (PostgREST answers 200 when it
    merged them all, 201 otherwise): a row the statement inserted has no ``xmax``, one it updated
    has the transaction's."""
    inserted = "(_t.xmax = '0'::xid) AS _rtm_inserted"
    if representation:
        rows = (
            "(SELECT coalesce(json_agg(_r), '[]')::text FROM "
            f"(SELECT {select_list(table, query, '_w')} FROM _w) _r)"
        )
        returning = f"_t.*, {inserted}"
    else:
        rows, returning = "NULL::text", inserted
    sql = (
        f"WITH _w AS ({statement} RETURNING {returning}) "
        f"SELECT {rows}, count(*), count(*) FILTER (WHERE _rtm_inserted) FROM _w"
    )
    return Statement(sql, [], rows=True)


def update(table: Table, query: Query, patch: dict[str, Any], *, representation: bool) -> Statement:
    _writes_only(query, "updates")
    params = Params()
    payload = params.add(orjson.dumps(patch).decode())
    sets = ", ".join(f"{table.payload_column(n)} = _p.{quote_ident(n)}" for n in patch)
    statement = (
        f"UPDATE {table.qualified} AS _t SET {sets} "
        f"FROM jsonb_populate_record(NULL::{table.qualified}, {payload}::jsonb) AS _p"
        f"{where_clause(table, query, params)}"
    )
    return _returning(table, query, statement, representation).bind(params)


def delete(table: Table, query: Query, *, representation: bool) -> Statement:
    _writes_only(query, "deletes")
    params = Params()
    statement = f"DELETE FROM {table.qualified} AS _t{where_clause(table, query, params)}"
    return _returning(table, query, statement, representation).bind(params)
