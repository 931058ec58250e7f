"""``/rest/v1`` driven by the official supabase-js client (``@supabase/supabase-js`` on Node,
tests/compat/js/rest.mjs), as a customer, a staff member, the anon key and the service_role key."""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

import asyncpg
import pytest

from tests.api.conftest import count, insert_message
from tests.compat.clients import COMPAT_DIR
from tests.conftest import RunningServer, Seed

RUNNER = COMPAT_DIR / "js" / "rest.mjs"


async def run_js(
    server: RunningServer, token: str | None, calls: list[tuple[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Each call's result, by name: {data, error, count, status} as supabase-js returned it."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH; the supabase-js tests need Node 20 or newer")
    options = {
        "url": server.http_url,
        "anonKey": server.anon_key,
        "token": token,
        "calls": [{"name": name, "call": call} for name, call in calls],
    }
    proc = await asyncio.create_subprocess_exec(
        node,
        str(RUNNER),
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    results = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return {r["name"]: r for r in results}


async def test_customer(server: RunningServer, seed: Seed, pool: asyncpg.Pool) -> None:
    a, token_a = await seed.customer()
    b, _ = await seed.customer()
    user, _ = await seed.staff()
    conv_a, conv_b = await seed.conversation(a), await seed.conversation(b)
    first = await insert_message(pool, conv_a, "staff", user, "hello there")
    theirs = await insert_message(pool, conv_b, "staff", user, "not yours")
    mine = {"conversation_id": str(conv_a), "sender_type": "customer", "sender_id": str(a)}
    r = await run_js(
        server,
        token_a,
        [
            (
                "history",
                {
                    "op": "select",
                    "table": "customer_messages",
                    "columns": "id, body:content",
                    "filters": [["in", "conversation_id", [str(conv_a), str(conv_b)]]],
                    "order": ["created_at", {"ascending": False}],
                    "range": [0, 49],
                },
            ),
            (
                "search",
                {
                    "op": "select",
                    "table": "customer_messages",
                    "columns": "content",
                    "filters": [
                        ["or", f"id.eq.{theirs},content.ilike.*THERE*"],
                        ["not", "sender_type", "eq", "customer"],
                    ],
                },
            ),
            (
                "count",
                {
                    "op": "select",
                    "table": "customer_messages",
                    "count": "exact",
                    "head": True,
                    "filters": [["gte", "created_at", "2000-01-01T00:00:00Z"]],
                },
            ),
            (
                "single",
                {
                    "op": "select",
                    "table": "customer_messages",
                    "columns": "content",
                    "filters": [["eq", "id", str(first)]],
                    "single": True,
                },
            ),
            (
                "single-theirs",
                {
                    "op": "select",
                    "table": "customer_messages",
                    "filters": [["eq", "id", str(theirs)]],
                    "single": True,
                },
            ),
            (
                "maybe-theirs",
                {
                    "op": "select",
                    "table": "customer_messages",
                    "filters": [["eq", "id", str(theirs)]],
                    "maybeSingle": True,
                },
            ),
            (
                "send",
                {
                    "op": "insert",
                    "table": "customer_messages",
                    "values": {**mine, "content": "sent from js"},
                    "select": "*",
                    "single": True,
                },
            ),
            (
                "send-many",
                {
                    "op": "insert",
                    "table": "customer_messages",
                    "values": [{**mine, "content": "one"}, {**mine, "content": "two"}],
                },
            ),
            (
                "intrude",
                {
                    "op": "insert",
                    "table": "customer_messages",
                    "values": {**mine, "conversation_id": str(conv_b), "content": "intrusion"},
                },
            ),
            (
                "rename",
                {
                    "op": "update",
                    "table": "conversations",
                    "values": {"subject": "Mine"},
                    "filters": [["eq", "id", str(conv_a)]],
                    "select": "subject",
                    "single": True,
                },
            ),
            (
                "rename-theirs",
                {
                    "op": "update",
                    "table": "conversations",
                    "values": {"subject": "Hacked"},
                    "filters": [["eq", "id", str(conv_b)]],
                    "select": "*",
                },
            ),
            (
                "delete-theirs",
                {
                    "op": "delete",
                    "table": "customer_messages",
                    "filters": [["eq", "id", str(theirs)]],
                },
            ),
            (
                "presence",
                {
                    "op": "upsert",
                    "table": "user_presence",
                    "values": {"customer_id": str(a), "status": "away"},
                    "options": {"onConflict": "customer_id"},
                    "select": "status",
                },
            ),
            (
                "presence-theirs",
                {
                    "op": "upsert",
                    "table": "user_presence",
                    "values": {"customer_id": str(b), "status": "online"},
                    "options": {"onConflict": "customer_id"},
                },
            ),
            (
                "unread",
                {"op": "rpc", "fn": "get_unread_message_count", "args": {"customer_id": str(a)}},
            ),
            (
                "unread-theirs",
                {"op": "rpc", "fn": "get_unread_message_count", "args": {"customer_id": str(b)}},
            ),
        ],
    )
    assert r["history"]["data"] == [{"id": str(first), "body": "hello there"}]
    assert r["search"]["data"] == [{"content": "hello there"}]
    assert (r["count"]["status"], r["count"]["count"], r["count"]["data"]) == (200, 1, None)
    assert r["single"]["data"] == {"content": "hello there"}
    assert r["single-theirs"]["status"] == 406
    assert r["single-theirs"]["error"]["code"] == "PGRST116"
    assert (r["maybe-theirs"]["data"], r["maybe-theirs"]["error"]) == (None, None)
    assert r["send"]["status"] == 201 and r["send"]["data"]["content"] == "sent from js"
    assert (r["send-many"]["status"], r["send-many"]["data"]) == (201, None)
    assert r["intrude"]["status"] == 403 and r["intrude"]["error"]["code"] == "42501"
    assert set(r["intrude"]["error"]) == {"code", "message", "details", "hint"}
    assert r["rename"]["data"] == {"subject": "Mine"}
    assert (r["rename-theirs"]["status"], r["rename-theirs"]["data"]) == (200, [])
    assert r["delete-theirs"]["status"] == 204 and r["delete-theirs"]["error"] is None
    assert r["presence"]["data"] == [{"status": "away"}]
    assert r["presence-theirs"]["error"]["code"] == "42501"
    assert (r["unread"]["status"], r["unread"]["data"]) == (200, 1)
    assert r["unread-theirs"]["status"] == 403
    assert r["unread-theirs"]["error"]["code"] == "42501"

    assert await count(pool, "customer_messages WHERE conversation_id = $1", conv_a) == 4
    assert await count(pool, "customer_messages WHERE conversation_id = $1", conv_b) == 1
    assert await pool.fetchval("SELECT subject FROM conversations WHERE id = $1", conv_b) == "Help"
    assert await count(pool, "user_presence WHERE customer_id = $1", b) == 0


async def test_staff_anon_and_service_role(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    a, _ = await seed.customer()
    user, staff_token = await seed.staff()
    conv = await seed.conversation(a)
    # The staff user's own message: staff edit only what they wrote (docs/api.md, "Editing and
    # deleting"); a hard delete of any message stays theirs.
    message = await insert_message(pool, conv, "staff", user, "help me")
    r = await run_js(
        server,
        staff_token,
        [
            (
                "edit",
                {
                    "op": "update",
                    "table": "customer_messages",
                    "values": {"content": "edited"},
                    "filters": [["eq", "id", str(message)]],
                    "select": "content",
                },
            ),
            (
                "page",
                {
                    "op": "select",
                    "table": "customer_messages",
                    "columns": "content",
                    "count": "exact",
                    "filters": [["eq", "conversation_id", str(conv)]],
                    "limit": 1,
                },
            ),
            (
                "typing",
                {
                    "op": "upsert",
                    "table": "message_typing_indicators",
                    "values": {
                        "conversation_id": str(conv),
                        "user_id": str(user),
                        "is_typing": True,
                    },
                    "options": {"onConflict": "conversation_id,user_id,customer_id"},
                    "select": "is_typing",
                },
            ),
            (
                "delete",
                {
                    "op": "delete",
                    "table": "customer_messages",
                    "filters": [["eq", "id", str(message)]],
                    "select": "id",
                },
            ),
        ],
    )
    assert r["edit"]["data"] == [{"content": "edited"}]
    assert (r["page"]["data"], r["page"]["count"]) == ([{"content": "edited"}], 1)
    assert r["typing"]["data"] == [{"is_typing": True}]
    assert r["delete"]["data"] == [{"id": str(message)}]
    assert await count(pool, "customer_messages WHERE id = $1", message) == 0

    r = await run_js(
        server,
        None,
        [
            ("read", {"op": "select", "table": "users"}),
            ("write", {"op": "insert", "table": "users", "values": {"name": "M", "email": "m@x"}}),
        ],
    )
    assert r["read"]["status"] == 401 and r["read"]["error"]["code"] == "42501"
    assert r["write"]["status"] == 401 and r["write"]["error"]["code"] == "42501"

    r = await run_js(
        server,
        server.service_key,
        [
            (
                "users",
                {
                    "op": "select",
                    "table": "users",
                    "columns": "id",
                    "filters": [["eq", "id", str(user)]],
                    "single": True,
                },
            ),
            ("bad-filter", {"op": "select", "table": "users", "filters": [["eq", "nope", 1]]}),
            ("no-table", {"op": "select", "table": "nope"}),
        ],
    )
    assert r["users"]["data"] == {"id": str(user)}
    assert r["bad-filter"]["status"] == 400 and r["bad-filter"]["error"]["code"] == "42703"
    assert r["no-table"]["status"] == 404 and r["no-table"]["error"]["code"] == "PGRST205"
