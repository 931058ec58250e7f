"""Conversation changes on the staff and customer messages topics (``on_conversation``), and
the per-conversation topic left as it was (docs/sdk.md "Conversation changes")."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg

from realtime_messaging import RealtimeMessagingManager
from realtime_messaging.client import ConversationEvent, MessageEvent
from realtime_messaging.client.events import event_from_change
from tests.client.test_manager import next_of
from tests.conftest import RunningServer, Seed


async def patch(server: RunningServer, token: str, conversation: UUID, body: Any) -> None:
    """``PATCH /api/conversations/{id}`` as ``token``'s owner: a change made elsewhere."""
    headers = {"apikey": server.anon_key, "Authorization": f"Bearer {token}"}
    url = f"{server.http_url}/api/conversations/{conversation}"
    async with aiohttp.ClientSession() as http, http.patch(url, json=body, headers=headers) as r:
        assert r.status == 200, await r.text()


async def test_staff_hear_status_and_assignment_changes_made_elsewhere(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer_id, _ = await seed.customer()
    staff_id, staff_jwt = await seed.staff()
    other_id, other_jwt = await seed.staff()
    conversation = await seed.conversation(customer_id)
    async with RealtimeMessagingManager(
        server.http_url, server.anon_key, access_token=staff_jwt
    ) as me:
        handled: list[ConversationEvent] = []
        last_handled = asyncio.Event()

        def on_conversation(event: ConversationEvent) -> None:
            handled.append(event)
            if event.type == "DELETE":
                last_handled.set()

        sub = await me.subscribe_to_staff_messages(staff_id, on_conversation=on_conversation)

        # Another agent assigns it to themselves through the API, then closes it.
        await patch(server, other_jwt, conversation, {"assignedUserId": str(other_id)})
        # (Its own INSERT may come first: committed just before the join, routed after it.)
        assigned = await next_of(sub, ConversationEvent, type="UPDATE")
        assert assigned.conversation.id == str(conversation)
        assert assigned.conversation.assigned_user_id == str(other_id)
        assert assigned.conversation.customer_id == str(customer_id)
        assert assigned.conversation.status == "open"
        assert assigned.conversation.subject == "Help"
        assert assigned.previous is not None and assigned.previous.assigned_user_id is None
        assert assigned.position is not None

        await patch(server, other_jwt, conversation, {"status": "closed"})
        closed = await next_of(sub, ConversationEvent, type="UPDATE")
        assert closed.conversation.status == "closed"
        assert closed.previous is not None and closed.previous.status == "open"

        # Plain SQL is a change like any other; so are a new conversation and a deleted one.
        await pool.execute(
            "UPDATE conversations SET status = 'pending' WHERE id = $1", conversation
        )
        pending = await next_of(sub, ConversationEvent, type="UPDATE")
        assert pending.conversation.status == "pending"
        created = await seed.conversation(customer_id)
        inserted = await next_of(sub, ConversationEvent, type="INSERT")
        assert inserted.conversation.id == str(created) and inserted.previous is None
        await pool.execute("DELETE FROM conversations WHERE id = $1", created)
        deleted = await next_of(sub, ConversationEvent, type="DELETE")
        assert deleted.conversation.id == str(created)

        # The handler got the same events, in order.
        async with asyncio.timeout(5):
            await last_handled.wait()
        after_join = [e for e in handled if e.type != "INSERT" or e.conversation.id == str(created)]
        assert [(e.type, e.conversation.status) for e in after_join] == [
            ("UPDATE", "open"),
            ("UPDATE", "closed"),
            ("UPDATE", "pending"),
            ("INSERT", "open"),
            ("DELETE", "open"),
        ]


async def test_a_customer_hears_changes_of_their_own_conversations_only(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer_id, portal = await seed.customer()
    stranger_id, _ = await seed.customer()
    mine = await seed.conversation(customer_id)
    theirs = await seed.conversation(stranger_id)
    async with RealtimeMessagingManager(
        server.http_url, server.anon_key, access_token=portal
    ) as customer:
        sub = await customer.subscribe_to_customer_messages(customer_id)
        # The stranger's change commits first: were it delivered, it would come first.
        await pool.execute("UPDATE conversations SET status = 'closed' WHERE id = $1", theirs)
        await pool.execute("UPDATE conversations SET status = 'resolved' WHERE id = $1", mine)
        seen: list[ConversationEvent] = []
        async with asyncio.timeout(5):
            async for event in sub:
                if isinstance(event, ConversationEvent):
                    seen.append(event)
                    if event.conversation.status == "resolved":
                        break
        # (The INSERT of their own, committed just before the join, may be there too.)
        assert {e.conversation.id for e in seen} == {str(mine)}
        assert seen[-1].type == "UPDATE" and seen[-1].previous is not None


async def test_the_conversation_topic_is_unchanged(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """``conversation:<id>`` joins with its ``conversation_id`` filter (which the conversations
    table could not take) and carries no conversation changes."""
    customer_id, portal = await seed.customer()
    _, staff_jwt = await seed.staff()
    conversation = await seed.conversation(customer_id)
    async with (
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=staff_jwt) as staff,
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=portal) as customer,
    ):
        errors: list[Exception] = []
        sub = await staff.subscribe_to_conversation(conversation, on_error=errors.append)
        assert sub.channel is not None
        assert {b["table"] for b in sub.channel.postgres_changes} == {
            "customer_messages",
            "message_read_receipts",
            "message_typing_indicators",
            "message_delivery_status",
        }
        await pool.execute(
            "UPDATE conversations SET status = 'pending' WHERE id = $1", conversation
        )
        sent = await customer.send_message(conversation, "after the change")
        # The message came after the change in the feed: anything of the change came before it.
        seen = []
        async with asyncio.timeout(5):
            async for event in sub:
                seen.append(event)
                if isinstance(event, MessageEvent) and event.id == sent["id"]:
                    break
        assert not [e for e in seen if isinstance(e, ConversationEvent)]
        assert errors == []


def test_a_change_without_a_readable_old_row_still_has_the_new_one() -> None:
    row = {
        "id": "c",
        "customer_id": "u",
        "subject": None,
        "status": "open",
        "assigned_user_id": None,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:01Z",
    }
    event = event_from_change(
        {"table": "conversations", "type": "UPDATE", "record": row, "old_record": {"id": "c"}}
    )
    assert isinstance(event, ConversationEvent)
    assert event.conversation.status == "open" and event.previous is None
    try:
        event_from_change({"table": "conversations", "record": {**row, "status": "bogus"}})
    except ValueError:
        pass
    else:
        raise AssertionError("an unknown status was accepted")
