"""Webhooks from the outbox: events written by the triggers in the change's transaction, posted
by the real worker to a real HTTP receiver on loopback, signed, retried, in order per
conversation, once each with two workers racing. A database of this module's own."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from realtime_messaging.config import WebhookSettings
from realtime_messaging.server.webhooks import (
    GuardedResolver,
    WebhookWorker,
    check_url,
    pause,
    resume,
    retry_delay,
    sign,
)
from tests.conftest import Seed, fresh_database, running_server

SECRET = "s3cret-for-tests-0123456789"
FAST = WebhookSettings(
    poll_interval=0.05, timeout=5.0, retry_base=0.05, retry_max=0.2, allow_private=True
)
WAIT = 15.0


@dataclass
class Post:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.body)
        return value


@dataclass
class Receiver:
    """A webhook endpoint: records every post; ``fail`` decides which ones answer 500."""

    url: str = ""
    posts: list[Post] = field(default_factory=list)
    fail: Callable[[Post], bool] = lambda post: False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        post = Post(dict(request.headers), await request.read())
        failing = self.fail(post)
        async with self.changed:
            self.posts.append(post)
            self.changed.notify_all()
        if failing:
            return web.Response(status=500, text="receiver down")
        return web.Response(status=204)

    async def until(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(condition)

    async def until_posts(self, n: int, timeout: float = WAIT) -> None:
        await self.until(lambda: len(self.posts) >= n, timeout)


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def hook_db(admin_url: str) -> AsyncIterator[str]:
    async with fresh_database(admin_url) as url:
        yield url


@pytest.fixture
async def hpool(hook_db: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(hook_db, min_size=1, max_size=6) as p:
        await p.execute("TRUNCATE rtm.webhooks CASCADE")
        yield p


@asynccontextmanager
async def worker(
    pool: asyncpg.Pool, url: str, settings: WebhookSettings = FAST
) -> AsyncIterator[WebhookWorker]:
    w = WebhookWorker(pool, url, settings)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


async def subscribe(pool: asyncpg.Pool, url: str, events: list[str] | None = None) -> uuid.UUID:
    webhook_id: uuid.UUID = await pool.fetchval(
        "INSERT INTO rtm.webhooks (url, events, secret) VALUES ($1, $2, $3) RETURNING id",
        url,
        events or ["message.created"],
        SECRET,
    )
    return webhook_id


async def conversation(pool: asyncpg.Pool) -> tuple[uuid.UUID, uuid.UUID]:
    seed = Seed(pool)
    customer, _ = await seed.customer()
    return await seed.conversation(customer), customer


async def message(pool: asyncpg.Pool, conv: uuid.UUID, sender: uuid.UUID, text: str) -> uuid.UUID:
    message_id: uuid.UUID = await pool.fetchval(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "VALUES ($1, 'customer', $2, $3) RETURNING id",
        conv,
        sender,
        text,
    )
    return message_id


async def until(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    """Wait until a condition on the database holds (checked every 20 ms), or fail."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


