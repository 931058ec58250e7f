"""``/rest/v1`` driven by the official supabase-py client (``acreate_client``), as a customer, a
staff member, the anon key and the service_role key, under row-level security."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from postgrest.exceptions import APIError
from supabase import AClient, AClientOptions, acreate_client

from tests.api.conftest import count, insert_message
from tests.conftest import RunningServer, Seed

Connect = Callable[[str | None], Awaitable[AClient]]

#: supabase-py 2.34 passes postgrest-py a parameter postgrest-py itself deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The '(timeout|verify|proxy)' parameter is deprecated:DeprecationWarning"
)


@pytest.fixture
async def connect(server: RunningServer) -> AsyncIterator[Connect]:
    """A supabase-py client with the anon key as its project key, signed in as ``token``."""
    clients: list[AClient] = []

    async def make(token: str | None) -> AClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = await acreate_client(
            server.http_url, server.anon_key, AClientOptions(headers=headers)
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.postgrest.aclose()


async def _error(call: Awaitable[Any]) -> APIError:
    with pytest.raises(APIError) as caught:
        await call
    return caught.value


async def test_customer_reads_and_writes_only_their_own(
    connect: Connect, seed: Seed, pool: asyncpg.Pool
) -> None:
    a, token_a = await seed.customer()
    b, _ = await seed.customer()
    user, _ = await seed.staff()
    conv_a, conv_b = await seed.conversation(a), await seed.conversation(b)
    first = await insert_message(pool, conv_a, "staff", user, "hello there")
    second = await insert_message(pool, conv_a, "customer", a, "thanks")
    theirs = await insert_message(pool, conv_b, "staff", user, "not yours")
    sb = await connect(token_a)
    messages = sb.table("customer_messages")

    # select with filters and order; renames; the other customer's rows are just not there.
    res = await (
        messages.select("id, text:content")
        .in_("conversation_id", [str(conv_a), str(conv_b)])
        .order("created_at", desc=True)
        .execute()
    )
    assert res.data == [
        {"id": str(second), "text": "thanks"},
        {"id": str(first), "text": "hello there"},
    ]
    res = await messages.select("id").eq("id", str(theirs)).execute()
    assert res.data == []
    res = await (
        messages.select("content")
        .eq("conversation_id", str(conv_a))
        .or_("content.ilike.*HELLO*,sender_type.eq.customer")
        .not_.is_("client_message_id", "null")
        .execute()
    )
    assert res.data == []
    res = await (
        messages.select("content")
        .eq("conversation_id", str(conv_a))
        .like("content", "hello%")
        .neq("sender_type", "customer")
        .execute()
    )
    assert res.data == [{"content": "hello there"}]

    # count, limit and range.
    res = await messages.select("id", count="exact").limit(1).execute()  # type: ignore[arg-type]
    assert res.count == 2 and len(res.data) == 1
    res = await messages.select("id").order("created_at").range(1, 5).execute()
    assert res.data == [{"id": str(second)}]

    # .single() and .maybe_single()
    res = await messages.select("content").eq("id", str(first)).single().execute()
    assert res.data == {"content": "hello there"}
    error = await _error(messages.select("content").eq("id", str(theirs)).single().execute())
    assert error.code == "PGRST116" and error.details == "The result contains 0 rows"
    assert await messages.select("content").eq("id", str(theirs)).maybe_single().execute() is None

    # insert: into their own conversation, one and several rows; not into someone else's.
    res = await messages.insert(
        {
            "conversation_id": str(conv_a),
            "sender_type": "customer",
            "sender_id": str(a),
            "content": "new",
        }
    ).execute()
    assert len(res.data) == 1 and res.data[0]["content"] == "new"
    res = await messages.insert(
        [
            {
                "conversation_id": str(conv_a),
                "sender_type": "customer",
                "sender_id": str(a),
                "content": "x",
            },
            {
                "conversation_id": str(conv_a),
                "sender_type": "customer",
                "sender_id": str(a),
                "content": "y",
            },
        ]
    ).execute()
    assert sorted(row["content"] for row in res.data) == ["x", "y"]
    error = await _error(
        messages.insert(
            {
                "conversation_id": str(conv_b),
                "sender_type": "customer",
                "sender_id": str(a),
                "content": "intrusion",
            }
        ).execute()
    )
    assert error.code == "42501" and "row-level security" in (error.message or "")
    assert await count(pool, "customer_messages WHERE conversation_id = $1", conv_b) == 1

    # update: their own conversation's subject; someone else's is untouched.
    conversations = sb.table("conversations")
    res = await conversations.update({"subject": "Mine"}).eq("id", str(conv_a)).execute()
    assert [row["subject"] for row in res.data] == ["Mine"]
    res = await conversations.update({"subject": "Hacked"}).eq("id", str(conv_b)).execute()
    assert res.data == []
    assert await pool.fetchval("SELECT subject FROM conversations WHERE id = $1", conv_b) == "Help"

    # delete: only staff delete messages; the customer's delete removes nothing.
    res = await messages.delete().eq("id", str(first)).execute()
    assert res.data == []
    res = await messages.delete().eq("id", str(theirs)).execute()
    assert res.data == []
    assert await count(pool, "customer_messages WHERE id = ANY($1)", [first, theirs]) == 2

    # upsert: their own presence row, twice (the second merges).
    presence = sb.table("user_presence")
    for status in ("online", "away"):
        res = await presence.upsert(
            {"customer_id": str(a), "status": status}, on_conflict="customer_id"
        ).execute()
        assert [row["status"] for row in res.data] == [status]
    assert await count(pool, "user_presence WHERE customer_id = $1", a) == 1
    error = await _error(
        presence.upsert(
            {"customer_id": str(b), "status": "online"}, on_conflict="customer_id"
        ).execute()
    )
    assert error.code == "42501"
    assert await count(pool, "user_presence WHERE customer_id = $1", b) == 0

    # What a customer may see of customers: themselves.
    res = await sb.table("customers").select("id").execute()
    assert res.data == [{"id": str(a)}]

    # rpc, and its errors in PostgREST's shape.
    res = await sb.rpc(
        "get_unread_message_count", {"user_id": None, "customer_id": str(a)}
    ).execute()
    assert res.data == 1
    error = await _error(sb.rpc("get_unread_message_count", {"customer_id": str(b)}).execute())
    assert error.code == "42501" and "themselves" in (error.message or "")


async def test_staff_anon_and_service_role(
    connect: Connect, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    a, _ = await seed.customer()
    user, staff_token = await seed.staff()
    conv = await seed.conversation(a)
    message = await insert_message(pool, conv, "customer", a, "help me")
    staff = await connect(staff_token)

    res = (
        await staff.table("customer_messages")
        .select("id, content")
        .eq("conversation_id", str(conv))
        .execute()
    )
    assert res.data == [{"id": str(message), "content": "help me"}]
    res = (
        await staff.table("customer_messages")
        .insert(
            {
                "conversation_id": str(conv),
                "sender_type": "staff",
                "sender_id": str(user),
                "content": "on it",
            }
        )
        .execute()
    )
    reply = res.data[0]["id"]
    res = (
        await staff.table("customer_messages")
        .update({"content": "edited"})
        .eq("id", reply)
        .execute()
    )
    assert res.data[0]["content"] == "edited"
    res = await staff.table("customer_messages").delete().eq("id", reply).execute()
    assert [row["id"] for row in res.data] == [reply]
    assert await count(pool, "customer_messages WHERE id = $1", uuid.UUID(reply)) == 0
    res = (
        await staff.table("user_presence")
        .upsert(
            {"user_id": str(user), "status": "online", "metadata": {"desk": 3}},
            on_conflict="user_id",
        )
        .execute()
    )
    assert res.data[0]["metadata"] == {"desk": 3}
    res = (
        await staff.table("conversations")
        .update({"assigned_user_id": str(user)})
        .eq("id", str(conv))
        .execute()
    )
    assert res.data[0]["assigned_user_id"] == str(user)

    # anon: no table privileges at all; PostgREST answers 401 for the anonymous role.
    anon = await connect(None)
    error = await _error(anon.table("conversations").select("*").execute())
    assert error.code == "42501"
    error = await _error(
        anon.table("customers").insert({"name": "Mallory", "email": "m@example.com"}).execute()
    )
    assert error.code == "42501"
    assert await count(pool, "customers WHERE name = 'Mallory'") == 0

    # service_role: everything.
    service = await connect(server.service_key)
    res = (
        await service.table("customers")
        .insert({"name": "Svc", "email": "svc@example.com"})
        .execute()
    )
    created = res.data[0]["id"]
    res = await service.table("customers").select("name", count="exact").eq("id", created).execute()  # type: ignore[arg-type]
    assert (res.data, res.count) == ([{"name": "Svc"}], 1)
    res = await service.table("customers").delete().eq("id", created).execute()
    assert len(res.data) == 1
    # A unique violation is a 409 with PostgreSQL's SQLSTATE.
    error = await _error(
        service.table("users")
        .insert({"id": str(user), "name": "Dup", "email": "d@example.com"})
        .execute()
    )
    assert error.code == "23505"
