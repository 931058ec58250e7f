"""The ``/rest/v1`` URL grammar (server/rest/query.py): what it parses, what it refuses, and that
hostile input only ever gives a :class:`QueryError`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_messaging.server.rest import sql
from realtime_messaging.server.rest.query import (
    MAX_DEPTH,
    MAX_FILTERS,
    Filter,
    Logic,
    Order,
    Query,
    QueryError,
    SelectItem,
    parse_prefer,
    parse_query,
)


def q(*params: tuple[str, str], range_header: str | None = None) -> Query:
    return parse_query(params, range_header=range_header)


def refused(*params: tuple[str, str], code: str = "PGRST100", status: int = 400) -> QueryError:
    with pytest.raises(QueryError) as caught:
        parse_query(params)
    assert (caught.value.code, caught.value.status) == (code, status), caught.value.message
    return caught.value


def test_select() -> None:
    assert q().select == (SelectItem(None),)
    assert q(("select", "id, body:content ,*")).select == (
        SelectItem("id"),
        SelectItem("content", "body"),
        SelectItem(None),
    )
    assert q(("select", '"weird col",x:"a:b"')).select == (
        SelectItem("weird col"),
        SelectItem("a:b", "x"),
    )
    # Only the first select counts, as in PostgREST.
    assert q(("select", "id"), ("select", "nope(")).select == (SelectItem("id"),)


def test_select_refusals() -> None:
    for select in ("*,author:users(name)", "users!inner(*)", "...users(name)", "count()"):
        refused(("select", select), code="PGRST200")
    for select in ("id::text", "data->>k", "a,", '"open'):
        refused(("select", select))


def test_filters() -> None:
    assert q(("id", "eq.7"), ("a", "not.neq.x,y")).where == (
        Filter("id", "eq", "7"),
        Filter("a", "neq", "x,y", negated=True),
    )
    assert q(("c", "like.*hi*"), ("d", "ilike.A*")).where == (
        Filter("c", "like", "%hi%"),
        Filter("d", "ilike", "A%"),
    )
    assert q(("h", 'in.(1,two,"a,b","q\\"t")')).where == (
        Filter("h", "in", ("1", "two", "a,b", 'q"t')),
    )
    assert q(("h", "in.()")).where == (Filter("h", "in", ()),)
    assert q(("i", "is.NULL"), ("j", "not.is.true")).where == (
        Filter("i", "is", "null"),
        Filter("j", "is", "true", negated=True),
    )
    # At top level the value is everything after the operator, quotes and all.
    assert q(("e", 'eq."x"')).where == (Filter("e", "eq", '"x"'),)


def test_logic_trees() -> None:
    (tree,) = q(("or", "(id.eq.1,and(room.eq.7,body.ilike.*hi*),not.or(a.is.null))")).where
    assert tree == Logic(
        "or",
        (
            Filter("id", "eq", "1"),
            Logic("and", (Filter("room", "eq", "7"), Filter("body", "ilike", "%hi%"))),
            Logic("or", (Filter("a", "is", "null"),), negated=True),
        ),
    )
    (tree,) = q(("not.and", '( a.eq."x,y" , b.in.(1,2) )')).where
    assert tree == Logic(
        "and", (Filter("a", "eq", "x,y"), Filter("b", "in", ("1", "2"))), negated=True
    )


def test_filter_refusals() -> None:
    for key, value in (
        ("a", ""),
        ("a", "noop.0"),
        ("a", "eq"),
        ("a", "is.maybe"),
        ("a", "in.(1,2"),
        ("a", "in.(1)x"),
        ("or", "(a.eq.1"),
        ("or", "a.eq.1"),
        ("or", "(a.eq.1)x"),
        ("or", "()"),
        ("a->b", "eq.1"),
    ):
        refused((key, value))
    for op in ("cs.{a}", "fts.cat", "eq(any).{1,2}", "isdistinct.1", "match.x"):
        assert "not supported" in refused(("a", op)).message
    refused(("author.name", "eq.1"), code="PGRST200")
    refused(("author.order", "id"))


def test_bounds() -> None:
    many = [(f"c{i}", "eq.1") for i in range(MAX_FILTERS + 1)]
    refused(*many)
    deep = "(a.eq.1)"
    for _ in range(MAX_DEPTH):
        deep = f"(or{deep})"
    refused(("or", deep))
    refused(("h", "in.(" + ",".join(["1"] * 1001) + ")"))


def test_order_limit_offset_range() -> None:
    assert q(("order", "a.desc.nullslast,b,c.nullsfirst,d.asc")).order == (
        Order("a", True, "last"),
        Order("b"),
        Order("c", False, "first"),
        Order("d"),
    )
    refused(("order", "a.sideways"))
    refused(("order", "users(name).desc"))
    query = q(("limit", "10"), ("offset", "5"))
    assert (query.limit, query.offset) == (10, 5)
    assert q(("limit", "ten")).limit is None  # ignored, as PostgREST does
    refused(("limit", "-1"), code="PGRST103", status=416)
    # offset/limit intersected with Range.
    query = q(range_header="0-9")
    assert (query.offset, query.limit) == (0, 10)
    query = q(("offset", "5"), ("limit", "100"), range_header="0-9")
    assert (query.offset, query.limit) == (5, 5)
    assert q(range_header="garbage").limit is None
    with pytest.raises(QueryError):
        q(range_header="9-0")


def test_columns_and_on_conflict() -> None:
    query = q(("columns", '"room_id","body"'), ("on_conflict", "a, b"))
    assert (query.columns, query.on_conflict) == (("room_id", "body"), ("a", "b"))


def test_prefer() -> None:
    prefer = parse_prefer(["return=representation, count=exact", "return=minimal"])
    assert prefer.representation and prefer.count
    prefer = parse_prefer(["resolution=merge-duplicates,missing=default"])
    assert prefer.merge_duplicates and not prefer.representation


TABLE = sql.Table("t", {"id": "uuid", "body": "text", "n": "integer", 'weird"col': "text"}, ("id",))


def test_sql_quotes_identifiers_and_binds_values() -> None:
    query = q(
        ("select", 'x:"weird\\"col"'),
        ("n", "gt.1; DROP TABLE t"),
        ("or", '(body.eq."it\'s",id.in.(a,b))'),
        ("order", "n.desc"),
    )
    statement = sql.read(TABLE, query)
    assert '"weird""col" AS "x"' in statement.sql
    assert "DROP" not in statement.sql and "it's" not in statement.sql
    assert statement.args == ["1; DROP TABLE t", "it's", ["a", "b"]]
    with pytest.raises(QueryError) as caught:
        sql.read(TABLE, q(("nope", "eq.1")))
    assert caught.value.code == "42703"
    with pytest.raises(QueryError) as caught:
        sql.insert(TABLE, q(), [{"nope": 1}], representation=True)
    assert caught.value.code == "PGRST204"
    with pytest.raises(QueryError) as caught:
        sql.insert(TABLE, q(), [{"body": "a"}, {"n": 1}], representation=True)
    assert caught.value.code == "PGRST102"
    with pytest.raises(QueryError):
        sql.delete(TABLE, q(("limit", "1"), ("id", "eq.1")), representation=False)
    # No update or delete of every row at once (Supabase's pg-safeupdate).
    for refused_write in (
        lambda: sql.delete(TABLE, q(), representation=False),
        lambda: sql.update(TABLE, q(), {"body": "x"}, representation=False),
    ):
        with pytest.raises(QueryError) as caught:
            refused_write()
        assert caught.value.code == "21000"


_ALPHABET = st.sampled_from(list('abc.,()"\\:*!-> \t{}eqnotinisor0123456789') + ["\x00", "é"])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["select", "order", "or", "and", "not.or", "limit", "id", "a.b"])
            | st.text(_ALPHABET, max_size=8),
            st.text(_ALPHABET, max_size=40),
        ),
        max_size=6,
    ),
    st.none() | st.text(_ALPHABET, max_size=10),
)
def test_hostile_input_gives_a_query_error_or_a_query(
    params: list[tuple[str, str]], range_header: str | None
) -> None:
    try:
        query = parse_query(params, range_header=range_header)
    except QueryError as exc:
        assert 400 <= exc.status < 500 and exc.code.startswith(("PGRST", "4"))
        return
    try:
        statement = sql.read(TABLE, query)
    except QueryError:
        return
    # Whatever came through is bound, never spliced: every name is a column of the table.
    assert statement.sql.count("$") == len(statement.args)
