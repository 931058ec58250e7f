"""The webhook admin endpoints over real HTTP: register, list with health, attempts by cursor,
change, pause and resume, delete; the service key only; hostile input refused in the envelope; failing endpoints in
/metrics. A server and database of this module's own (its worker posts to a loopback receiver).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from realtime_messaging.config import WebhookSettings
from tests.conftest import RunningServer, Seed, fresh_database, running_server

from .conftest import UNKNOWN, Http, assert_error, assert_ok

LOOPBACK_OK = WebhookSettings(
    poll_interval=0.05, timeout=5.0, retry_base=0.05, retry_max=0.1, allow_private=True
)
EVENTS = ["message.created", "conversation.closed"]


@pytest.fixture(scope="module")
async def hook_db(admin_url: str) -> AsyncIterator[str]:
    async with fresh_database(admin_url) as url:
        yield url


@pytest.fixture(scope="module")
async def hook_server(hook_db: str) -> AsyncIterator[RunningServer]:
    async with running_server(hook_db, webhooks=LOOPBACK_OK) as srv:
        yield srv


@pytest.fixture
async def hpool(hook_db: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(hook_db, min_size=1, max_size=4) as p:
        await p.execute("TRUNCATE rtm.webhooks CASCADE")
        yield p


@pytest.fixture
async def api(hook_server: RunningServer) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        yield Http(session, hook_server.http_url)


class Endpoint:
    """A loopback receiver answering ``status`` to every post; ``count`` wakes waiters."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.posts = 0
        #: Each post's query string (which subscription sent it) and message content.
        self.received: list[tuple[str, str | None]] = []
        self.changed = asyncio.Condition()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        event = orjson.loads(await request.read())
        async with self.changed:
            self.posts += 1
            self.received.append((request.query_string, event["data"].get("content")))
            self.changed.notify_all()
        return web.Response(status=self.status, text="x" * 100_000)  # read only in part

    async def until_posts(self, n: int) -> None:
        async with asyncio.timeout(15), self.changed:
            await self.changed.wait_for(lambda: self.posts >= n)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = Endpoint(200)
    app = web.Application()
    app.router.add_post("/in", ep.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    ep.url = f"http://127.0.0.1:{runner.addresses[0][1]}/in"
    try:
        yield ep
    finally:
        await runner.cleanup()


async def create(api: Http, key: str, **body: Any) -> tuple[int, Any]:
    status, reply, _ = await api.call("POST", "/api/admin/webhooks", key, json=body)
    return status, reply


async def test_register_list_and_delete(
    api: Http, hook_server: RunningServer, hpool: asyncpg.Pool, endpoint: Endpoint
) -> None:
    key = hook_server.service_key
    status, reply = await create(api, key, url=endpoint.url, events=EVENTS, secret="k" * 20)
    created = assert_ok(status, reply, 201)
    assert created["url"] == endpoint.url and created["secret"] == "k" * 20
    assert sorted(created["events"]) == sorted(EVENTS) and created["active"] is True
    # Without a secret, one is generated and shown this once.
    status, reply = await create(api, key, url=endpoint.url, events=["message.created"])
    generated = assert_ok(status, reply, 201)
    assert generated["secret"].startswith("whsec_") and len(generated["secret"]) > 32
    assert (
        await hpool.fetchval(
            "SELECT secret FROM rtm.webhooks WHERE id = $1", uuid.UUID(generated["id"])
        )
        == generated["secret"]
    )

    listed = assert_ok(*(await api.call("GET", "/api/admin/webhooks", key))[:2])["webhooks"]
    assert [w["id"] for w in listed] == [created["id"], generated["id"]]
    assert all("secret" not in w for w in listed)
    assert listed[0]["consecutiveFailures"] == 0 and listed[0]["lastError"] is None
    assert listed[0]["pending"] == 0

    status, reply, _ = await api.call("DELETE", f"/api/admin/webhooks/{created['id']}", key)
    assert assert_ok(status, reply) == {"id": created["id"]}
    status, reply, _ = await api.call("DELETE", f"/api/admin/webhooks/{created['id']}", key)
    assert_error(status, reply, 404, "not_found", "webhook")
    listed = assert_ok(*(await api.call("GET", "/api/admin/webhooks", key))[:2])["webhooks"]
    assert [w["id"] for w in listed] == [generated["id"]]


async def test_a_failing_endpoint_shows_in_the_list_the_attempts_and_metrics(
    api: Http, hook_server: RunningServer, hpool: asyncpg.Pool, endpoint: Endpoint
) -> None:
    key = hook_server.service_key
    endpoint.status = 503
    status, reply = await create(api, key, url=endpoint.url, events=["message.created"])
    hook = assert_ok(status, reply, 201)["id"]
    seed = Seed(hpool)
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    await hpool.execute(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "VALUES ($1, 'customer', $2, 'hi')",
        conv,
        customer,
    )
    await endpoint.until_posts(8)  # the 8th post: seven attempts recorded
    listed = assert_ok(*(await api.call("GET", "/api/admin/webhooks", key))[:2])["webhooks"]
    (health,) = listed
    assert health["consecutiveFailures"] >= 3 and health["lastFailureAt"] is not None
    assert health["lastError"].startswith("HTTP 503: xxx") and len(health["lastError"]) <= 500
    assert health["pending"] == 1 and health["lastSuccessAt"] is None

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hook_server.http_url}/metrics") as response:
            metrics = await response.text()
    failing = [
        line
        for line in metrics.splitlines()
        if line.startswith("rtm_webhook_consecutive_failures{")
    ]
    assert any(f'webhook="{hook}"' in line and not line.endswith(" 0.0") for line in failing)
    assert 'rtm_webhook_attempts_total{outcome="failed"}' in metrics

    # Attempts, newest first, two per page, until the cursor runs out.
    path = f"/api/admin/webhooks/{hook}/attempts"
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(3):
        params = {"limit": "2", **({"before": cursor} if cursor else {})}
        page = assert_ok(*(await api.call("GET", path, key, params=params))[:2])
        assert len(page["attempts"]) == 2
        seen += page["attempts"]
        cursor = page["nextCursor"]
        assert cursor is not None
    assert [int(a["id"]) for a in seen] == sorted((int(a["id"]) for a in seen), reverse=True)
    assert all(a["statusCode"] == 503 and a["eventType"] == "message.created" for a in seen)
    assert len({a["eventId"] for a in seen}) == 1

    # Back up: the pending event goes out and the health resets.
    endpoint.status = 200
    posts = endpoint.posts
    await endpoint.until_posts(posts + 1)
    async with asyncio.timeout(15):
        while True:
            (health,) = assert_ok(*(await api.call("GET", "/api/admin/webhooks", key))[:2])[
                "webhooks"
            ]
            if health["pending"] == 0:
                break
            await asyncio.sleep(0.02)
    assert health["consecutiveFailures"] == 0 and health["lastSuccessAt"] is not None


