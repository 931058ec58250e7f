"""The SDK against a real server: two managers in one conversation, and resume after a restart."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from realtime_messaging import RealtimeMessagingManager, get_realtime_manager
from realtime_messaging.client import (
    ApiError,
    ChannelClosedError,
    ChannelError,
    ConnectionLostError,
    DeliveryStatusEvent,
    HeartbeatTimeoutError,
    JoinRefusedError,
    MessageEvent,
    PresenceEvent,
    ReadReceiptEvent,
    Subscription,
    TypingIndicatorEvent,
)
from realtime_messaging.client.events import TypingTransitions, event_from_change
from realtime_messaging.client.manager import socket_url
from tests.conftest import RunningServer, Seed, running_server

E = TypeVar("E")

FAST = {"reconnect_base": 0.05, "reconnect_max": 0.3, "heartbeat_interval": 1.0}


async def next_of(sub: Subscription, kind: type[E], timeout: float = 5.0, **match: Any) -> E:
    """The next event of ``kind`` whose fields equal ``match`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        async for event in sub:
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in match.items()):
                return event
    raise AssertionError("subscription ended")


async def insert_message(
    pool: asyncpg.Pool, conversation: uuid.UUID, sender: uuid.UUID, text: str
) -> str:
    message_id = await pool.fetchval(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "VALUES ($1, 'customer', $2, $3) RETURNING id",
        conversation,
        sender,
        text,
    )
    return str(message_id)


def test_socket_url() -> None:
    assert socket_url("http://h:1") == "ws://h:1/realtime/v1/websocket"
    assert socket_url("https://h/base/") == "wss://h/base/realtime/v1/websocket"


def test_typing_event_is_false_when_deleted_or_expired() -> None:
    row = {
        "id": "i",
        "conversation_id": "c",
        "customer_id": "x",
        "user_id": None,
        "is_typing": True,
        "started_at": "2020-01-01T00:00:00Z",
        "expires_at": "2020-01-01T00:00:05Z",
    }
    expired = event_from_change(
        {"table": "message_typing_indicators", "type": "UPDATE", "record": row}
    )
    deleted = event_from_change(
        {"table": "message_typing_indicators", "type": "DELETE", "old_record": row}
    )
    assert isinstance(expired, TypingIndicatorEvent) and not expired.is_typing
    assert isinstance(deleted, TypingIndicatorEvent) and not deleted.is_typing


def test_typing_transitions_are_one_start_and_one_stop_per_participant() -> None:
    def change(who: str, is_typing: bool, conversation: str = "c") -> TypingIndicatorEvent:
        return TypingIndicatorEvent(
            id=f"{conversation}-{who}",
            conversation_id=conversation,
            is_typing=is_typing,
            started_at="2020-01-01T00:00:00Z",
            expires_at="2020-01-01T00:00:05Z",
            customer_id=who,
        )

    transitions = TypingTransitions()
    feed = [
        change("a", False),  # a stop of a burst this subscriber never saw start
        change("a", True),  # start
        change("b", True),  # someone else: their own burst
        change("a", True),  # refresh
        change("a", True, "d"),  # the same participant in another conversation
        change("a", False),  # stop (the helper's, or the server's on send)
        change("a", False),  # the row deleted at its expiry
        change("a", True),  # a new burst
    ]
    accepted = [
        (e.customer_id, e.conversation_id, e.is_typing) for e in feed if transitions.accept(e)
    ]
    assert accepted == [
        ("a", "c", True),
        ("b", "c", True),
        ("a", "d", True),
        ("a", "c", False),
        ("a", "c", True),
    ]
    transitions.clear()
    assert transitions.accept(change("a", True))


async def test_get_realtime_manager_from_environment(
    server: RunningServer, monkeypatch: Any
) -> None:
    import realtime_messaging.client.manager as manager_module

    monkeypatch.setattr(manager_module, "_shared", None)
    monkeypatch.setenv("RTM_URL", server.http_url)
    monkeypatch.setenv("RTM_ANON_KEY", server.anon_key)
    monkeypatch.setenv("RTM_ACCESS_TOKEN", "pt_x")
    manager = get_realtime_manager()
    assert manager is get_realtime_manager()
    assert manager.access_token == "pt_x" and manager.url == server.http_url
    await manager.close()


async def test_customer_and_staff_conversation(
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

        async def on_message(event: MessageEvent) -> None:
            handled.append(event)

        csub = await customer.subscribe_to_conversation(conversation, on_message=on_message)
        ssub = await staff.subscribe_to_staff_messages(staff_id)
        assert csub.state == "joined" and ssub.state == "joined"

        # staff -> customer through the HTTP API; the customer's SDK acknowledges delivery
        sent = await staff.send_message(conversation, "Hello from staff")
        got = await next_of(csub, MessageEvent, id=sent["id"])
        assert (got.content, got.sender_type, got.sender_id) == (
            "Hello from staff",
            "staff",
            str(staff_id),
        )
        assert got.position is not None
        assert handled and handled[-1] == got
        delivered = await next_of(
            ssub, DeliveryStatusEvent, message_id=sent["id"], status="delivered"
        )
        assert delivered.recipient_type == "customer" and delivered.recipient_id == str(customer_id)

        # customer -> staff with plain SQL
        message_id = await insert_message(pool, conversation, customer_id, "Hi from SQL")
        got = await next_of(ssub, MessageEvent, id=message_id)
        assert (got.content, got.sender_type, got.conversation_id) == (
            "Hi from SQL",
            "customer",
            str(conversation),
        )

        # typing start and stop
        await customer.send_typing_indicator(conversation, None, customer_id, True)
        typing = await next_of(ssub, TypingIndicatorEvent, customer_id=str(customer_id))
        assert typing.is_typing and typing.conversation_id == str(conversation)
        await customer.send_typing_indicator(conversation, None, customer_id, False)
        await next_of(ssub, TypingIndicatorEvent, customer_id=str(customer_id), is_typing=False)

        # read receipts both ways, and unread counts
        assert await customer.get_unread_count(customer_id=customer_id) == 1
        await customer.mark_message_as_read(sent["id"], None, customer_id)
        assert await customer.get_unread_count(customer_id=customer_id) == 0
        receipt = await next_of(ssub, ReadReceiptEvent, message_id=sent["id"])
        assert receipt.read_by_customer_id == str(customer_id) and receipt.read_by_user_id is None
        await staff.mark_message_as_read(message_id, staff_id, None)
        receipt = await next_of(csub, ReadReceiptEvent, message_id=message_id)
        assert receipt.read_by_user_id == str(staff_id)

        # presence: online already (the customer's socket is connected); what the API sets
        # arrives on the staff's presence subscription.
        psub = await staff.subscribe_to_presence(conversation, staff_id, None)
        assert await staff.is_online(conversation, customer_id=customer_id)
        await customer.update_presence(None, customer_id, "away", {"deviceType": "test"})
        change = await next_of(psub, PresenceEvent, customer_id=str(customer_id))
        assert change.status == "away" and change.metadata == {"deviceType": "test"}
        assert not await staff.is_online(conversation, customer_id=customer_id)
        await customer.update_presence(None, customer_id, "online", None)
        change = await next_of(psub, PresenceEvent, customer_id=str(customer_id))
        assert change.status == "online" and change.metadata == {"deviceType": "test"}
        assert await staff.is_online(conversation, customer_id=customer_id)
        [listed] = [p for p in await staff.get_presence(conversation) if p.customer_id]
        assert listed.status == "online" and listed.id == change.id

        assert await customer.unsubscribe(f"conversation:{conversation}")
        assert not await customer.unsubscribe(f"conversation:{conversation}")
        async with asyncio.timeout(2):
            buffered = [e async for e in csub]  # iteration ends after unsubscribe
        assert all(not isinstance(e, Exception) for e in buffered)
        assert csub.state == "closed"


async def test_customers_presence_follows_the_customers_named_and_only_them(
    server: RunningServer, seed: Seed
) -> None:
    """A staff list's customers' presence, live: changes of the customers named arrive, and
    those of another customer, committed before them, never do."""
    named, named_portal = await seed.customer()
    other, other_portal = await seed.customer()
    _, staff_jwt = await seed.staff()
    async with (
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=staff_jwt) as staff,
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=named_portal) as a,
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=other_portal) as b,
    ):
        sub = await staff.subscribe_to_customers_presence([named, "not-a-uuid", str(named)])
        assert sub.channel_name.startswith("customers-presence:")
        await b.update_presence(None, other, "online", None)
        await a.update_presence(None, named, "online", None)
        first = await next_of(sub, PresenceEvent)
        await a.update_presence(None, named, "away", None)
        second = await next_of(sub, PresenceEvent)
        assert [(e.customer_id, e.status) for e in (first, second)] == [
            (str(named), "online"),
            (str(named), "away"),
        ]


async def test_a_customer_follows_its_agents_presence_and_no_other_staffs(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """A customer's list shows its agents' presence live: changes of the agent assigned to
    its conversation arrive, and those of another agent it names, committed before them, never
    do (that agent works only on another customer's conversation)."""
    customer, portal = await seed.customer()
    agent, agent_jwt = await seed.staff()
    stranger, stranger_jwt = await seed.staff()
    conversation = await seed.conversation(customer)
    await pool.execute(
        "UPDATE conversations SET assigned_user_id = $1 WHERE id = $2", agent, conversation
    )
    async with (
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=portal) as mine,
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=agent_jwt) as a,
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=stranger_jwt) as s,
    ):
        sub = await mine.subscribe_to_staff_presence([stranger, "not-a-uuid", agent])
        assert sub.channel_name.startswith("staff-presence:")
        await s.update_presence(stranger, None, "away", None)
        await a.update_presence(agent, None, "away", None)
        first = await next_of(sub, PresenceEvent)
        await a.update_presence(agent, None, "online", None)
        second = await next_of(sub, PresenceEvent)
        assert [(e.user_id, e.status) for e in (first, second)] == [
            (str(agent), "away"),
            (str(agent), "online"),
        ]


async def test_join_refused_is_raised(server: RunningServer, seed: Seed) -> None:
    customer_id, portal = await seed.customer()
    other, _ = await seed.customer()
    async with RealtimeMessagingManager(server.http_url, server.anon_key, access_token=portal) as m:
        try:
            await m.subscribe_to_customer_messages(other)
        except JoinRefusedError as exc:
            assert "Unauthorized" in exc.reason
        else:
            raise AssertionError("join of another customer's topic succeeded")
        assert m.subscriptions == {}


async def test_resume_after_server_restart(
    database_url: str, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer_id, _ = await seed.customer()
    staff_id, staff_jwt = await seed.staff()
    conversation = await seed.conversation(customer_id)
    errors: list[Exception] = []
    async with running_server(database_url) as first:
        port = urlsplit(first.http_url).port
        manager = RealtimeMessagingManager(
            first.http_url, first.anon_key, access_token=staff_jwt, on_error=errors.append, **FAST
        )
        sub = await manager.subscribe_to_conversation(conversation, on_error=errors.append)
        expected = [await insert_message(pool, conversation, customer_id, "m0")]
        await next_of(sub, MessageEvent, id=expected[0])
    try:
        # the server is down: these are only in the database
        for i in range(1, 6):
            expected.append(await insert_message(pool, conversation, customer_id, f"m{i}"))
        async with running_server(database_url, port=port):
            # racing the client's rejoin
            for i in range(6, 9):
                expected.append(await insert_message(pool, conversation, customer_id, f"m{i}"))
            received: list[str] = []
            async with asyncio.timeout(15):
                async for event in sub:
                    if isinstance(event, MessageEvent):
                        received.append(event.id)
                        if event.id == expected[-1]:
                            break
            assert received == expected[1:]
            assert manager.socket.connections == 2
            # live again, and nothing is repeated
            expected.append(await insert_message(pool, conversation, customer_id, "live"))
            event = await next_of(sub, MessageEvent)
            assert event.id == expected[-1]
            assert any(isinstance(e, ConnectionLostError) for e in errors)
    finally:
        await manager.close()


class FreezingProxy:
    """A TCP proxy whose open connections can be frozen: bytes stop flowing, nothing closes."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.connections = 0
        self._frozen_upto = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        generation = self.connections
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if generation <= self._frozen_upto:
                    continue  # swallowed: the peer never hears of it
                dst.write(data)
            dst.close()

        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )

    def freeze_existing(self) -> None:
        self._frozen_upto = self.connections

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


async def test_half_open_connection_is_detected_and_recovered(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer_id, _ = await seed.customer()
    _, staff_jwt = await seed.staff()
    conversation = await seed.conversation(customer_id)
    proxy = FreezingProxy(urlsplit(server.http_url).port or 0)
    port = await proxy.start()
    errors: list[Exception] = []
    manager = RealtimeMessagingManager(
        f"http://127.0.0.1:{port}",
        server.anon_key,
        access_token=staff_jwt,
        heartbeat_interval=0.2,
        heartbeat_timeout=0.3,
        reconnect_base=0.05,
        reconnect_max=0.2,
    )
    try:
        sub = await manager.subscribe_to_conversation(conversation, on_error=errors.append)
        first = await insert_message(pool, conversation, customer_id, "before")
        await next_of(sub, MessageEvent, id=first)
        proxy.freeze_existing()  # the old connection goes silent without closing
        during = await insert_message(pool, conversation, customer_id, "during")
        event = await next_of(sub, MessageEvent)  # only possible through a new connection
        assert event.id == during
        assert manager.socket.connections == 2
        assert any(isinstance(e, HeartbeatTimeoutError) for e in errors)
    finally:
        await manager.close()
        await proxy.close()


async def test_expired_token_refreshed_with_set_auth(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer_id, _ = await seed.customer()
    staff_id, _ = await seed.staff()
    conversation = await seed.conversation(customer_id)
    closed = asyncio.Event()

    def on_error(error: Exception) -> None:
        if isinstance(error, ChannelClosedError):
            closed.set()

    manager = RealtimeMessagingManager(
        server.http_url, server.anon_key, access_token=seed.staff_token(staff_id, ttl_seconds=2)
    )
    try:
        sub = await manager.subscribe_to_conversation(conversation, on_error=on_error)
        first = await insert_message(pool, conversation, customer_id, "before expiry")
        await next_of(sub, MessageEvent, id=first)
        async with asyncio.timeout(10):
            await closed.wait()  # the server closed the channel when the token expired
        assert sub.state == "closed"
        missed = await insert_message(pool, conversation, customer_id, "while closed")
        await manager.set_auth(seed.staff_token(staff_id))
        received = []
        async with asyncio.timeout(5):
            while True:
                try:
                    event = await anext(sub)
                except ChannelError:
                    continue  # the iterator reports the close in place
                if isinstance(event, MessageEvent):
                    received.append(event.id)
                    break
        assert received == [missed]
        assert sub.state == "joined"
    finally:
        await manager.close()


async def test_connect_typing_over_the_socket_history_and_close(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer_id, portal = await seed.customer()
    staff_id, staff_token = await seed.staff()
    conversation = await seed.conversation(customer_id)
    for i in range(5):
        await insert_message(pool, conversation, customer_id, f"old-{i}")
    async with RealtimeMessagingManager(
        server.http_url, server.anon_key, access_token=staff_token, **FAST
    ) as staff:
        watch = await staff.subscribe_to_conversation(conversation)
        customer = RealtimeMessagingManager(
            server.http_url, server.anon_key, access_token=portal, **FAST
        )
        # connect(): present without any subscription.
        await customer.connect()
        async with asyncio.timeout(5):
            while not await staff.is_online(conversation, customer_id=customer_id):
                await asyncio.sleep(0.05)
        # History, newest first, two pages.
        page, cursor = await customer.get_messages(conversation, limit=3)
        assert [m.content for m in page] == ["old-4", "old-3", "old-2"] and cursor
        rest, end = await customer.get_messages(conversation, limit=3, before=cursor)
        assert [m.content for m in rest] == ["old-1", "old-0"] and end is None
        # With a subscription covering the conversation, typing goes over the socket and is
        # tied to it: closing the manager ends it long before its 5 s expiry.
        await customer.subscribe_to_customer_messages(customer_id)
        await customer.send_typing_indicator(conversation, None, customer_id, True)
        started = await next_of(watch, TypingIndicatorEvent, is_typing=True)
        owner = await pool.fetchval(
            "SELECT o.connection_id FROM rtm.typing_owners o "
            "JOIN message_typing_indicators t ON t.id = o.indicator_id "
            "WHERE t.conversation_id = $1",
            conversation,
        )
        assert owner is not None  # written over the socket, not through HTTP
        await customer.close()
        stopped = await next_of(watch, TypingIndicatorEvent, timeout=3, is_typing=False)
        assert stopped.customer_id == started.customer_id == str(customer_id)
        row = await pool.fetchrow(
            "SELECT count(*) AS n FROM message_typing_indicators WHERE conversation_id = $1",
            conversation,
        )
        assert row["n"] == 0
        # A closed manager refuses further calls instead of opening a session nobody closes.
        try:
            await customer.get_unread_count()
        except Exception as exc:
            assert "closed" in str(exc)
        else:
            raise AssertionError("a closed manager answered")


async def test_a_rate_limit_says_when_to_retry(database_url: str, seed: Seed) -> None:
    customer_id, portal = await seed.customer()
    async with (
        running_server(database_url, rate_presence="1/minute") as srv,
        RealtimeMessagingManager(srv.http_url, srv.anon_key, access_token=portal) as m,
    ):
        await m.update_presence(None, customer_id, "online")
        try:
            await m.update_presence(None, customer_id, "away")
        except ApiError as exc:
            assert exc.status == 429 and exc.code == "rate_limited"
            assert exc.retry_after is not None and 1 <= exc.retry_after <= 60
        else:
            raise AssertionError("the second update was not limited")
