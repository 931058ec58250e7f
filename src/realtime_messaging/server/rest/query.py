"""PostgREST's URL grammar, the supported part of it, parsed into a typed query (no I/O).

Supported: ``select`` (columns, ``*``, ``alias:column``), filters ``eq neq gt gte lt lte like
ilike in is`` with ``not.``, ``or=(...)`` / ``and=(...)`` trees (nested, ``not.`` too),
``order``, ``limit``, ``offset``, ``columns`` and ``on_conflict``. Everything else PostgREST
knows (embedded resources, JSON paths, casts, aggregates, full-text search, array and range
operators, quantified operators) is refused with a :class:`QueryError`, as is anything past the
bounds below. Column names are only parsed here; whether they exist is :mod:`.sql`'s to check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

#: At most this many rows per request, whatever ``limit`` asks for.
MAX_ROWS = 1000
#: Filters in one request, counting every leaf of every ``or``/``and`` tree.
MAX_FILTERS = 50
#: How deep ``or``/``and`` trees may nest (``or=(a.eq.1)`` is depth 1).
MAX_DEPTH = 4
#: Elements of one ``in.(...)`` list.
MAX_IN = 1000
#: Items of ``select``, terms of ``order``, names of ``columns`` / ``on_conflict``.
MAX_ITEMS = 100

Op = Literal["eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "in", "is"]
IsValue = Literal["null", "not_null", "true", "false", "unknown"]

_SIMPLE_OPS: dict[str, Op] = {
    "eq": "eq",
    "neq": "neq",
    "gt": "gt",
    "gte": "gte",
    "lt": "lt",
    "lte": "lte",
    "like": "like",
    "ilike": "ilike",
}
#: Operators PostgREST has that this server does not: refused by name, not as a parse error.
_UNSUPPORTED_OPS = frozenset(
    {"cs", "cd", "ov", "sl", "sr", "nxr", "nxl", "adj", "fts", "plfts", "phfts", "wfts"}
    | {"match", "imatch", "isdistinct"}
)
_IS_VALUES: dict[str, IsValue] = {
    "null": "null",
    "not_null": "not_null",
    "true": "true",
    "false": "false",
    "unknown": "unknown",
}
#: Query parameters that are not filters: this server's (``apikey``) and PostgREST's own.
_RESERVED = frozenset({"select", "columns", "on_conflict", "order", "limit", "offset", "apikey"})


class QueryError(Exception):
    """A request this server cannot or will not run; PostgREST's error fields."""

    def __init__(
        self, message: str, details: str | None = None, *, code: str = "PGRST100", status: int = 400
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.code = code
        self.status = status


def _unsupported(what: str, hint: str | None = None) -> QueryError:
    return QueryError(f"{what} is not supported by this server", hint)


@dataclass(frozen=True, slots=True)
class Filter:
    column: str
    op: Op
    #: A string for the simple operators, a tuple for ``in``, an :data:`IsValue` for ``is``.
    value: str | tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Logic:
    op: Literal["and", "or"]
    children: tuple[Node, ...]
    negated: bool = False


Node = Filter | Logic


@dataclass(frozen=True, slots=True)
class SelectItem:
    """``*`` (column None) or one column under an optional alias."""

    column: str | None
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class Order:
    column: str
    descending: bool = False
    nulls: Literal["first", "last"] | None = None


@dataclass(frozen=True, slots=True)
class Query:
    select: tuple[SelectItem, ...] = (SelectItem(None),)
    where: tuple[Node, ...] = ()
    order: tuple[Order, ...] = ()
    limit: int | None = None
    offset: int = 0
    columns: tuple[str, ...] | None = None
    on_conflict: tuple[str, ...] | None = None

    def filter_count(self) -> int:
        return sum(_leaves(node) for node in self.where)


def _leaves(node: Node) -> int:
    if isinstance(node, Filter):
        return 1
    return sum(_leaves(child) for child in node.children)


@dataclass(frozen=True, slots=True)
class Prefer:
    """The ``Prefer`` header: first occurrence of each preference wins, unknown ones ignored."""

    representation: bool = False
    count: bool = False
    merge_duplicates: bool = False
    ignore_duplicates: bool = False


def parse_prefer(headers: Iterable[str]) -> Prefer:
    seen: dict[str, str] = {}
    for header in headers:
        for part in header.split(","):
            key, _, value = part.strip().partition("=")
            seen.setdefault(key.strip().lower(), value.strip().lower())
    resolution = seen.get("resolution")
    return Prefer(
        representation=seen.get("return") == "representation",
        count=seen.get("count") in ("exact", "planned", "estimated"),
        merge_duplicates=resolution == "merge-duplicates",
        ignore_duplicates=resolution == "ignore-duplicates",
    )


def parse_range(header: str | None) -> tuple[int, int | None] | None:
    """``Range: a-b`` / ``a-`` (items): first and last row wanted; None when absent or not a
    range (PostgREST ignores it then)."""
    if not header:
        return None
    first, sep, last = header.strip().partition("-")
    if not sep or not first.isdigit() or (last and not last.isdigit()):
        return None
    lower = int(first)
    upper = int(last) if last else None
    if upper is not None and upper < lower:
        raise QueryError(
            "Requested range not satisfiable",
            f"An invalid range was requested: {header}",
            code="PGRST103",
            status=416,
        )
    return lower, upper


def parse_query(params: Iterable[tuple[str, str]], *, range_header: str | None = None) -> Query:
    """The typed query of a request's (already percent-decoded) query parameters."""
    select: tuple[SelectItem, ...] | None = None
    where: list[Node] = []
    order: tuple[Order, ...] = ()
    limit: int | None = None
    offset = 0
    columns: tuple[str, ...] | None = None
    on_conflict: tuple[str, ...] | None = None
    for key, value in params:
        if key == "select":
            if select is None:
                select = _parse_select(value)
        elif key == "columns":
            columns = _parse_names(value, "columns")
        elif key == "on_conflict":
            on_conflict = _parse_names(value, "on_conflict")
        elif key == "order":
            order = _parse_order(value)
        elif key == "limit":
            limit = _parse_int(value, "limit")
        elif key == "offset":
            offset = _parse_int(value, "offset") or 0
        elif key == "apikey":
            continue
        elif key in ("or", "and", "not.or", "not.and"):
            negated = key.startswith("not.")
            op = "or" if key.endswith("or") else "and"
            where.append(_parse_tree(f"{op}{value}", negated, key))
        elif "." in key and key.rsplit(".", 1)[-1] in _RESERVED | {"or", "and"}:
            raise _unsupported(
                f"'{key}': modifiers of embedded resources",
                "embedded resources are not supported",
            )
        else:
            where.append(_parse_filter(key, value))
    query = Query(
        select=select if select is not None else (SelectItem(None),),
        where=tuple(where),
        order=order,
        limit=limit,
        offset=offset,
        columns=columns,
        on_conflict=on_conflict,
    )
    if query.filter_count() > MAX_FILTERS:
        raise QueryError(f"too many filters: at most {MAX_FILTERS} per request")
    return _apply_range(query, parse_range(range_header))


def _apply_range(query: Query, wanted: tuple[int, int | None] | None) -> Query:
    """The rows asked for: ``offset``/``limit`` intersected with the ``Range`` header."""
    lower = query.offset
    upper = None if query.limit is None else query.offset + query.limit - 1
    if wanted is not None:
        lower = max(lower, wanted[0])
        if wanted[1] is not None:
            upper = wanted[1] if upper is None else min(upper, wanted[1])
    limit = None if upper is None else max(0, upper - lower + 1)
    return Query(
        query.select, query.where, query.order, limit, lower, query.columns, query.on_conflict
    )


def _parse_int(value: str, what: str) -> int | None:
    text = value.strip()
    if text.startswith("-") and text[1:].isdigit():
        raise QueryError(
            "Requested range not satisfiable",
            f"{what.capitalize()} should be greater than or equal to zero.",
            code="PGRST103",
            status=416,
        )
    if not text.isdigit() or len(text) > 18:
        return None  # PostgREST ignores a limit or offset that is not an integer
    return int(text)


# -- names, lists, select, order --------------------------------------------------------------


def _split_top(text: str, what: str) -> list[str]:
    """``text`` split at the commas outside double quotes and parentheses."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted or depth != 0:
        raise QueryError(
            f"failed to parse {what} parameter ({text})", "unbalanced quotes or parentheses"
        )
    parts.append(text[start:])
    if len(parts) > MAX_ITEMS:
        raise QueryError(f"too many items in {what}: at most {MAX_ITEMS}")
    return parts


def _name(text: str, what: str) -> str:
    """A field name: ``"quoted"`` (``\\`` escapes) or a bare name, JSON paths refused."""
    text = text.strip()
    if text.startswith('"'):
        out: list[str] = []
        i = 1
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                if text[i + 1 :].strip():
                    raise QueryError(f"failed to parse {what} ({text})", "text after a quoted name")
                if not out:
                    break
                return "".join(out)
            out.append(ch)
            i += 1
        raise QueryError(f"failed to parse {what} ({text})", "unterminated or empty quoted name")
    if "->" in text:
        raise _unsupported(f"'{text}': JSON paths")
    if "::" in text:
        raise _unsupported(f"'{text}': casts")
    if not text or any(not (ch.isalnum() or ch in "_$ -") for ch in text):
        raise QueryError(f"failed to parse {what} ({text})", f"unexpected name {text!r}")
    return text


def _parse_names(value: str, what: str) -> tuple[str, ...]:
    return tuple(_name(part, what) for part in _split_top(value, what))


def _parse_select(value: str) -> tuple[SelectItem, ...]:
    items: list[SelectItem] = []
    for raw in _split_top(value, "select"):
        text = raw.strip()
        if text == "*":
            items.append(SelectItem(None))
            continue
        if "(" in text or text.startswith("..."):
            raise QueryError(
                f"Could not embed '{text}': embedded resources and aggregates are not supported",
                "select plain columns of one table; embedding is not supported by this server",
                code="PGRST200",
            )
        alias: str | None = None
        head, sep, rest = _partition_alias(text)
        if sep:
            alias, text = _name(head, "select"), rest
        items.append(SelectItem(_name(text, "select"), alias))
    if not items:
        raise QueryError("failed to parse select parameter ()", "nothing selected")
    return tuple(items)


def _partition_alias(text: str) -> tuple[str, str, str]:
    """``alias:column`` split at the first ``:`` outside quotes that is not part of ``::``."""
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == ":" and not quoted:
            if text[i + 1 : i + 2] == ":" or text[i - 1 : i] == ":":
                return text, "", ""
            return text[:i], ":", text[i + 1 :]
    return text, "", ""


def _parse_order(value: str) -> tuple[Order, ...]:
    terms: list[Order] = []
    for raw in _split_top(value, "order"):
        text = raw.strip()
        if "(" in text:
            raise _unsupported(f"'{text}': ordering by an embedded resource")
        parts = _split_dots(text, "order")
        descending = False
        nulls: Literal["first", "last"] | None = None
        modifiers = parts[1:]
        if modifiers and modifiers[-1] in ("nullsfirst", "nullslast"):
            nulls = "first" if modifiers.pop() == "nullsfirst" else "last"
        if modifiers and modifiers[-1] in ("asc", "desc"):
            descending = modifiers.pop() == "desc"
        if modifiers:
            raise QueryError(
                f'"failed to parse order ({text})"',
                "expecting column.asc|desc[.nullsfirst|nullslast]",
            )
        terms.append(Order(_name(parts[0], "order"), descending, nulls))
    return tuple(terms)


def _split_dots(text: str, what: str) -> list[str]:
    """``"a.b".desc`` -> [``"a.b"``, ``desc``]: dots outside quotes."""
    parts: list[str] = []
    quoted = False
    start = 0
    for i, ch in enumerate(text):
        if ch == '"' and text[i - 1 : i] != "\\":
            quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    if quoted:
        raise QueryError(f"failed to parse {what} ({text})", "unterminated quoted name")
    return parts


# -- filters ----------------------------------------------------------------------------------


def _parse_filter(key: str, value: str) -> Filter:
    if not value:
        raise QueryError(f'"failed to parse filter ({key}=)"', "a filter needs an operator")
    parts = _split_dots(key, "filter")
    if len(parts) > 1:
        raise QueryError(
            f"'{key}': filters on embedded resources are not supported",
            "embedded resources are not supported by this server",
            code="PGRST200",
        )
    column = _name(parts[0], "filter")
    parser = _Parser(value, top=True)
    node = parser.opexpr(column)
    return node


class _Parser:
    """Recursive descent over one filter value or logic tree."""

    def __init__(self, text: str, *, top: bool) -> None:
        self.text = text
        self.pos = 0
        self.top = top

    def fail(self, expected: str) -> QueryError:
        return QueryError(
            f'"failed to parse filter ({self.text})" (column {self.pos + 1})',
            f"expecting {expected}",
        )

    def rest(self) -> str:
        return self.text[self.pos :]

    def eat(self, token: str) -> bool:
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.eat(token):
            raise self.fail(repr(token))

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (
            self.text[self.pos].isalnum() or self.text[self.pos] == "_"
        ):
            self.pos += 1
        return self.text[start : self.pos]

    def opexpr(self, column: str) -> Filter:
        negated = self.eat("not.")
        op = self.word()
        if self.rest().startswith("("):
            raise _unsupported(f"'{op}(...)': quantified and full-text operators")
        if op in _UNSUPPORTED_OPS:
            raise _unsupported(f"operator '{op}'")
        if op not in _SIMPLE_OPS and op not in ("in", "is"):
            raise self.fail('"not" or an operator (eq, neq, gt, gte, lt, lte, like, ilike, in, is)')
        self.expect(".")
        if op == "in":
            return Filter(column, "in", self.in_list(), negated)
        if op == "is":
            is_value = _IS_VALUES.get(self.value().lower())
            if is_value is None:
                raise self.fail("null, not_null, true, false or unknown after is.")
            return Filter(column, "is", is_value, negated)
        value = self.value()
        if op in ("like", "ilike"):
            value = value.replace("*", "%")
        return Filter(column, _SIMPLE_OPS[op], value, negated)

    def value(self) -> str:
        if self.top:
            value = self.rest()
            self.pos = len(self.text)
            return value
        if self.rest().startswith('"'):
            return self.quoted()
        if self.rest().startswith("{"):
            end = self.text.find("}", self.pos)
            if end < 0:
                raise self.fail("'}'")
            value = self.text[self.pos : end + 1]
            self.pos = end + 1
            return value
        return self.bare()

    def bare(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",)":
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        self.expect('"')
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if ch == '"':
                self.skip_ws()
                if self.pos < len(self.text) and self.text[self.pos] not in ",)":
                    raise self.fail("',' or ')' after a quoted value")
                return "".join(out)
            out.append(ch)
        raise self.fail("a closing '\"'")

    def in_list(self) -> tuple[str, ...]:
        self.skip_ws()
        self.expect("(")
        items: list[str] = []
        self.skip_ws()
        if not self.eat(")"):
            while True:
                items.append(self.quoted() if self.rest().startswith('"') else self.bare())
                if len(items) > MAX_IN:
                    raise QueryError(f"too many values in one in.(...) list: at most {MAX_IN}")
                if self.eat(")"):
                    break
                self.expect(",")
        self.skip_ws()
        if self.top and self.pos != len(self.text):
            raise self.fail("the end of the filter after in.(...)")
        return tuple(items)

    def tree(self, negated: bool, depth: int) -> Logic:
        if depth > MAX_DEPTH:
            raise QueryError(f"and/or trees nest at most {MAX_DEPTH} deep")
        op: Literal["and", "or"]
        if self.eat("and"):
            op = "and"
        elif self.eat("or"):
            op = "or"
        else:
            raise self.fail("and or or")
        self.skip_ws()
        self.expect("(")
        children: list[Node] = []
        while True:
            self.skip_ws()
            children.append(self.node(depth))
            self.skip_ws()
            if self.eat(")"):
                break
            self.expect(",")
        return Logic(op, tuple(children), negated)

    def node(self, depth: int) -> Node:
        start = self.pos
        negated = self.eat("not.")
        for op in ("and", "or"):
            if self.rest().startswith(op) and self.text[self.pos + len(op) :].lstrip(
                " \t"
            ).startswith("("):
                return self.tree(negated, depth + 1)
        self.pos = start
        column = self.field()
        self.expect(".")
        return self.opexpr(column)

    def field(self) -> str:
        if self.rest().startswith('"'):
            start = self.pos
            self.quoted_name()
            return _name(self.text[start : self.pos], "filter")
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ".,()":
            self.pos += 1
        return _name(self.text[start : self.pos], "filter")

    def quoted_name(self) -> None:
        self.expect('"')
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 2 if ch == "\\" else 1
            if ch == '"':
                return
        raise self.fail("a closing '\"'")


def _parse_tree(value: str, negated: bool, key: str) -> Logic:
    parser = _Parser(value, top=False)
    tree = parser.tree(negated, 1)
    parser.skip_ws()
    if parser.pos != len(parser.text):
        raise parser.fail(f"the end of {key}=(...)")
    return tree
