"""postgres_changes on a channel: subscribed once however often the topic is joined, and not
at all once left."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from realtime_messaging.server.realtime import shared
from realtime_messaging.store.changefeed import read_missed
from tests.conftest import RunningServer, Seed
from tests.feed.conftest import is_change, subscribe

from ..wsclient import RawSocket


class Writer:
    """A customer's conversation, and a message written into it as the customer."""

    def __init__(self, pool: asyncpg.Pool, customer: uuid.UUID, conversation: uuid.UUID) -> None:
        self.pool = pool
        self.customer = customer
        self.conversation = conversation
        #: One binding: the conversation's new messages.
        self.bindings = [
            {
                "event": "INSERT",
                "schema": "public",
                "table": "customer_messages",
                "filter": f"conversation_id=eq.{conversation}",
            }
        ]

    async def write(self, content: str) -> None:
        await self.pool.execute(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'customer', $2, $3)",
            self.conversation,
            self.customer,
            content,
        )


@pytest.fixture
async def subscribed(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> AsyncIterator[tuple[RawSocket, Writer]]:
    """The customer's socket, subscribed to the conversation's new messages."""
    customer, token = await seed.customer()
    writer = Writer(pool, customer, await seed.conversation(customer))
    topic = f"conversation:{writer.conversation}"
    sock, _ = await subscribe(server.ws_url, token, topic, writer.bindings)
    try:
        yield sock, writer
    finally:
        await sock.close()


def _content(message: dict[str, Any]) -> str:
    content: str = message["payload"]["data"]["record"]["content"]
    return content


async def test_a_rejoined_topic_gets_each_change_once(
    subscribed: tuple[RawSocket, Writer],
) -> None:
    sock, writer = subscribed
    config = {"postgres_changes": writer.bindings}
    assert (await sock.join(f"conversation:{writer.conversation}", config))["status"] == "ok"
    system = await sock.expect(lambda m: m.get("event") == "system")
    assert system["payload"]["message"] == "Subscribed to PostgreSQL"
    await writer.write("first")
    await writer.write("second")
    # Had the replaced channel kept its bindings, "first" would come twice, before "second".
    got = [_content(await sock.expect(is_change("customer_messages"))) for _ in range(2)]
    assert got == ["first", "second"]


async def test_a_left_channel_gets_no_more_changes(subscribed: tuple[RawSocket, Writer]) -> None:
    sock, writer = subscribed
    own = f"customer:{writer.customer}:messages"
    await sock.join(own, {"postgres_changes": writer.bindings})
    await sock.expect(lambda m: m.get("event") == "system")
    await sock.send(f"realtime:conversation:{writer.conversation}", "phx_leave", {}, "30", "1")
    await sock.expect(lambda m: m.get("event") == "phx_close")
    await writer.write("after the leave")
    got = await sock.expect(is_change("customer_messages"))
    assert got["topic"] == f"realtime:{own}" and _content(got) == "after the leave"
    # Both channels' frames for one change are written together: a heartbeat round trip
    # shows whether one for the left channel came too.
    await sock.send("phoenix", "heartbeat", {}, "31")
    rest = []
    while (msg := await sock.recv())["ref"] != "31":
        rest.append(msg)
    assert rest == []


async def test_a_resume_from_the_feed_head_reads_nothing_and_misses_nothing(
    subscribed: tuple[RawSocket, Writer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel resuming from where the feed is (it missed nothing) is subscribed without a
    read of the log; what is committed next reaches it live, once."""
    sock, writer = subscribed
    topic = f"conversation:{writer.conversation}"
    await writer.write("seen")
    await sock.expect(is_change("customer_messages"))
    # Where the feed is now (the socket's presence row may have moved it past "seen").
    assert (await sock.join(topic, {"postgres_changes": writer.bindings}))["status"] == "ok"
    position = (await sock.expect(lambda m: m.get("event") == "system"))["payload"]["position"]
    reads: list[object] = []

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return await read_missed(*args, **kwargs)

    monkeypatch.setattr(shared, "read_missed", counted)
    config = {"postgres_changes": writer.bindings, "resume": {"position": position}}
    assert (await sock.join(topic, config))["status"] == "ok"
    system = await sock.expect(lambda m: m.get("event") == "system")
    assert system["payload"]["message"] == "Subscribed to PostgreSQL"
    assert system["payload"]["position"] == position
    assert reads == []
    await writer.write("live")
    assert _content(await sock.expect(is_change("customer_messages"))) == "live"
    # Not twice: nothing else came before a heartbeat's reply.
    await sock.send("phoenix", "heartbeat", {}, "40")
    rest = []
    while (msg := await sock.recv())["ref"] != "40":
        rest.append(msg)
    assert rest == []
