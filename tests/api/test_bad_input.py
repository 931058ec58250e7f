"""Bad input on every route (issue 5, point 7): each answer a 4xx in the envelope with a precise
message, and nothing half-written in the database."""

from __future__ import annotations

import io
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from tests.conftest import RunningServer, Seed

from .conftest import UNKNOWN, Http, assert_error, assert_ok, assert_postgrest_error, insert_message

TABLES = (
    "users",
    "customers",
    "conversations",
    "customer_messages",
    "message_read_receipts",
    "user_presence",
    "message_delivery_status",
    "portal_tokens",
)


async def _snapshot(pool: asyncpg.Pool, w: World) -> dict[str, int]:
    """Row counts of every table. Typing rows only in the world's own conversations: the
    server's expiry sweep deletes other tests' stopped rows at any moment."""
    counts = {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
    counts["message_typing_indicators"] = await pool.fetchval(
        "SELECT count(*) FROM message_typing_indicators t JOIN conversations c "
        "ON c.id = t.conversation_id WHERE c.customer_id = $1",
        w.customer,
    )
    return counts


@dataclass
class World:
    customer: uuid.UUID
    portal: str
    user: uuid.UUID
    staff: str
    service: str
    conversation: uuid.UUID
    message: uuid.UUID


async def _world(seed: Seed, pool: asyncpg.Pool, server: RunningServer) -> World:
    customer, portal = await seed.customer()
    user, staff = await seed.staff()
    conversation = await seed.conversation(customer)
    message = await insert_message(pool, conversation, "staff", user)
    return World(customer, portal, user, staff, server.service_key, conversation, message)


def _routes(w: World) -> list[tuple[str, str, str, Any]]:
    """Every route: (method, path template, token, a valid body or None when it takes none)."""
    c, m = str(w.conversation), str(w.message)
    return [
        ("POST", "/api/messages/realtime/subscribe", w.portal, {"conversationId": c}),
        ("DELETE", "/api/messages/realtime/subscribe", w.portal, {"channels": []}),
        ("GET", "/api/me", w.portal, None),
        ("POST", "/api/conversations", w.portal, {"subject": "s"}),
        ("GET", "/api/conversations", w.portal, None),
        ("GET", "/api/conversations/{conversation_id}", w.portal, None),
        ("PATCH", "/api/conversations/{conversation_id}", w.portal, {"subject": "s"}),
        ("POST", "/api/conversations/{conversation_id}/messages", w.portal, {"content": "x"}),
        ("GET", "/api/conversations/{conversation_id}/messages", w.portal, None),
        ("POST", "/api/messages/{message_id}/read", w.portal, None),
        ("POST", "/api/messages/read", w.portal, {"messageIds": [m]}),
        ("POST", "/api/messages/delivered", w.portal, {"messageIds": [m]}),
        ("POST", "/api/conversations/{conversation_id}/typing", w.portal, {"isTyping": False}),
        ("PUT", "/api/presence", w.portal, {"status": "online"}),
        ("GET", "/api/conversations/{conversation_id}/presence", w.portal, None),
        ("GET", "/api/unread", w.portal, None),
        ("GET", "/api/conversations/counts", w.portal, None),
        ("GET", "/api/search", w.portal, None),
        ("PATCH", "/api/messages/{message_id}", w.portal, {"content": "x"}),
        ("DELETE", "/api/messages/{message_id}", w.portal, None),
        ("POST", "/api/conversations/{conversation_id}/attachments", w.portal, None),
        ("GET", "/api/attachments/{attachment_id}", w.portal, None),
        ("POST", "/api/admin/users", w.service, {"name": "n"}),
        ("POST", "/api/admin/customers", w.service, {"name": "n"}),
        ("POST", "/api/admin/customers/{customer_id}/portal-tokens", w.service, {}),
        ("DELETE", "/api/admin/portal-tokens/{token_id}", w.service, None),
        ("POST", "/api/admin/users/{user_id}/tokens", w.service, {}),
        ("GET", "/api/admin/users", w.service, None),
        ("GET", "/api/admin/customers", w.service, None),
        (
            "POST",
            "/api/admin/webhooks",
            w.service,
            {"url": "https://x.test/", "events": ["message.created"]},
        ),
        ("GET", "/api/admin/webhooks", w.service, None),
        ("PATCH", "/api/admin/webhooks/{webhook_id}", w.service, {"active": False}),
        ("DELETE", "/api/admin/webhooks/{webhook_id}", w.service, None),
        ("GET", "/api/admin/webhooks/{webhook_id}/attempts", w.service, None),
        ("POST", "/rest/v1/rpc/{function}", w.portal, None),
    ]


def _fill(path: str, w: World, **override: str) -> str:
    values = {
        "conversation_id": str(w.conversation),
        "message_id": str(w.message),
        "customer_id": str(w.customer),
        "user_id": str(w.user),
        "token_id": UNKNOWN,
        "attachment_id": UNKNOWN,
        "webhook_id": UNKNOWN,
        "function": "get_unread_message_count",
    }
    values.update(override)
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)