def verify(post: Post, secret: str = SECRET) -> None:
    """The documented check a receiver makes (docs/webhooks.md)."""
    timestamp = post.headers["X-Rtm-Timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + post.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(post.headers["X-Rtm-Signature"], "v1=" + expected)
    assert abs(time.time() - int(timestamp)) < 60
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["X-Rtm-Event"] == post.event["type"]
    assert post.headers["X-Rtm-Event-Id"] == post.event["id"]


# -- pure parts -------------------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k" * 16, 1700000000, body) == "v1=" + expected
    assert sign("k" * 16, 1700000001, body) != "v1=" + expected


def test_retry_delays_double_up_to_the_cap_with_jitter() -> None:
    assert retry_delay(1, 10, 3600, lambda: 1.0) == 10
    assert retry_delay(1, 10, 3600, lambda: 0.0) == 5
    assert retry_delay(4, 10, 3600, lambda: 1.0) == 80
    assert retry_delay(30, 10, 3600, lambda: 1.0) == 3600
    assert retry_delay(10_000, 10, 3600, lambda: 0.5) == 2700


def test_targets_other_than_public_http_are_refused_by_default() -> None:
    for url in (
        "ftp://example.com/x",
        "javascript:alert(1)",
        "http://127.0.0.1/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://10.0.0.1/x",
        "http://192.168.1.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/x",
        "http://localhost:8080/x",
        "http://user:pw@example.com/x",
        "http:///nohost",
        "http://example.com:99999/x",
    ):
        assert check_url(url, allow_private=False) is not None, url
    assert check_url("https://hooks.example.com/in", allow_private=False) is None
    assert check_url("http://93.184.216.34:8080/in", allow_private=False) is None
    assert check_url("http://127.0.0.1:9/x", allow_private=True) is None
    assert check_url("http://224.0.0.1/x", allow_private=True) is not None  # multicast: never


async def test_a_name_resolving_to_loopback_is_refused_at_connection_time() -> None:
    with pytest.raises(OSError, match="may not reach"):
        await GuardedResolver(allow_private=False).resolve("localhost", 80)
    allowed = await GuardedResolver(allow_private=True).resolve("localhost", 80)
    assert allowed and all(r["host"] in ("127.0.0.1", "::1") for r in allowed)


# -- the outbox and the worker ----------------------------------------------------------------


async def test_without_a_subscription_nothing_is_written(hpool: asyncpg.Pool) -> None:
    conv, customer = await conversation(hpool)
    await message(hpool, conv, customer, "nobody listens")
    hook = await subscribe(hpool, "http://127.0.0.1:9/x", ["message.deleted"])
    await message(hpool, conv, customer, "not this event")
    assert await hpool.fetchval("SELECT count(*) FROM rtm.webhook_outbox") == 0
    # A paused subscription's events are written, parked until it is resumed.
    await hpool.execute("UPDATE rtm.webhooks SET active = false WHERE id = $1", hook)
    await hpool.execute("UPDATE rtm.webhooks SET events = '{message.created}' WHERE id = $1", hook)
    await message(hpool, conv, customer, "paused")
    parked = await hpool.fetch("SELECT payload, next_attempt_at::text FROM rtm.webhook_outbox")
    assert [
        (orjson.loads(r["payload"])["data"]["content"], r["next_attempt_at"]) for r in parked
    ] == [("paused", "infinity")]


async def test_every_event_arrives_signed_in_commit_order(
    hpool: asyncpg.Pool, hook_db: str
) -> None:
    conv, customer = await conversation(hpool)
    staff = await hpool.fetchval("INSERT INTO users (name) VALUES ('Agent') RETURNING id")
    all_events = [
        "message.created",
        "message.updated",
        "message.deleted",
        "delivery.failed",
        "conversation.assigned",
        "conversation.closed",
    ]
    async with receiving() as receiver, worker(hpool, hook_db):
        await subscribe(hpool, receiver.url, all_events)
        await hpool.execute(
            "UPDATE conversations SET assigned_user_id = $2 WHERE id = $1", conv, staff
        )
        msg = await message(hpool, conv, customer, "hello")
        await hpool.execute(
            "UPDATE message_delivery_status SET status = 'failed', failed_reason = 'no device' "
            "WHERE message_id = $1",
            msg,
        )
        await hpool.execute(
            "UPDATE customer_messages SET content = 'hello, edited', edited_at = now() "
            "WHERE id = $1",
            msg,
        )
        await hpool.execute(
            "UPDATE customer_messages SET content = '', attachments = '[]', deleted_at = now() "
            "WHERE id = $1",
            msg,
        )
        await hpool.execute("UPDATE conversations SET status = 'closed' WHERE id = $1", conv)
        await receiver.until(lambda: len(receiver.posts) >= 6)
    assert len(receiver.posts) == 6
    for post in receiver.posts:
        verify(post)
    events = [p.event for p in receiver.posts]
    assert [e["type"] for e in events] == [
        "conversation.assigned",
        "message.created",
        "delivery.failed",
        "message.updated",
        "message.deleted",
        "conversation.closed",
    ]
    assigned, created, failed, updated, deleted, closed = (e["data"] for e in events)
    assert assigned["assignedUserId"] == str(staff) and assigned["previousAssignedUserId"] is None
    assert created["id"] == str(msg) and created["content"] == "hello"
    assert created["conversationId"] == str(conv) and created["senderType"] == "customer"
    assert failed["messageId"] == str(msg) and failed["status"] == "failed"
    assert failed["failedReason"] == "no device" and failed["recipientId"] == str(staff)
    assert updated["content"] == "hello, edited" and updated["editedAt"] is not None
    assert deleted["content"] == "" and deleted["deletedAt"] is not None
    assert closed["status"] == "closed" and closed["conversationId"] == str(conv)
    assert len({e["id"] for e in events}) == 6


async def test_a_failing_receiver_gets_the_event_after_retries_with_every_attempt_recorded(
    hpool: asyncpg.Pool, hook_db: str
) -> None:
    conv, customer = await conversation(hpool)
    async with receiving() as receiver, worker(hpool, hook_db):
        receiver.fail = lambda post: len(receiver.posts) < 2
        hook = await subscribe(hpool, receiver.url)
        await message(hpool, conv, customer, "retry me")
        await until(
            lambda: hpool.fetchval(
                "SELECT delivered_at IS NOT NULL FROM rtm.webhook_outbox WHERE webhook_id = $1",
                hook,
            )
        )
    assert len(receiver.posts) == 3
    assert len({p.event["id"] for p in receiver.posts}) == 1  # the same event each time
    assert len({p.body for p in receiver.posts}) == 1
    attempts = await hpool.fetch(
        "SELECT attempt, status_code, error FROM rtm.webhook_attempts WHERE webhook_id = $1 "
        "ORDER BY id",
        hook,
    )
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 500), (2, 500), (3, 204)]
    assert "receiver down" in attempts[0]["error"] and attempts[2]["error"] is None
    health = await hpool.fetchrow("SELECT * FROM rtm.webhooks WHERE id = $1", hook)
    assert health["consecutive_failures"] == 0 and health["last_success_at"] is not None
    assert "HTTP 500" in health["last_error"]
    outbox = await hpool.fetchrow("SELECT * FROM rtm.webhook_outbox WHERE webhook_id = $1", hook)
    assert outbox["attempts"] == 3 and outbox["dead_at"] is None


