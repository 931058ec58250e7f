"""The typing, presence and read-receipt helpers against a real server, observed by a staff SDK."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from limits import parse

from realtime_messaging.client import (
    ApiError,
    MessageEvent,
    PresenceEvent,
    PresenceHelper,
    RateBudget,
    ReadReceiptEvent,
    ReadTracker,
    RealtimeMessagingManager,
    Subscription,
    TypingHelper,
    TypingIndicatorEvent,
)
from realtime_messaging.client.events import TypingTransitions, parse_timestamp
from realtime_messaging.config import Settings
from tests.client.test_manager import next_of
from tests.conftest import RunningServer, Seed, running_server


class EveryTypingChange(TypingTransitions):
    """Lets every typing change through (refreshes, stops, deletions): what the helper sent."""

    def accept(self, event: TypingIndicatorEvent) -> bool:
        return True


@dataclass
class Chat:
    """A customer's manager (REST only) and a staff manager watching the conversation, and a
    second staff subscription that sees every typing change the feed carries (``raw``)."""

    customer_id: uuid.UUID
    conversation: uuid.UUID
    customer: RealtimeMessagingManager
    staff: RealtimeMessagingManager
    watch: Subscription
    raw: Subscription

    async def typing(self, timeout: float = 10.0) -> TypingIndicatorEvent:
        """The next typing change of the customer, as the feed carries it."""
        return await next_of(
            self.raw, TypingIndicatorEvent, timeout, customer_id=str(self.customer_id)
        )

    async def presence(self, sub: Subscription, timeout: float = 10.0) -> PresenceEvent:
        return await next_of(sub, PresenceEvent, timeout, customer_id=str(self.customer_id))

    def typing_helper(self, **options: Any) -> TypingHelper:
        return TypingHelper(
            self.customer, self.conversation, customer_id=self.customer_id, **options
        )


@asynccontextmanager
async def chat(srv: RunningServer, seed: Seed) -> AsyncIterator[Chat]:
    customer_id, portal = await seed.customer()
    _, staff_jwt = await seed.staff()
    conversation = await seed.conversation(customer_id)
    async with (
        RealtimeMessagingManager(srv.http_url, srv.anon_key, access_token=portal) as customer,
        RealtimeMessagingManager(srv.http_url, srv.anon_key, access_token=staff_jwt) as staff,
        RealtimeMessagingManager(srv.http_url, srv.anon_key, access_token=staff_jwt) as raw,
    ):
        watch = await staff.subscribe_to_conversation(conversation)
        everything = await raw.subscribe_to_conversation(conversation)
        everything._typing = EveryTypingChange()
        yield Chat(customer_id, conversation, customer, staff, watch, everything)


async def collect(sub: Subscription, last: Callable[[Any], bool]) -> list[Any]:
    """Every event up to and including the first for which ``last`` is true."""
    seen: list[Any] = []
    async with asyncio.timeout(10):
        async for event in sub:
            seen.append(event)
            if last(event):
                return seen
    raise AssertionError("subscription ended")


def moments(events: list[TypingIndicatorEvent]) -> list[datetime]:
    return [parse_timestamp(e.expires_at) for e in events]


# -- typing ---------------------------------------------------------------------------------


async def test_keystrokes_start_typing_once_and_close_stops_it(
    server: RunningServer, seed: Seed
) -> None:
    async with chat(server, seed) as c:
        helper = c.typing_helper(idle_after=30, refresh_every=30)
        for _ in range(50):
            helper.keystroke()
        start = await c.typing()
        assert start.is_typing and start.conversation_id == str(c.conversation)
        await helper.flush()  # the change can arrive before the helper has its answer
        assert helper.is_typing
        for _ in range(50):
            helper.keystroke()
        await helper.aclose()
        assert not helper.is_typing
        stop = await c.typing()  # the very next indicator change: no start per keystroke
        assert not stop.is_typing and stop.change == "UPDATE"
        assert stop.started_at == start.started_at


async def test_typing_is_refreshed_while_typing_and_stops_when_idle(
    server: RunningServer, seed: Seed
) -> None:
    loop = asyncio.get_running_loop()
    async with chat(server, seed) as c, c.typing_helper(idle_after=2.0, refresh_every=0.3) as h:
        h.keystroke()
        starts = [await c.typing()]
        while len(starts) < 3:
            h.keystroke()  # the user keeps typing whenever the indicator changes
            last_key = loop.time()
            starts.append(await c.typing())
        while (event := await c.typing()).is_typing:
            starts.append(event)  # refreshes due before the idle timeout
        assert loop.time() - last_key >= 2.0
        assert all(s.is_typing for s in starts)
        # One continuous indicator: the server keeps when it started and pushes its expiry on.
        assert {s.started_at for s in starts} == {starts[0].started_at}
        expiries = moments(starts)
        assert expiries == sorted(set(expiries))
        # Stopped by the helper (an update), before the server would have expired it (a delete).
        assert event.change == "UPDATE" and moments([event])[0] < expiries[-1]
        assert not h.is_typing


async def test_sending_stops_typing_without_another_request(
    server: RunningServer, seed: Seed
) -> None:
    async with chat(server, seed) as c:
        helper = c.typing_helper(idle_after=30, refresh_every=30)
        helper.keystroke()
        assert (await c.typing()).is_typing
        sent = await helper.send("Where is my order?")
        assert sent["content"] == "Where is my order?" and not helper.is_typing
        helper.keystroke()  # typing again after a send starts a new indicator
        seen = await collect(c.raw, lambda e: isinstance(e, TypingIndicatorEvent) and e.is_typing)
        other = await c.customer.send_message(c.conversation, "It is order 42")
        helper.message_sent()
        await helper.aclose()
        marker = await c.customer.send_message(c.conversation, "marker")
        seen += await collect(c.raw, lambda e: isinstance(e, MessageEvent) and e.id == marker["id"])

        # Each message stopped the indicator on the server and the helper sent no stop of its
        # own (the server's cleanup deleting stopped indicators is not the helper's doing).
        typing = [
            e.is_typing
            for e in seen
            if isinstance(e, TypingIndicatorEvent) and e.change != "DELETE"
        ]
        assert typing == [False, True, False]
        messages = [e.id for e in seen if isinstance(e, MessageEvent)]
        assert messages == [sent["id"], other["id"], marker["id"]]


async def test_a_subscriber_sees_one_start_and_one_stop_per_burst(
    server: RunningServer, seed: Seed
) -> None:
    """Refreshes, the server's stop on send and the row's deletion are one start, one stop."""
    async with chat(server, seed) as c:
        async with c.typing_helper(idle_after=30, refresh_every=0.2) as helper:
            helper.keystroke()
            for _ in range(3):  # a start and two refreshes on the feed
                assert (await c.typing()).is_typing
                helper.keystroke()
            await helper.send("Where is my order?")  # the server stops the indicator
        while (await c.typing()).change != "DELETE":  # the stop, then the deletion
            pass
        marker = await c.staff.send_message(c.conversation, "marker")
        seen = await collect(
            c.watch, lambda e: isinstance(e, MessageEvent) and e.id == marker["id"]
        )
        typing = [e for e in seen if isinstance(e, TypingIndicatorEvent)]
        assert [e.is_typing for e in typing] == [True, False]
        assert {e.customer_id for e in typing} == {str(c.customer_id)}


async def test_own_typing_is_reported_only_when_asked(server: RunningServer, seed: Seed) -> None:
    customer_id, portal = await seed.customer()
    staff_id, staff_jwt = await seed.staff()
    conversation = await seed.conversation(customer_id)

    def manager(token: str, **options: Any) -> RealtimeMessagingManager:
        return RealtimeMessagingManager(
            server.http_url, server.anon_key, access_token=token, **options
        )

    async with (
        manager(portal) as customer,
        manager(portal) as customer_tab,
        manager(portal, include_own_typing=True) as customer_asks,
        manager(staff_jwt) as staff,
        manager(staff_jwt) as staff_tab,
        manager(staff_jwt, include_own_typing=True) as staff_asks,
    ):
        managers = (customer, customer_tab, customer_asks, staff, staff_tab, staff_asks)
        subs = [await m.subscribe_to_conversation(conversation) for m in managers]
        # The customer types (over their socket), then the staff user (over theirs).
        for typist, sees in ((customer, (2, 3, 4, 5)), (staff, (0, 1, 2, 5))):
            for is_typing in (True, False):
                await typist.send_typing_indicator(conversation, is_typing=is_typing)
                for i in sees:
                    event = await next_of(subs[i], TypingIndicatorEvent)
                    assert event.is_typing is is_typing
                    assert (event.customer_id, event.user_id) == (
                        (str(customer_id), None) if typist is customer else (None, str(staff_id))
                    )
        marker = await staff.send_message(conversation, "marker")
        for sub in subs:  # nothing more: no own typing, and no second stop
            seen = await collect(
                sub, lambda e: isinstance(e, MessageEvent) and e.id == marker["id"]
            )
            assert [e for e in seen if isinstance(e, TypingIndicatorEvent)] == []


async def test_typing_errors_go_to_on_error_or_are_raised_by_aclose(
    server: RunningServer, seed: Seed
) -> None:
    stranger, _ = await seed.customer()
    foreign = await seed.conversation(stranger)
    async with chat(server, seed) as c:
        raised = TypingHelper(c.customer, foreign)
        raised.keystroke()
        await raised.flush()
        with pytest.raises(ApiError) as info:
            await raised.aclose()
        assert info.value.status == 404

        mine: list[Exception] = []
        handled = TypingHelper(c.customer, foreign, on_error=mine.append)
        handled.keystroke()
        await handled.flush()
        await handled.aclose()
        assert [getattr(e, "status", None) for e in mine] == [404]

        managers: list[Exception] = []
        c.customer.on_error = managers.append
        to_manager = TypingHelper(c.customer, foreign)
        to_manager.keystroke()
        await to_manager.flush()
        await to_manager.aclose()
        assert [getattr(e, "status", None) for e in managers] == [404]


# -- presence -------------------------------------------------------------------------------


async def test_presence_online_away_online_offline(server: RunningServer, seed: Seed) -> None:
    loop = asyncio.get_running_loop()
    async with chat(server, seed) as c:
        watch = await c.staff.subscribe_to_presence(c.conversation)
        errors: list[Exception] = []
        helper = PresenceHelper(c.customer, away_after=1.5, report_every=30, on_error=errors.append)
        entered = loop.time()
        async with helper:
            assert (await c.presence(watch)).status == "online"
            assert (await c.presence(watch)).status == "away"
            assert loop.time() - entered >= 1.5
            await helper.flush()
            assert helper.status == "away"
            helper.activity()
            assert (await c.presence(watch)).status == "online"
            for _ in range(20):
                helper.activity()
            await helper.flush()
        # Activity within report_every sent nothing more: the next change is the close.
        assert (await c.presence(watch)).status == "offline"
        assert helper.status == "offline" and errors == []
        assert not await c.staff.is_online(c.conversation, customer_id=c.customer_id)


# -- read receipts --------------------------------------------------------------------------


async def test_read_tracker_marks_what_was_seen_in_one_request(
    server: RunningServer, seed: Seed
) -> None:
    async with chat(server, seed) as c:
        sent = [await c.staff.send_message(c.conversation, f"reply {i}") for i in range(3)]
        assert await c.customer.get_unread_count() == 3
        requests: list[list[str]] = []
        original = c.customer.mark_messages_as_read

        async def counted(ids: Any) -> Any:
            requests.append(list(ids))
            return await original(ids)

        c.customer.mark_messages_as_read = counted  # type: ignore[method-assign]
        async with ReadTracker(c.customer, flush_after=30) as tracker:
            for message in sent:
                tracker.add(message["id"], sent[0]["id"])
            await tracker.flush()
            tracker.add(sent[1]["id"])  # already marked: nothing more to send
        ids = [m["id"] for m in sent]
        assert requests == [ids]
        assert await c.customer.get_unread_count() == 0
        receipts: dict[str, ReadReceiptEvent] = {}
        async with asyncio.timeout(10):
            while len(receipts) < len(ids):
                receipt = await next_of(c.watch, ReadReceiptEvent)
                receipts[receipt.message_id] = receipt
        assert sorted(receipts) == sorted(ids)
        assert {r.read_by_customer_id for r in receipts.values()} == {str(c.customer_id)}


# -- rate limits ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def limited(database_url: str) -> AsyncIterator[RunningServer]:
    """A server with limits over a couple of seconds, so that helpers must wait for them."""
    async with running_server(
        database_url,
        rate_typing="5/2 seconds",
        rate_presence="4/2 seconds",
        rate_read_receipts="2/1 second",
    ) as srv:
        yield srv


async def test_continuous_typing_stays_within_the_limit(limited: RunningServer, seed: Seed) -> None:
    errors: list[Exception] = []
    async with chat(limited, seed) as c:
        helper = c.typing_helper(
            idle_after=60, refresh_every=0.05, rate_limit=5, rate_window=2.0, on_error=errors.append
        )
        helper.keystroke()
        starts = [await c.typing() for _ in range(10)]  # over two windows
        await helper.aclose()  # the stop was kept in reserve
        while (stop := await c.typing()).is_typing:
            starts.append(stop)
        assert all(s.is_typing for s in starts) and stop.change == "UPDATE"
        assert {s.started_at for s in starts} == {starts[0].started_at}  # never lapsed
        assert errors == []


async def test_continuous_activity_stays_within_the_presence_limit(
    limited: RunningServer, seed: Seed
) -> None:
    errors: list[Exception] = []
    async with chat(limited, seed) as c:
        watch = await c.staff.subscribe_to_presence(c.conversation)
        helper = PresenceHelper(
            c.customer,
            away_after=60,
            report_every=0.05,
            rate_limit=4,
            rate_window=2.0,
            on_error=errors.append,
        )
        reports = []
        async with helper:
            while len(reports) < 8:
                reports.append(await c.presence(watch))
                helper.activity()
        offline = await c.presence(watch)
        assert [r.status for r in reports] == ["online"] * 8 and offline.status == "offline"
        seen_at = [r.last_seen_at for r in reports]
        assert seen_at == sorted(set(seen_at))  # each one a fresh report
        assert errors == []


async def test_read_batches_wait_for_the_budget(limited: RunningServer, seed: Seed) -> None:
    errors: list[Exception] = []
    async with chat(limited, seed) as c:
        sent = [await c.staff.send_message(c.conversation, f"m{i}") for i in range(5)]
        tracker = ReadTracker(c.customer, rate_limit=2, rate_window=1.0, on_error=errors.append)
        tracker.add(*(m["id"] for m in sent))
        await tracker.flush()
        assert await c.customer.get_unread_count() == 0
        await tracker.aclose()
        assert errors == []


# -- without a server -----------------------------------------------------------------------


def test_rate_budget_counts_a_moving_window() -> None:
    budget = RateBudget(3, 10.0)
    assert budget.free_at(0.0) == 0.0
    budget.record(1.0)
    budget.record(2.0, cost=2)
    assert budget.used(5.0) == 3 and not budget.allows(5.0)
    assert budget.free_at(5.0) == 11.0
    assert budget.free_at(5.0, cost=2) == 12.0
    assert budget.free_at(5.0, cost=3, reserve=1) == float("inf")
    assert budget.allows(11.0) and budget.available(11.0) == 1
    assert budget.available(12.0, reserve=1) == 2


async def test_default_budgets_match_the_server_defaults() -> None:
    settings = Settings()
    manager = RealtimeMessagingManager("http://127.0.0.1:1", "key")
    helpers = (TypingHelper(manager, "c"), PresenceHelper(manager), ReadTracker(manager))
    for helper, limit in zip(
        helpers,
        (settings.rate_typing, settings.rate_presence, settings.rate_read_receipts),
        strict=True,
    ):
        budget = helper.budget
        item = parse(limit)
        assert (budget.limit, budget.window) == (item.amount, item.get_expiry())
        await helper.aclose()  # never used: sends nothing
    await manager.close()