async def test_only_the_service_key_reaches_them(
    api: Http, hook_server: RunningServer, hpool: asyncpg.Pool
) -> None:
    seed = Seed(hpool)
    _, portal = await seed.customer()
    user = await hpool.fetchval("INSERT INTO users (name) VALUES ('A') RETURNING id")
    staff = seed.staff_token(user)
    routes = [
        ("POST", "/api/admin/webhooks", {"url": "https://example.com/", "events": EVENTS}),
        ("GET", "/api/admin/webhooks", None),
        ("DELETE", f"/api/admin/webhooks/{UNKNOWN}", None),
        ("PATCH", f"/api/admin/webhooks/{UNKNOWN}", {"active": False}),
        ("GET", f"/api/admin/webhooks/{UNKNOWN}/attempts", None),
    ]
    for method, path, body in routes:
        for token in (staff, portal, hook_server.anon_key):
            status, reply, _ = await api.call(method, path, token, json=body)
            assert_error(status, reply, 403, "forbidden", "service_role")
        status, reply, _ = await api.call(method, path, None, json=body)
        assert_error(status, reply, 401, "unauthorized")
    assert await hpool.fetchval("SELECT count(*) FROM rtm.webhooks") == 0


async def test_hostile_input_is_refused_in_the_envelope(
    api: Http, hook_server: RunningServer, hpool: asyncpg.Pool
) -> None:
    key = hook_server.service_key
    good = {"url": "https://example.com/in", "events": EVENTS}
    bad_bodies: list[tuple[dict[str, Any], str]] = [
        ({**good, "url": "ftp://example.com/in"}, "http"),
        ({**good, "url": "javascript:alert(1)"}, "http"),
        ({**good, "url": "https://" + "a" * 3000 + ".com/"}, "url"),
        ({**good, "url": ""}, "url"),
        ({**good, "url": "https://user:pw@example.com/"}, "credentials"),
        ({**good, "url": 42}, "url"),
        ({**good, "events": []}, "events"),
        ({**good, "events": ["message.exploded"]}, "events"),
        ({**good, "events": ["message.created"] * 7}, "events"),
        ({**good, "events": "message.created"}, "events"),
        ({**good, "secret": "short"}, "secret"),
        ({**good, "secret": "é" * 20}, "secret"),
        ({**good, "secret": "k" * 257}, "secret"),
        ({**good, "secret": "has a space in it!!"}, "secret"),
        ({**good, "admin": True}, "admin"),
        ({"events": EVENTS}, "url"),
    ]
    for body, fragment in bad_bodies:
        status, reply = await create(api, key, **body)
        assert_error(status, reply, 422, "validation_error", fragment)
    for raw in (b"{", b"[]", b'"x"', b"[" * 5000 + b"]" * 5000):
        status, reply, _ = await api.call("POST", "/api/admin/webhooks", key, data=raw)
        assert 400 <= status < 500 and reply["success"] is False, (raw[:10], reply)
    status, reply, _ = await api.call("DELETE", "/api/admin/webhooks/not-a-uuid", key)
    assert_error(status, reply, 422, "validation_error", "webhook_id")
    status, reply, _ = await api.call("GET", f"/api/admin/webhooks/{UNKNOWN}/attempts", key)
    assert_error(status, reply, 404, "not_found", "webhook")
    status, reply = await create(api, key, **good)
    hook = assert_ok(status, reply, 201)["id"]
    path = f"/api/admin/webhooks/{hook}/attempts"
    for params, fragment in (
        ({"before": "abc"}, "before"),
        ({"before": "1" * 19}, "before"),
        ({"before": "-1"}, "before"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "many"}, "limit"),
    ):
        status, reply, _ = await api.call("GET", path, key, params=params)
        assert_error(status, reply, 422, "validation_error", fragment)
    assert await hpool.fetchval("SELECT count(*) FROM rtm.webhooks") == 1