async def test_an_event_still_failing_after_the_retry_window_is_given_up_and_the_next_goes(
    hpool: asyncpg.Pool, hook_db: str
) -> None:
    conv, customer = await conversation(hpool)
    settings = WebhookSettings(
        poll_interval=0.05,
        timeout=5.0,
        retry_base=0.05,
        retry_max=0.1,
        retry_window=0.3,
        allow_private=True,
    )
    async with receiving() as receiver, worker(hpool, hook_db, settings):
        receiver.fail = lambda post: post.event["data"]["content"] == "doomed"
        hook = await subscribe(hpool, receiver.url)
        await message(hpool, conv, customer, "doomed")
        await message(hpool, conv, customer, "next")
        await receiver.until(
            lambda: any(p.event["data"]["content"] == "next" for p in receiver.posts)
        )
    doomed = await hpool.fetchrow(
        "SELECT * FROM rtm.webhook_outbox WHERE webhook_id = $1 AND payload->'data'->>'content' = 'doomed'",
        hook,
    )
    assert doomed["dead_at"] is not None and doomed["delivered_at"] is None
    assert doomed["attempts"] >= 2
    assert (
        await hpool.fetchval(
            "SELECT count(*) FROM rtm.webhook_attempts WHERE outbox_id = $1", doomed["id"]
        )
        == doomed["attempts"]
    )
    # "next" was posted only once "doomed" was given up.
    contents = [p.event["data"]["content"] for p in receiver.posts]
    assert contents[-1] == "next" and contents.count("next") == 1
    assert set(contents[:-1]) == {"doomed"}


