"""The Python SDK's ``search``, ``list_conversations`` filters and ``get_conversation_counts``
against the real server (docs/sdk.md)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from realtime_messaging import RealtimeMessagingManager
from realtime_messaging.client import ApiError, SearchResult
from tests.conftest import RunningServer, Seed


async def test_search_lists_and_counts_through_the_sdk(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer_id, portal = await seed.customer()
    staff_id, staff_jwt = await seed.staff()
    mine, other = await seed.conversation(customer_id), await seed.conversation(customer_id)
    await pool.execute(
        "UPDATE conversations SET assigned_user_id = $1 WHERE id = $2", staff_id, mine
    )
    word = "w" + uuid.uuid4().hex[:12]
    async with (
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=portal) as customer,
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=staff_jwt) as staff,
    ):
        sent = [await customer.send_message(mine, f"{word} <b>{i}</b> & more") for i in range(3)]
        results, cursor = await staff.search(word, limit=2)
        assert all(isinstance(r, SearchResult) for r in results) and cursor is not None
        rest, last = await staff.search(word, limit=2, cursor=cursor)
        assert last is None
        found = [r.message_id for r in results + rest]
        assert sorted(found) == sorted(m["id"] for m in sent) and len(set(found)) == 3
        assert results[0].snippet.startswith(f"<mark>{word}</mark>")
        assert "&amp;" in results[0].snippet and results[0].conversation_id == str(mine)
        assert (await customer.search(word, conversation_id=other))[0] == []

        # Filters: the staff user's own queue, unread (the customer's three messages).
        listed, _ = await staff.list_conversations(assignee="mine", unread=True, status="open")
        assert [c["id"] for c in listed] == [str(mine)]
        listed, _ = await customer.list_conversations(assignee="unassigned")
        assert [c["id"] for c in listed] == [str(other)]
        counts = await staff.get_conversation_counts()
        assert counts["status"] == "open" and counts["mine"] == 1
        assert (await customer.get_conversation_counts("closed"))["all"] == 0

        with pytest.raises(ApiError) as refused:
            await customer.list_conversations(assignee="mine")
        assert (refused.value.status, refused.value.code) == (422, "validation_error")
