"""``edit_message`` / ``delete_message`` and what subscribers see of them: the same message again
as an ``UPDATE``, live and when a client resumes after a disconnect (docs/sdk.md)."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg

from realtime_messaging import RealtimeMessagingManager
from realtime_messaging.client import ApiError, MessageEvent, RejoinEvent
from tests.client.test_manager import FAST, insert_message, next_of
from tests.client.test_rejoin import until_rejoined
from tests.conftest import RunningServer, Seed, running_server


async def test_edits_and_deletes_reach_on_message_live(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer_id, portal = await seed.customer()
    staff_id, staff_jwt = await seed.staff()
    conversation = await seed.conversation(customer_id)
    await pool.execute(
        "UPDATE conversations SET assigned_user_id = $1 WHERE id = $2", staff_id, conversation
    )
    async with (
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=portal) as customer,
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=staff_jwt) as staff,
    ):
        handled: list[MessageEvent] = []
        csub = await customer.subscribe_to_customer_messages(customer_id)
        ssub = await staff.subscribe_to_conversation(conversation, on_message=handled.append)
        sent = await customer.send_message(conversation, "helo")
        first = await next_of(ssub, MessageEvent, id=sent["id"])
        assert first.change == "INSERT" and not first.edited and not first.deleted

        edited = await customer.edit_message(sent["id"], "hello")
        assert edited["content"] == "hello" and edited["editedAt"] is not None
        for sub in (ssub, csub):
            got = await next_of(sub, MessageEvent, id=sent["id"], change="UPDATE")
            assert (got.content, got.edited, got.deleted) == ("hello", True, False)
            assert got.created_at == first.created_at and got.sender_id == str(customer_id)
        assert [(e.change, e.content) for e in handled if e.id == sent["id"]] == [
            ("INSERT", "helo"),
            ("UPDATE", "hello"),
        ]

        # Staff handling the conversation delete it; both sides see the tombstone.
        tomb = await staff.delete_message(sent["id"])
        assert tomb["deletedAt"] is not None and tomb["content"] == ""
        for sub in (ssub, csub):
            got = await next_of(sub, MessageEvent, id=sent["id"], change="UPDATE", content="")
            assert got.deleted and got.attachments == ()
        assert await staff.delete_message(sent["id"]) == tomb  # again: the same tombstone

        # The refusals are ApiErrors with the API's status and code.
        try:
            await customer.edit_message(sent["id"], "back")
        except ApiError as exc:
            assert (exc.status, exc.code) == (409, "message_deleted")
        else:
            raise AssertionError("editing a deleted message was accepted")

        # History says the same.
        [message], _ = await customer.get_messages(conversation)
        assert message.id == sent["id"] and message.deleted and message.edited
        assert message.content == ""


async def test_a_client_that_resumes_gets_the_edits_and_deletes_it_missed(
    database_url: str, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer_id, _ = await seed.customer()
    _, staff_jwt = await seed.staff()
    conversation = await seed.conversation(customer_id)
    async with running_server(database_url) as first:
        port = urlsplit(first.http_url).port
        manager = RealtimeMessagingManager(
            first.http_url, first.anon_key, access_token=staff_jwt, on_error=lambda e: None, **FAST
        )
        sub = await manager.subscribe_to_conversation(conversation, on_error=lambda e: None)
        kept = await insert_message(pool, conversation, customer_id, "kept")
        gone = await insert_message(pool, conversation, customer_id, "gone")
        await next_of(sub, MessageEvent, id=gone)
    try:
        # While the client is away: plain SQL, as any writer may (the owner is not limited by
        # the window, but gets the same tombstone).
        await pool.execute(
            "UPDATE customer_messages SET content = 'kept, edited' WHERE id = $1", kept
        )
        await pool.execute("UPDATE customer_messages SET deleted_at = now() WHERE id = $1", gone)
        async with running_server(database_url, port=port):
            seen = await until_rejoined(sub)
            replayed = [e for e in seen if isinstance(e, MessageEvent)]
            assert [(e.id, e.change, e.content, e.edited, e.deleted) for e in replayed] == [
                (kept, "UPDATE", "kept, edited", True, False),
                (gone, "UPDATE", "", False, True),
            ]
            assert isinstance(seen[-1], RejoinEvent) and seen[-1].complete
    finally:
        await manager.close()