async def test_an_event_written_while_no_worker_runs_or_held_by_a_dead_one_is_delivered(
    hpool: asyncpg.Pool, hook_db: str
) -> None:
    conv, customer = await conversation(hpool)
    async with receiving() as receiver:
        hook = await subscribe(hpool, receiver.url)
        await message(hpool, conv, customer, "while stopped")
        assert (
            await hpool.fetchval(
                "SELECT count(*) FROM rtm.webhook_outbox WHERE webhook_id = $1 AND delivered_at IS NULL",
                hook,
            )
            == 1
        )
        # A process that claimed the row and died before it could record anything.
        doomed = await asyncpg.connect(hook_db)
        tx = doomed.transaction()
        await tx.start()
        held = await doomed.fetch(
            "SELECT id FROM rtm.webhook_outbox WHERE webhook_id = $1 FOR UPDATE SKIP LOCKED", hook
        )
        assert len(held) == 1
        doomed.terminate()
        async with worker(hpool, hook_db):
            await receiver.until(lambda: len(receiver.posts) >= 1)
    assert [p.event["data"]["content"] for p in receiver.posts] == ["while stopped"]


async def set_active(pool: asyncpg.Pool, hook: uuid.UUID, active: bool) -> None:
    """What the admin API's PATCH does: the flag, then park or release the pending events."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE rtm.webhooks SET active = $2 WHERE id = $1", hook, active)
        await (resume if active else pause)(conn, hook)


async def test_the_retry_window_of_a_paused_event_counts_from_its_resume(
    hpool: asyncpg.Pool, hook_db: str
) -> None:
    conv, customer = await conversation(hpool)
    settings = WebhookSettings(
        poll_interval=0.05,
        timeout=5.0,
        retry_base=0.05,
        retry_max=0.1,
        retry_window=30.0,
        allow_private=True,
    )
    failures = {"written long ago": 1}

    def fail(post: Post) -> bool:
        content = post.event["data"]["content"]
        if failures.get(content, 0) > 0:
            failures[content] -= 1
            return True
        return False

    async with receiving() as receiver, worker(hpool, hook_db, settings):
        receiver.fail = fail
        paused = await subscribe(hpool, receiver.url)
        await set_active(hpool, paused, False)
        await message(hpool, conv, customer, "written long ago")
        # Written an hour ago, far outside the 30 s window: a pause must not expire it.
        await hpool.execute(
            "UPDATE rtm.webhook_outbox SET created_at = created_at - interval '1 hour'"
        )
        row = await hpool.fetchrow("SELECT attempts, next_attempt_at::text FROM rtm.webhook_outbox")
        assert (row["attempts"], row["next_attempt_at"]) == (0, "infinity")
        await set_active(hpool, paused, True)
        # Failed once, then delivered: without the pause rule, given up at its first failure.
        await receiver.until_posts(2)

        async def delivered() -> bool:
            return bool(
                await hpool.fetchval(
                    "SELECT delivered_at IS NOT NULL FROM rtm.webhook_outbox WHERE webhook_id = $1",
                    paused,
                )
            )

        await until(delivered)
    assert [p.event["data"]["content"] for p in receiver.posts] == ["written long ago"] * 2


async def test_events_parked_for_a_subscription_that_is_active_are_released(
    hpool: asyncpg.Pool, hook_db: str
) -> None:
    """A writer that read the subscription as paused just before its resume committed parks
    its event after the resume released the others: the worker's sweep releases it."""
    conv, customer = await conversation(hpool)
    async with receiving() as receiver:
        hook = await subscribe(hpool, receiver.url)
        await set_active(hpool, hook, False)
        await message(hpool, conv, customer, "parked late")
        await hpool.execute("UPDATE rtm.webhooks SET active = true WHERE id = $1", hook)
        await message(hpool, conv, customer, "after the resume")
        async with worker(hpool, hook_db):
            await receiver.until_posts(2)
    assert [p.event["data"]["content"] for p in receiver.posts] == [
        "parked late",
        "after the resume",
    ]


