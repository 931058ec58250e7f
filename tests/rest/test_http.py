"""``/rest/v1/<table>`` on the wire: statuses, ``Content-Range``, ``Range``, ``HEAD``, ``Prefer``,
``Accept``, and errors in PostgREST's shape (what the clients' own tests do not pin down)."""

from __future__ import annotations

import io
import logging

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from realtime_messaging.server.rest import postgrest_errors
from tests.api.conftest import Http, assert_postgrest_error, count, insert_messages
from tests.conftest import RunningServer, Seed

MESSAGES = "/rest/v1/customer_messages"


async def test_paging_counts_and_ranges(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    user, _ = await seed.staff()
    conv = await seed.conversation(customer)
    await insert_messages(pool, conv, "staff", user, 5)
    where = {"conversation_id": f"eq.{conv}", "select": "content", "order": "created_at"}

    status, body, response = await http.call("GET", MESSAGES, portal, params=where)
    assert status == 200 and len(body) == 5
    assert response.headers["Content-Range"] == "0-4/*"
    assert response.content_type == "application/json"

    counted = {"Prefer": "count=exact"}
    status, body, response = await http.call(
        "GET", MESSAGES, portal, params={**where, "limit": "2", "offset": "1"}, headers=counted
    )
    assert (status, body) == (206, [{"content": "m2"}, {"content": "m3"}])
    assert response.headers["Content-Range"] == "1-2/5"
    status, body, response = await http.call(
        "GET", MESSAGES, portal, params=where, headers={**counted, "Range": "3-10"}
    )
    assert (status, [r["content"] for r in body]) == (206, ["m4", "m5"])
    assert response.headers["Content-Range"] == "3-4/5"
    status, body, response = await http.call("GET", MESSAGES, portal, params=where, headers=counted)
    assert status == 200 and response.headers["Content-Range"] == "0-4/5"
    status, body, _ = await http.call(
        "GET", MESSAGES, portal, params={**where, "offset": "9"}, headers=counted
    )
    assert_postgrest_error(status, body, 416, "PGRST103")
    status, body, _ = await http.call("GET", MESSAGES, portal, params={**where, "limit": "-1"})
    assert_postgrest_error(status, body, 416, "PGRST103")

    # HEAD (supabase-js count with head: true): the count, no body.
    status, body, response = await http.call(
        "HEAD", MESSAGES, portal, params=where, headers=counted
    )
    assert (status, body) == (200, None) and response.headers["Content-Range"] == "0-4/5"
    # Nothing matches: */0.
    status, body, response = await http.call(
        "GET", MESSAGES, portal, params={**where, "content": "eq.none"}, headers=counted
    )
    assert (status, body, response.headers["Content-Range"]) == (200, [], "*/0")


async def test_an_upsert_that_only_merges_answers_200(http: Http, seed: Seed) -> None:
    """PostgREST's statuses for POST with ``resolution=merge-duplicates``: 201 when a row was
    inserted, 200 when every row was merged (body or not, and for an empty array);
    ``ignore-duplicates`` always 201."""
    customer, portal = await seed.customer()
    presence = "/rest/v1/user_presence"
    params = {"on_conflict": "customer_id"}
    merge = "resolution=merge-duplicates,return=representation"

    async def upsert(status: str, prefer: str) -> tuple[int, object]:
        got, body, _ = await http.call(
            "POST",
            presence,
            portal,
            params=params,
            json={"customer_id": str(customer), "status": status},
            headers={"Prefer": prefer},
        )
        return got, body

    got, body = await upsert("online", merge)
    assert got == 201 and [r["status"] for r in body] == ["online"]  # type: ignore[union-attr]
    got, body = await upsert("away", merge)
    assert got == 200 and [r["status"] for r in body] == ["away"]  # type: ignore[union-attr]
    assert await upsert("online", "resolution=merge-duplicates") == (200, None)
    assert await upsert("away", "resolution=ignore-duplicates,return=representation") == (
        201,
        [],
    )
    got, body, _ = await http.call(
        "POST", presence, portal, params=params, json=[], headers={"Prefer": merge}
    )
    assert (got, body) == (200, [])


async def test_writes_statuses_and_single(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    row = {"conversation_id": str(conv), "sender_type": "customer", "sender_id": str(customer)}
    one = {"Accept": "application/vnd.pgrst.object+json"}

    # Default return=minimal: 201, no body.
    status, body, response = await http.call("POST", MESSAGES, portal, json={**row, "content": "a"})
    assert (status, body, response.headers["Content-Range"]) == (201, None, "*/*")
    # An array with columns= (what both clients send for arrays); count=exact.
    status, body, response = await http.call(
        "POST",
        MESSAGES,
        portal,
        params={"columns": '"conversation_id","sender_type","sender_id","content"'},
        json=[{**row, "content": "b"}, {**row, "content": "c", "ignored": 1}],
        headers={"Prefer": "return=representation,count=exact"},
    )
    assert status == 201 and [r["content"] for r in body] == ["b", "c"]
    assert response.headers["Content-Range"] == "*/2"
    # .single() on an insert of two: 406, and nothing was written.
    status, body, _ = await http.call(
        "POST",
        MESSAGES,
        portal,
        json=[{**row, "content": "d"}, {**row, "content": "e"}],
        headers={"Prefer": "return=representation", **one},
    )
    assert_postgrest_error(status, body, 406, "PGRST116")
    assert body["details"] == "The result contains 2 rows"
    assert await count(pool, "customer_messages WHERE conversation_id = $1", conv) == 3

    # PATCH and DELETE without representation: 204.
    status, body, _ = await http.call(
        "PATCH",
        "/rest/v1/conversations",
        portal,
        params={"id": f"eq.{conv}"},
        json={"subject": "S"},
    )
    assert (status, body) == (204, None)
    status, body, response = await http.call(
        "PATCH",
        "/rest/v1/conversations",
        portal,
        params={"id": f"eq.{conv}", "select": "subject"},
        json={"subject": "T"},
        headers={"Prefer": "return=representation", **one},
    )
    assert (status, body) == (200, {"subject": "T"})
    assert response.content_type == "application/vnd.pgrst.object+json"
    # supabase-py sends {} with its deletes: ignored.
    status, body, _ = await http.call(
        "DELETE",
        "/rest/v1/user_presence",
        portal,
        params={"customer_id": f"eq.{customer}"},
        json={},
    )
    assert (status, body) == (204, None)


async def test_errors_are_postgrest_shaped(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    cases: list[tuple[str, str, dict[str, str], object, int, str]] = [
        ("GET", "/rest/v1/portal_tokens", {}, None, 404, "PGRST205"),
        ("GET", MESSAGES, {"select": "*,conversations(*)"}, None, 400, "PGRST200"),
        ("GET", MESSAGES, {"content": "cs.{a}"}, None, 400, "PGRST100"),
        ("GET", MESSAGES, {"nope": "eq.1"}, None, 400, "42703"),
        ("GET", MESSAGES, {"order": "nope.desc"}, None, 400, "42703"),
        ("GET", MESSAGES, {"id": "eq.not-a-uuid"}, None, 400, "22P02"),
        ("POST", MESSAGES, {}, {"nope": 1}, 400, "PGRST204"),
        ("POST", MESSAGES, {}, [{"content": "a"}, {"sender_id": "b"}], 400, "PGRST102"),
        ("POST", MESSAGES, {}, [1], 400, "PGRST102"),
        ("PATCH", MESSAGES, {"limit": "1"}, {"content": "x"}, 400, "PGRST100"),
        # A column the caller may not write: PostgreSQL's 42501, 403 for a signed-in caller.
        (
            "PATCH",
            "/rest/v1/conversations",
            {"id": f"eq.{conv}"},
            {"customer_id": str(customer)},
            403,
            "42501",
        ),
        ("PUT", MESSAGES, {}, {}, 405, "PGRST117"),
        # Every row at once: refused, as Supabase's pg-safeupdate does.
        ("DELETE", MESSAGES, {}, None, 400, "21000"),
        ("PATCH", MESSAGES, {}, {"content": "x"}, 400, "21000"),
    ]
    for method, path, params, body, expected, code in cases:
        status, reply, response = await http.call(method, path, portal, json=body, params=params)
        assert_postgrest_error(status, reply, expected, code)
        assert response.headers.get("Proxy-Status", "").endswith(f"error={code}"), path
    status, reply, _ = await http.call(
        "GET", MESSAGES, portal, headers={"Accept-Profile": "private"}
    )
    assert_postgrest_error(status, reply, 406, "PGRST106")
    # The anonymous role: 401 with WWW-Authenticate, as PostgREST.
    status, reply, response = await http.call("GET", "/rest/v1/users", server.anon_key)
    assert_postgrest_error(status, reply, 401, "42501")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    # A unique violation: 409 with PostgreSQL's detail.
    status, reply, _ = await http.call(
        "POST",
        "/rest/v1/conversations",
        server.service_key,
        json={"id": str(conv), "customer_id": str(customer)},
    )
    assert_postgrest_error(status, reply, 409, "23505")
    assert "already exists" in reply["details"]
    # A body over the server's limit: still PostgREST's shape.
    status, reply, _ = await http.call(
        "POST", MESSAGES, portal, data=io.BytesIO(b'{"content":"' + b"x" * 2_000_000 + b'"}')
    )
    assert status == 413 and set(reply) == {"code", "message", "details", "hint"}
    # The envelope stays everywhere else.
    status, reply, _ = await http.call("GET", "/api/nowhere", portal)
    assert status == 404 and reply["success"] is False


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


async def _db_gone(request: web.Request) -> web.Response:
    raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")


async def test_what_escapes_a_handler_is_postgrest_shaped(caplog: pytest.LogCaptureFixture) -> None:
    """A fault of ours: 500 (logged with its traceback); the database away: 503, Retry-After;
    both in PostgREST's shape. Paths outside /rest/v1 are left alone."""
    app = web.Application(middlewares=[postgrest_errors])
    app.router.add_get("/rest/v1/boom", _boom)
    app.router.add_get("/rest/v1/db", _db_gone)
    app.router.add_get("/api/boom", _boom)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}") as session:
            with caplog.at_level(logging.ERROR):
                async with session.get("/rest/v1/boom") as response:
                    body = await response.json()
                    assert (response.status, body["code"]) == (500, "XX000")
                assert any(
                    isinstance(r.exc_info[1], RuntimeError) for r in caplog.records if r.exc_info
                )
            async with session.get("/rest/v1/db") as response:
                body = await response.json()
                assert (response.status, body["code"]) == (503, "PGRST001")
                assert set(body) == {"code", "message", "details", "hint"}
                assert int(response.headers["Retry-After"]) >= 1
            async with session.get("/api/boom") as response:
                assert response.status == 500 and response.content_type == "text/plain"
    finally:
        await runner.cleanup()