async def test_the_table_names_every_route(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    w = await _world(seed, pool, server)
    status, spec, _ = await http.call("GET", "/openapi.json")
    assert status == 200
    # REST broadcast (docs/realtime.md) is tested with the realtime server, not here; tables
    # over REST (docs/rest.md) in tests/rest, in PostgREST's terms.
    declared = {
        (m.upper(), p)
        for p, ops in spec["paths"].items()
        for m in ops
        if not p.startswith(("/api/broadcast", "/realtime/")) and p != "/rest/v1/{table}"
    }
    assert declared == {(method, path) for method, path, _, _ in _routes(w)}


async def test_malformed_and_non_object_bodies(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    w = await _world(seed, pool, server)
    before = await _snapshot(pool, w)
    for method, template, token, body in _routes(w):
        if body is None and "rpc" not in template:
            continue
        path = _fill(template, w)
        for raw in (b"{", b'{"content": "x",}', b"\xff\xfe", b"{'a': 1}", b"NaN"):
            status, reply, _ = await http.call(method, path, token, data=raw)
            if "rpc" in template:  # PostgREST's error shape under /rest/v1
                assert_postgrest_error(status, reply, 400, "PGRST102", "not valid JSON")
            else:
                assert_error(status, reply, 400, "invalid_json", "not valid JSON")
        for raw in (b"[]", b"1", b'"s"', b"null", b"true"):
            status, reply, _ = await http.call(method, path, token, data=raw)
            if "rpc" in template:
                assert_postgrest_error(status, reply, 400, "PGRST102", "object")
            else:
                assert_error(status, reply, 400, "invalid_body", "object")
    assert await _snapshot(pool, w) == before


async def test_unknown_fields_are_named(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    w = await _world(seed, pool, server)
    before = await _snapshot(pool, w)
    for method, template, token, body in _routes(w):
        if body is None:
            continue
        status, reply, _ = await http.call(
            method, _fill(template, w), token, json={**body, "bogusField": 1}
        )
        assert_error(
            status, reply, 422, "validation_error", "bogusField: Extra inputs are not permitted"
        )
    assert await _snapshot(pool, w) == before


async def test_bad_uuids_in_paths_are_named(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    w = await _world(seed, pool, server)
    before = await _snapshot(pool, w)
    checked = 0
    for method, template, token, body in _routes(w):
        for name in re.findall(r"{(\w+)}", template):
            if name == "function":
                continue
            for bad in ("not-a-uuid", "1234", f"{UNKNOWN}x", "%20"):
                status, reply, _ = await http.call(
                    method, _fill(template, w, **{name: bad}), token, json=body
                )
                assert_error(status, reply, 422, "validation_error", f"{name}: not a UUID")
                checked += 1
    # + PATCH and DELETE /api/messages/{message_id}, the two attachment routes, three webhook
    # routes
    assert checked == 4 * (10 + 2 + 2 + 3)
    assert await _snapshot(pool, w) == before


async def test_wrong_types_in_bodies_are_refused_not_coerced(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """A JSON string is not a boolean and not a number: `"off"` must not stop typing, `"600"`
    must not be a lifetime. (The server validates in pydantic's lax mode, which coerces them.)"""
    w = await _world(seed, pool, server)
    conv = str(w.conversation)
    before = await _snapshot(pool, w)
    cases: list[tuple[str, str, str, Any, str]] = [
        ("POST", f"/api/conversations/{conv}/typing", w.portal, {"isTyping": "true"}, "isTyping"),
        ("POST", f"/api/conversations/{conv}/typing", w.portal, {"isTyping": 1}, "isTyping"),
        (
            "POST",
            "/api/messages/realtime/subscribe",
            w.portal,
            {"includeTyping": "no"},
            "includeTyping",
        ),
        (
            "POST",
            f"/api/admin/customers/{w.customer}/portal-tokens",
            w.service,
            {"expiresInSeconds": "600"},
            "expiresInSeconds",
        ),
        (
            "POST",
            f"/api/admin/users/{w.user}/tokens",
            w.service,
            {"expiresInSeconds": 600.5},
            "expiresInSeconds",
        ),
        ("POST", f"/api/conversations/{conv}/messages", w.portal, {"content": 5}, "content"),
        ("POST", f"/api/conversations/{conv}/messages", w.portal, {"content": ["x"]}, "content"),
        (
            "POST",
            f"/api/conversations/{conv}/messages",
            w.portal,
            {"content": "x", "attachments": [1]},
            "attachments.0",
        ),
        (
            "POST",
            f"/api/conversations/{conv}/messages",
            w.portal,
            {"content": "x", "attachments": {}},
            "attachments",
        ),
        (
            "POST",
            f"/api/conversations/{conv}/messages",
            w.portal,
            {"content": "x", "clientMessageId": 7},
            "clientMessageId",
        ),
        ("POST", "/api/conversations", w.portal, {"customerId": 7}, "customerId"),
    ]
    for method, path, token, body, field in cases:
        status, reply, _ = await http.call(method, path, token, json=body)
        assert_error(status, reply, 422, "validation_error", f"{field}: ")
    assert await _snapshot(pool, w) == before


async def test_blank_and_empty_content(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    w = await _world(seed, pool, server)
    path = f"/api/conversations/{w.conversation}/messages"
    before = await _snapshot(pool, w)
    for body, fragment in (
        ({}, "content: Field required"),
        ({"content": ""}, "content: String should have at least 1 character"),
        ({"content": "   \n\t"}, "content: Value error, content must not be blank"),
        ({"content": None}, "content: Input should be a valid string"),
        ({"content": "x", "clientMessageId": ""}, "clientMessageId: String should have at least 1"),
        (
            {"content": "x", "clientMessageId": "k" * 256},
            "clientMessageId: String should have at most 255",
        ),
    ):
        status, reply, _ = await http.call("POST", path, w.portal, json=body)
        assert_error(status, reply, 422, "validation_error", fragment)
    assert await _snapshot(pool, w) == before


async def test_oversized_bodies(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """Content over 64 KiB is 413 naming the limit; so is a body over the 1 MiB request limit."""
    w = await _world(seed, pool, server)
    path = f"/api/conversations/{w.conversation}/messages"
    before = await _snapshot(pool, w)
    status, reply, _ = await http.call("POST", path, w.portal, json={"content": "x" * 65537})
    assert_error(status, reply, 413, "payload_too_large", "content is over 65536 bytes")
    for body in (
        {"content": "x", "attachments": [{"blob": "y" * 110_000}] * 10},
        {"content": "x" * 2_000_000},
    ):
        raw = io.BytesIO(json.dumps(body).encode())  # large bodies go as a stream
        status, reply, _ = await http.call("POST", path, w.portal, data=raw)
        assert_error(status, reply, 413, "payload_too_large", "1048576")
    assert await _snapshot(pool, w) == before


async def test_nul_characters_are_refused_with_a_422_not_a_500(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000; valid JSON carrying one is still client input
    to refuse, never an internal error."""
    w = await _world(seed, pool, server)
    conv = str(w.conversation)
    messages = f"/api/conversations/{conv}/messages"
    before = await _snapshot(pool, w)
    cases: list[tuple[str, str, str, Any]] = [
        ("POST", messages, w.portal, {"content": "a\u0000b"}),
        ("POST", messages, w.portal, {"content": "x", "clientMessageId": "k\u0000"}),
        ("POST", messages, w.portal, {"content": "x", "attachments": [{"name": "\u0000"}]}),
        ("POST", messages, w.portal, {"content": "x", "attachments": [{"\u0000": 1}]}),
        ("POST", "/api/conversations", w.portal, {"subject": "\u0000"}),
        ("PUT", "/api/presence", w.portal, {"status": "online", "metadata": {"k": "\u0000"}}),
        ("POST", "/api/admin/users", w.service, {"name": "A\u0000"}),
        ("POST", "/api/admin/customers", w.service, {"name": "C", "email": "\u0000"}),
        (
            "POST",
            "/rest/v1/rpc/update_user_presence",
            w.portal,
            {"customer_id": str(w.customer), "status": "online", "metadata": {"k": "\u0000"}},
        ),
        (
            "POST",
            "/rest/v1/rpc/update_user_presence",
            w.portal,
            {"customer_id": str(w.customer), "status": "on\u0000line"},
        ),
    ]
    failures = []
    for method, path, token, body in cases:
        status, reply, _ = await http.call(method, path, token, json=body)
        refused = (
            set(reply) == {"code", "message", "details", "hint"}  # PostgREST's shape
            if path.startswith("/rest/")
            else reply["success"] is False
        )
        if not (400 <= status < 500 and refused):
            failures.append((method, path, body, status, reply))
    assert not failures, "\n".join(map(repr, failures))
    assert await _snapshot(pool, w) == before


async def test_query_strings(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    w = await _world(seed, pool, server)
    for path in ("/api/conversations", f"/api/conversations/{w.conversation}/messages"):
        for params, fragment in (
            ({"limit": "-1"}, "limit: Input should be greater than or equal to 1"),
            ({"limit": "1.5"}, "limit: Input should be a valid integer"),
            ({"limit": "999"}, "limit: Input should be less than or equal to 200"),
            ({"before": "%%%"}, "cursor: not a cursor this API returned"),
            ({"offset": "5"}, "offset: Extra inputs are not permitted"),
        ):
            status, reply, _ = await http.call("GET", path, w.portal, params=params)
            assert_error(status, reply, 422, "validation_error", fragment)
    status, reply, _ = await http.call(
        "GET", "/api/unread", w.portal, params={"conversationId": "x"}
    )
    assert_error(status, reply, 422, "validation_error", "conversationId")


async def test_the_apikey_query_parameter_authenticates_like_the_header(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """The server accepts a token as `Authorization: Bearer`, as an `apikey` header and as an
    `apikey` query parameter (server/http.py, Supabase style); the query parameter is the
    credential, not an unknown field of the route's query."""
    w = await _world(seed, pool, server)
    for path in (
        "/api/conversations",
        f"/api/conversations/{w.conversation}/messages",
        "/api/unread",
        f"/api/conversations/{w.conversation}",
    ):
        status, header_reply, _ = await http.call("GET", path, None, headers={"apikey": w.portal})
        assert_ok(status, header_reply)
        status, query_reply, _ = await http.call("GET", path, None, params={"apikey": w.portal})
        assert_ok(status, query_reply)


async def test_unknown_routes_and_methods_use_the_envelope(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    w = await _world(seed, pool, server)
    for method, path, expected, code in (
        ("GET", "/api/nowhere", 404, "not_found"),
        ("PATCH", "/api/conversations", 405, "method_not_allowed"),
        ("DELETE", f"/api/conversations/{w.conversation}", 405, "method_not_allowed"),
        ("GET", "/api/messages/read", 405, "method_not_allowed"),
        ("PUT", "/api/messages/realtime/subscribe", 405, "method_not_allowed"),
    ):
        status, reply, _ = await http.call(method, path, w.portal)
        assert_error(status, reply, expected, code)
    # /rest/v1 answers in PostgREST's shape: an unknown table, an unknown path below it.
    status, reply, _ = await http.call("GET", "/rest/v1/nowhere", w.portal)
    assert_postgrest_error(status, reply, 404, "PGRST205")
    status, reply, _ = await http.call("GET", "/rest/v1/a/b/c", w.portal)
    assert_postgrest_error(status, reply, 404, "PGRST125")
    # No token: 401 before anything else, on every route.
    for method, template, _, body in _routes(w):
        status, reply, _ = await http.call(method, _fill(template, w), None, json=body)
        if template.startswith("/rest/"):
            assert_postgrest_error(status, reply, 401, "PGRST301")
        else:
            assert_error(status, reply, 401, "unauthorized")