async def test_a_later_event_of_a_conversation_waits_for_the_earlier_one_others_do_not(
    hpool: asyncpg.Pool, hook_db: str
) -> None:
    slow, customer_a = await conversation(hpool)
    other, customer_b = await conversation(hpool)
    failures = {"a1": 3}

    def fail(post: Post) -> bool:
        content = post.event["data"]["content"]
        if failures.get(content, 0) > 0:
            failures[content] -= 1
            return True
        return False

    async with receiving() as receiver, worker(hpool, hook_db):
        receiver.fail = fail
        await subscribe(hpool, receiver.url)
        for text in ("a1", "a2", "a3"):
            await message(hpool, slow, customer_a, text)
        await message(hpool, other, customer_b, "b1")
        await receiver.until(lambda: sum(1 for p in receiver.posts) >= 7)
    contents = [p.event["data"]["content"] for p in receiver.posts]
    a_posts = [c for c in contents if c.startswith("a")]
    assert a_posts == ["a1", "a1", "a1", "a1", "a2", "a3"]
    # b1 did not wait behind a1's retries: it went out before a1 succeeded.
    assert contents.index("b1") < max(i for i, c in enumerate(contents) if c == "a1")


async def test_two_workers_racing_deliver_each_event_exactly_once_in_order(
    hpool: asyncpg.Pool, hook_db: str
) -> None:
    conversations = [await conversation(hpool) for _ in range(8)]
    per_conversation = 25
    async with receiving() as receiver:
        await subscribe(hpool, receiver.url)
        # Written before either worker starts, so that both find them at once and race.
        for i in range(per_conversation):
            for conv, customer in conversations:
                await message(hpool, conv, customer, f"{conv}:{i}")
        total = per_conversation * len(conversations)
        async with worker(hpool, hook_db) as one, worker(hpool, hook_db) as two:
            await receiver.until(lambda: len(receiver.posts) >= total, timeout=60)
            await until(
                lambda: hpool.fetchval(
                    "SELECT count(*) = 0 FROM rtm.webhook_outbox WHERE delivered_at IS NULL"
                )
            )
            assert one.stats.delivered + two.stats.delivered == total
    ids = [p.event["id"] for p in receiver.posts]
    assert len(ids) == total and len(set(ids)) == total
    seen: dict[str, list[int]] = {}
    for post in receiver.posts:
        conv_id, _, index = post.event["data"]["content"].partition(":")
        seen.setdefault(conv_id, []).append(int(index))
    assert all(order == list(range(per_conversation)) for order in seen.values())


async def test_loopback_targets_are_refused_by_default_and_the_refusal_recorded(
    hpool: asyncpg.Pool, hook_db: str
) -> None:
    conv, customer = await conversation(hpool)
    strict = WebhookSettings(poll_interval=0.05, retry_base=10.0)
    async with receiving() as receiver, worker(hpool, hook_db, strict):
        hook = await subscribe(hpool, receiver.url)  # written past the API's check
        await message(hpool, conv, customer, "must not leave")
        await until(
            lambda: hpool.fetchval(
                "SELECT count(*) > 0 FROM rtm.webhook_attempts WHERE webhook_id = $1", hook
            )
        )
    assert receiver.posts == []
    error = await hpool.fetchval(
        "SELECT error FROM rtm.webhook_attempts WHERE webhook_id = $1", hook
    )
    assert "refused" in error and "RTM_WEBHOOK_ALLOW_PRIVATE" in error