async def test_the_number_of_webhooks_is_bounded(
    api: Http, hook_server: RunningServer, hpool: asyncpg.Pool
) -> None:
    await hpool.execute(
        "INSERT INTO rtm.webhooks (url, events, secret, active) "
        "SELECT 'https://example.com/' || g, '{message.created}', repeat('k', 16), false "
        "FROM generate_series(1, 100) g"
    )
    status, reply = await create(
        api, hook_server.service_key, url="https://example.com/", events=EVENTS
    )
    assert_error(status, reply, 409, "limit_reached", "100")


async def test_private_targets_are_refused_unless_allowed(
    hook_db: str, hpool: asyncpg.Pool
) -> None:
    defaults = WebhookSettings(enabled=False)
    async with running_server(hook_db, webhooks=defaults) as srv:
        async with aiohttp.ClientSession() as session:
            api = Http(session, srv.http_url)
            for url in (
                "http://127.0.0.1:8080/in",
                "http://localhost/in",
                "http://[::1]/in",
                "http://10.1.2.3/in",
                "http://169.254.169.254/latest/meta-data/",
            ):
                status, reply = await create(api, srv.service_key, url=url, events=EVENTS)
                assert_error(status, reply, 422, "validation_error", "RTM_WEBHOOK_ALLOW_PRIVATE")
            status, reply = await create(
                api, srv.service_key, url="https://hooks.example.com/in", events=EVENTS
            )
            assert_ok(status, reply, 201)