async def test_the_server_runs_the_worker_and_wakes_it_at_commit(
    hook_db: str, hpool: asyncpg.Pool
) -> None:
    """Through the app: a message sent over HTTP reaches the receiver; the poll interval is
    long, so the wake-up at commit is what delivers it promptly."""
    conv, customer = await conversation(hpool)
    slow_poll = WebhookSettings(poll_interval=30.0, allow_private=True)
    token = await Seed(hpool).portal_token(customer)
    async with receiving() as receiver, running_server(hook_db, webhooks=slow_poll) as srv:
        await subscribe(hpool, receiver.url)
        async with aiohttp.ClientSession() as http:
            delays = []
            for i in range(5):
                started = time.perf_counter()
                async with http.post(
                    f"{srv.http_url}/api/conversations/{conv}/messages",
                    json={"content": f"via the API {i}"},
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    assert response.status == 201, await response.text()
                await receiver.until_posts(i + 1, timeout=5)
                delays.append(time.perf_counter() - started)
            # The worker counts a delivery once the receiver has answered, which is after the
            # receiver has the post: read the metrics until the fifth is counted (bounded).
            delivered = 'rtm_webhook_attempts_total{outcome="delivered"} 5.0'
            async with asyncio.timeout(5):
                while True:
                    async with http.get(f"{srv.http_url}/metrics") as response:
                        metrics = await response.text()
                    if delivered in metrics:
                        break
                    await asyncio.sleep(0.05)  # polls the counter; the timeout fails the test
    assert [p.event["data"]["content"] for p in receiver.posts] == [
        f"via the API {i}" for i in range(5)
    ]
    assert max(delays) < 2.0, delays
    assert delivered in metrics
    assert "rtm_webhook_outbox_pending" in metrics


async def test_with_webhooks_off_the_server_sends_nothing(
    hook_db: str, hpool: asyncpg.Pool
) -> None:
    conv, customer = await conversation(hpool)
    off = WebhookSettings(enabled=False, allow_private=True)
    async with receiving() as receiver, running_server(hook_db, webhooks=off) as srv:
        hook = await subscribe(hpool, receiver.url)
        await message(hpool, conv, customer, "stays in the outbox")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{srv.http_url}/metrics") as response:
                assert "rtm_webhook" not in await response.text()
    assert receiver.posts == []
    assert (
        await hpool.fetchval(
            "SELECT count(*) FROM rtm.webhook_outbox WHERE webhook_id = $1 AND delivered_at IS NULL",
            hook,
        )
        == 1
    )


async def test_edits_and_deletes_through_the_api_are_events(
    hook_db: str, hpool: asyncpg.Pool
) -> None:
    conv, customer = await conversation(hpool)
    token = await Seed(hpool).portal_token(customer)
    auth = {"Authorization": f"Bearer {token}"}
    events = ["message.created", "message.updated", "message.deleted"]
    async with receiving() as receiver, running_server(hook_db, webhooks=FAST) as srv:
        await subscribe(hpool, receiver.url, events)
        async with aiohttp.ClientSession(headers=auth) as http:
            base = f"{srv.http_url}/api"
            async with http.post(
                f"{base}/conversations/{conv}/messages", json={"content": "first"}
            ) as response:
                assert response.status == 201, await response.text()
                message_id = (await response.json())["data"]["id"]
            async with http.patch(
                f"{base}/messages/{message_id}", json={"content": "first, fixed"}
            ) as response:
                assert response.status == 200, await response.text()
            async with http.delete(f"{base}/messages/{message_id}") as response:
                assert response.status == 200, await response.text()
        await receiver.until_posts(3)
    assert [p.event["type"] for p in receiver.posts] == events
    contents = [p.event["data"]["content"] for p in receiver.posts]
    assert contents == ["first", "first, fixed", ""]
    assert all(p.event["data"]["id"] == message_id for p in receiver.posts)