async def until_pending(api: Http, key: str, hook: str, pending: int) -> None:
    """Wait until the admin list shows ``pending`` events for ``hook`` (the worker records a
    round's outcome after its posts)."""
    async with asyncio.timeout(15):
        while (await listed(api, key))[hook]["pending"] != pending:
            await asyncio.sleep(0.02)


async def listed(api: Http, key: str) -> dict[str, dict[str, Any]]:
    """The admin list, by id."""
    status, reply, _ = await api.call("GET", "/api/admin/webhooks", key)
    return {w["id"]: w for w in assert_ok(status, reply)["webhooks"]}


async def test_a_webhook_is_changed_in_place_with_the_rules_of_registration(
    api: Http, hook_server: RunningServer, hpool: asyncpg.Pool
) -> None:
    key = hook_server.service_key
    status, reply = await create(api, key, url="https://example.com/a", events=EVENTS)
    hook = assert_ok(status, reply, 201)["id"]
    path = f"/api/admin/webhooks/{hook}"
    changes = {"url": "https://example.com/b", "events": ["message.deleted"] * 2}
    status, reply, _ = await api.call("PATCH", path, key, json=changes)
    changed = assert_ok(status, reply)
    assert (changed["url"], changed["events"]) == ("https://example.com/b", ["message.deleted"])
    assert changed["active"] is True and changed["pending"] == 0 and "secret" not in changed
    status, reply, _ = await api.call("PATCH", path, key, json={"secret": "n" * 30})
    assert assert_ok(status, reply)["url"] == "https://example.com/b"
    stored = await hpool.fetchrow("SELECT * FROM rtm.webhooks WHERE id = $1", uuid.UUID(hook))
    assert (stored["secret"], list(stored["events"])) == ("n" * 30, ["message.deleted"])
    assert (await listed(api, key))[hook] == changed

    bad_bodies: list[tuple[Any, str]] = [
        ({"url": "ftp://example.com/in"}, "http"),
        ({"url": "https://user:pw@example.com/"}, "credentials"),
        ({"url": "https://" + "a" * 3000 + ".com/"}, "url"),
        ({"url": None}, "url"),
        ({"events": []}, "events"),
        ({"events": ["message.exploded"]}, "events"),
        ({"events": None}, "events"),
        ({"secret": "short"}, "secret"),
        ({"secret": "has a space in it!!"}, "secret"),
        ({"active": "no"}, "active"),
        ({"active": 0}, "active"),
        ({"active": None}, "active"),
        ({"admin": True}, "admin"),
        ({}, "nothing to change"),
    ]
    for body, fragment in bad_bodies:
        status, reply, _ = await api.call("PATCH", path, key, json=body)
        assert_error(status, reply, 422, "validation_error", fragment)
    status, reply, _ = await api.call("PATCH", path, key, data=b"[")
    assert 400 <= status < 500 and reply["success"] is False
    status, reply, _ = await api.call("PATCH", "/api/admin/webhooks/not-a-uuid", key, json={})
    assert_error(status, reply, 422, "validation_error", "webhook_id")
    status, reply, _ = await api.call(
        "PATCH", f"/api/admin/webhooks/{UNKNOWN}", key, json={"active": False}
    )
    assert_error(status, reply, 404, "not_found", "webhook")
    assert await hpool.fetchval("SELECT secret FROM rtm.webhooks") == "n" * 30


async def test_a_paused_webhook_keeps_its_events_and_sends_them_in_order_once_resumed(
    api: Http, hook_server: RunningServer, hpool: asyncpg.Pool, endpoint: Endpoint
) -> None:
    key = hook_server.service_key
    status, reply = await create(api, key, url=endpoint.url, events=["message.created"])
    paused = assert_ok(status, reply, 201)["id"]
    # A second subscription stays active: once it has its posts, the worker has seen the
    # events, and would have posted the paused one's too.
    status, reply = await create(
        api, key, url=endpoint.url + "?witness", events=["message.created"]
    )
    witness = assert_ok(status, reply, 201)["id"]
    path = f"/api/admin/webhooks/{paused}"
    status, reply, _ = await api.call("PATCH", path, key, json={"active": False})
    assert assert_ok(status, reply)["active"] is False

    seed = Seed(hpool)
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    for text in ("one", "two", "three"):
        await hpool.execute(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'customer', $2, $3)",
            conv,
            customer,
            text,
        )
    await endpoint.until_posts(3)
    assert endpoint.received == [("witness", t) for t in ("one", "two", "three")]
    await until_pending(api, key, witness, 0)
    hooks = await listed(api, key)
    assert (hooks[paused]["active"], hooks[paused]["pending"]) == (False, 3)
    assert (hooks[witness]["active"], hooks[witness]["pending"]) == (True, 0)
    # Pausing again changes nothing.
    status, reply, _ = await api.call("PATCH", path, key, json={"active": False})
    assert assert_ok(status, reply)["pending"] == 3

    status, reply, _ = await api.call("PATCH", path, key, json={"active": True})
    assert assert_ok(status, reply)["active"] is True
    await endpoint.until_posts(6)
    assert endpoint.received[3:] == [("", t) for t in ("one", "two", "three")]
    await until_pending(api, key, paused, 0)
    attempts = assert_ok(
        *(await api.call("GET", f"/api/admin/webhooks/{paused}/attempts", key))[:2]
    )["attempts"]
    assert [a["statusCode"] for a in attempts] == [200, 200, 200]


async def test_a_delete_during_a_delivery_round_waits_for_it_instead_of_deadlocking(
    api: Http, hook_server: RunningServer, hpool: asyncpg.Pool, hook_db: str
) -> None:
    key = hook_server.service_key
    status, reply = await create(api, key, url="https://example.com/in", events=["message.created"])
    hook = uuid.UUID(assert_ok(status, reply, 201)["id"])
    await hpool.execute("UPDATE rtm.webhooks SET active = false WHERE id = $1", hook)
    seed = Seed(hpool)
    customer, _ = await seed.customer()
    await hpool.execute(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "VALUES ($1, 'customer', $2, 'hi')",
        await seed.conversation(customer),
        customer,
    )
    # A worker's round: its rows claimed, then (after the posts) the subscription's health.
    round_ = await asyncpg.connect(hook_db)
    try:
        async with round_.transaction():
            claimed = await round_.fetch(
                "SELECT id FROM rtm.webhook_outbox WHERE webhook_id = $1 FOR UPDATE", hook
            )
            assert len(claimed) == 1
            delete = asyncio.create_task(
                api.call("DELETE", f"/api/admin/webhooks/{hook}", key), name="delete"
            )
            async with asyncio.timeout(15):
                while not await hpool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%webhook%' AND pid <> $1",
                    round_.get_server_pid(),
                ):
                    await asyncio.sleep(0.02)
            await round_.execute(
                "UPDATE rtm.webhooks SET consecutive_failures = consecutive_failures + 1 "
                "WHERE id = $1",
                hook,
            )
    finally:
        await round_.close()
    status, reply, _ = await delete
    assert assert_ok(status, reply) == {"id": str(hook)}
    assert await hpool.fetchval("SELECT count(*) FROM rtm.webhooks WHERE id = $1", hook) == 0
