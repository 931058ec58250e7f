"""Resume after a disconnect, history lost past retention, and surviving database outages."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from realtime_messaging.server.realtime import shared
from realtime_messaging.store import changefeed
from realtime_messaging.store.embedded import EmbeddedPostgres
from realtime_messaging.store.migrate import migrate
from tests.conftest import RunningServer, Seed, fresh_database, running_server
from tests.server.wsclient import RawSocket

from .conftest import is_change, subscribe

INSERT = "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, 'customer', $2, $3)"


async def stamped_head(pool: asyncpg.Pool) -> int:
    """The head position once every committed change so far has been stamped."""
    async with asyncio.timeout(10):
        while await pool.fetchval("SELECT count(*) FROM rtm.change_queue"):
            await asyncio.sleep(0.02)
    head: int = await pool.fetchval("SELECT last_pos FROM rtm.change_feed_state")
    return head


def _messages(conv: object) -> list[dict[str, Any]]:
    return [
        {
            "event": "INSERT",
            "schema": "public",
            "table": "customer_messages",
            "filter": f"conversation_id=eq.{conv}",
        }
    ]


async def _collect_until_subscribed(sock: RawSocket) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Changes replayed before "Subscribed to PostgreSQL", and the system messages seen."""
    changes: list[dict[str, Any]] = []
    systems: list[dict[str, Any]] = []
    while True:
        msg = await sock.recv()
        if msg.get("event") == "postgres_changes":
            changes.append(msg["payload"]["data"])
        elif msg.get("event") == "system":
            systems.append(msg["payload"])
            if msg["payload"]["message"] == "Subscribed to PostgreSQL":
                return changes, {"systems": systems}


async def test_rejoin_with_the_last_position_gets_exactly_what_was_missed(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    sock, _ = await subscribe(server.ws_url, token, f"conversation:{conv}", _messages(conv))
    try:
        for i in range(3):
            await pool.execute(INSERT, conv, customer, f"before-{i}")
        seen = [
            (await sock.expect(is_change("customer_messages")))["payload"]["data"] for _ in range(3)
        ]
        last = seen[-1]["position"]
    finally:
        await sock.close()
    for i in range(5):  # while disconnected
        await pool.execute(INSERT, conv, customer, f"missed-{i}")
    other, _ = await seed.customer()
    await pool.execute(INSERT, await seed.conversation(other), other, "not yours")

    sock = await RawSocket.connect(server.ws_url, token)
    try:
        reply = await sock.join(
            f"conversation:{conv}",
            {"postgres_changes": _messages(conv), "resume": {"position": last}},
        )
        assert reply["status"] == "ok"
        replayed, _ = await _collect_until_subscribed(sock)
        assert [d["record"]["content"] for d in replayed] == [f"missed-{i}" for i in range(5)]
        positions = [d["position"] for d in replayed]
        assert positions == sorted(positions) and positions[0] > last
        await pool.execute(INSERT, conv, customer, "live")
        live = (await sock.expect(is_change("customer_messages")))["payload"]["data"]
        assert live["record"]["content"] == "live" and live["position"] > positions[-1]
    finally:
        await sock.close()


async def test_resume_from_the_current_head_replays_nothing(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    await pool.execute(INSERT, conv, customer, "old")
    head = await stamped_head(pool)
    sock = await RawSocket.connect(server.ws_url, token)
    try:
        await sock.join(
            f"conversation:{conv}",
            {"postgres_changes": _messages(conv), "resume": {"position": head}},
        )
        replayed, _ = await _collect_until_subscribed(sock)
        assert replayed == []
    finally:
        await sock.close()


async def test_history_lost_beyond_retention(admin_url: str) -> None:
    async with (
        fresh_database(admin_url) as url,
        running_server(url, change_retention_seconds=1.0) as srv,
    ):
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            seed = Seed(pool)
            customer, token = await seed.customer()
            conv = await seed.conversation(customer)
            before = await stamped_head(pool)
            await pool.execute(INSERT, conv, customer, "soon forgotten")
            await stamped_head(pool)
            # The server prunes its log by itself; wait (bounded) until it has.
            async with asyncio.timeout(15):
                while await pool.fetchval("SELECT count(*) FROM rtm.change_log"):
                    await asyncio.sleep(0.1)
            sock = await RawSocket.connect(srv.ws_url, token)
            try:
                config = {"postgres_changes": _messages(conv), "resume": {"position": before}}
                await sock.join(f"conversation:{conv}", config)
                replayed, seen = await _collect_until_subscribed(sock)
                lost = [s for s in seen["systems"] if s.get("history_lost")]
                assert lost and lost[0]["message"].startswith("History lost")
                assert lost[0]["position"] == before
                assert replayed == []
                await pool.execute(INSERT, conv, customer, "live again")
                live = (await sock.expect(is_change("customer_messages")))["payload"]["data"]
                assert live["record"]["content"] == "live again"
            finally:
                await sock.close()
        finally:
            await pool.close()


async def test_feed_survives_its_connection_being_killed(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    _, staff_token = await seed.staff()
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    sock, _ = await subscribe(server.ws_url, staff_token, "feed-kill", _messages(conv))
    try:
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'rtm change feed'"
        )
        assert killed >= 1
        for i in range(3):
            await pool.execute(INSERT, conv, customer, f"during-{i}")
        contents = [
            (await sock.expect(is_change("customer_messages"), timeout=15))["payload"]["data"][
                "record"
            ]["content"]
            for _ in range(3)
        ]
        assert contents == ["during-0", "during-1", "during-2"]
    finally:
        await sock.close()


async def test_database_restart_under_a_live_subscription_loses_nothing() -> None:
    """Stop PostgreSQL, keep the socket, start it again: every change committed after is delivered."""
    with tempfile.TemporaryDirectory(prefix="rtm-restart-") as tmp:
        pg = EmbeddedPostgres(Path(tmp))
        try:
            url = pg.url()
            conn = await asyncpg.connect(url)
            await migrate(conn)
            customer = await conn.fetchval("INSERT INTO customers (name) VALUES ('c') RETURNING id")
            conv = await conn.fetchval(
                "INSERT INTO conversations (customer_id) VALUES ($1) RETURNING id", customer
            )
            await conn.close()
            async with running_server(url, feed_poll_interval=0.2) as srv:
                sock, _ = await subscribe(srv.ws_url, srv.service_key, "restart", _messages(conv))
                try:
                    await asyncio.to_thread(pg.restart)
                    # The socket stayed up through the outage.
                    await sock.send("phoenix", "heartbeat", {}, "hb")
                    assert (await sock.reply_to("hb"))["payload"]["status"] == "ok"
                    conn = await asyncpg.connect(url)
                    try:
                        for i in range(3):
                            await conn.execute(INSERT, conv, customer, f"after-{i}")
                    finally:
                        await conn.close()
                    contents = [
                        (await sock.expect(is_change("customer_messages"), timeout=20))["payload"][
                            "data"
                        ]["record"]["content"]
                        for _ in range(3)
                    ]
                    assert contents == ["after-0", "after-1", "after-2"]
                finally:
                    await sock.close()
        finally:
            pg.close()


async def test_readyz_follows_the_database_and_the_feed() -> None:
    import aiohttp

    with tempfile.TemporaryDirectory(prefix="rtm-ready-") as tmp:
        pg = EmbeddedPostgres(Path(tmp))
        try:
            conn = await asyncpg.connect(pg.url())
            await migrate(conn)
            await conn.close()
            async with (
                running_server(pg.url(), feed_poll_interval=0.2) as srv,
                aiohttp.ClientSession() as http,
            ):

                async def wait_for(status: int) -> None:
                    async with asyncio.timeout(20):
                        while True:
                            async with http.get(srv.http_url + "/readyz") as response:
                                if response.status == status:
                                    return
                            await asyncio.sleep(0.05)

                await wait_for(200)
                stopped = asyncio.create_task(asyncio.to_thread(pg.stop))
                await wait_for(503)
                await stopped
                await asyncio.to_thread(pg.start)
                await wait_for(200)
        finally:
            pg.close()


async def test_position_in_subscribed_lets_a_client_resume_before_its_first_change(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    sock = await RawSocket.connect(server.ws_url, token)
    try:
        await sock.join(f"conversation:{conv}", {"postgres_changes": _messages(conv)})
        system = await sock.expect(lambda m: m.get("event") == "system")
        position = system["payload"]["position"]
        assert isinstance(position, int)
    finally:
        await sock.close()
    await pool.execute(INSERT, conv, customer, "while away")
    # Stamped before the rejoin, so that it is history to replay (committed changes stamped
    # while a rejoin is under way arrive live, after "Subscribed": test_rejoin_* covers those).
    await stamped_head(pool)
    sock = await RawSocket.connect(server.ws_url, token)
    try:
        config = {"postgres_changes": _messages(conv), "resume": {"position": position}}
        await sock.join(f"conversation:{conv}", config)
        replayed, _ = await _collect_until_subscribed(sock)
        assert [d["record"]["content"] for d in replayed] == ["while away"]
    finally:
        await sock.close()


_ALL_MESSAGES = [{"event": "*", "schema": "public", "table": "customer_messages"}]


async def _away(pool: asyncpg.Pool, conv: Any, customer: Any) -> tuple[int, list[int]]:
    """Eight messages committed while a client was away: the head before them, and their
    positions."""
    start = await stamped_head(pool)
    for i in range(8):
        await pool.execute(INSERT, conv, customer, f"while away {i}")
    await stamped_head(pool)
    rows = await pool.fetch(
        "SELECT pos FROM rtm.change_log WHERE table_name = 'customer_messages' "
        "AND conversation_id = $1 AND pos > $2 ORDER BY pos",
        conv,
        start,
    )
    assert len(rows) == 8
    return start, [row["pos"] for row in rows]


async def _resume(
    ws_url: str, token: str, topic: str, bindings: list[dict[str, str]], since: int
) -> tuple[list[dict[str, Any]], bool]:
    """Join ``topic`` resuming from ``since``: the changes replayed, and whether the server
    said the history was lost."""
    sock = await RawSocket.connect(ws_url, token)
    try:
        config = {"postgres_changes": bindings, "resume": {"position": since}}
        assert (await sock.join(topic, config))["status"] == "ok"
        replayed, seen = await _collect_until_subscribed(sock)
        return replayed, any(s.get("history_lost") for s in seen["systems"])
    finally:
        await sock.close()


async def test_a_resume_too_far_behind_to_replay_is_told_to_reload(
    database_url: str, seed: Seed, pool: asyncpg.Pool
) -> None:
    """A staff (or service) channel replays every change after its position, read into the
    server's memory: further behind than ``replay_limit`` changes it gets ``history_lost``
    (reload), however long the log is kept; within the limit it gets them all."""
    staff, token = await seed.staff()
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    async with running_server(database_url, replay_limit=5) as srv:
        start, positions = await _away(pool, conv, customer)
        topic = f"staff:{staff}:messages"
        assert await _resume(srv.ws_url, token, topic, _ALL_MESSAGES, start) == ([], True)
        replayed, lost = await _resume(srv.ws_url, token, topic, _ALL_MESSAGES, positions[4])
        assert not lost and len(replayed) == 3


async def test_a_customer_too_far_behind_to_replay_is_told_to_reload(
    database_url: str, seed: Seed, pool: asyncpg.Pool
) -> None:
    """A customer's replay holds only its own changes, but a customer may resume from any
    position: more than ``replay_limit`` changes behind it gets ``history_lost`` too (its
    replay read no further than the limit); within it, every change."""
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    async with running_server(database_url, replay_limit=5) as srv:
        start, positions = await _away(pool, conv, customer)
        topic, bindings = f"conversation:{conv}", _messages(conv)
        assert await _resume(srv.ws_url, token, topic, bindings, start) == ([], True)
        # The bound counts every change of the customer's, its connections' presence too (the
        # first socket adds one or two): one message behind stays well within it.
        replayed, lost = await _resume(srv.ws_url, token, topic, bindings, positions[6])
        assert not lost and [d["record"]["content"] for d in replayed] == ["while away 7"]


async def test_after_history_lost_what_the_reload_covers_is_not_sent(
    database_url: str, seed: Seed, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel told to reload is not sent the changes its replay's read covered: those routed
    while the read was on its way (held for the channel meanwhile) were committed before the
    read's head, so the reload the client makes now reads them. What comes after the head
    arrives live, once."""
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    reading, go = asyncio.Event(), asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:
        reading.set()
        await go.wait()
        return await changefeed.read_missed(*args, **kwargs)

    async with running_server(database_url, replay_limit=5) as srv:
        start, _ = await _away(pool, conv, customer)
        watcher, _ = await subscribe(srv.ws_url, token, f"conversation:{conv}", _messages(conv))
        monkeypatch.setattr(shared, "read_missed", held)
        sock = await RawSocket.connect(srv.ws_url, token)
        try:
            config = {"postgres_changes": _messages(conv), "resume": {"position": start}}
            assert (await sock.join(f"conversation:{conv}", config))["status"] == "ok"
            await asyncio.wait_for(reading.wait(), 5)
            await pool.execute(INSERT, conv, customer, "during the read")
            # Routed in this process (so held for the resuming channel too) before the read.
            await watcher.expect(is_change("customer_messages"))
            go.set()
            replayed, seen = await _collect_until_subscribed(sock)
            assert [s.get("history_lost") for s in seen["systems"]] == [True, None]
            assert replayed == []
            await pool.execute(INSERT, conv, customer, "after")
            live = (await sock.expect(is_change("customer_messages")))["payload"]["data"]
            assert live["record"]["content"] == "after"
        finally:
            await sock.close()
            await watcher.close()


async def test_a_channel_that_may_see_no_change_reads_no_history(
    database_url: str, seed: Seed, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An anonymous client resuming a postgres_changes channel from position 0 sees no
    change (its identity sees none), and the server reads none for it: it used to read every
    change the log holds (a day's) into memory, to then route none of them."""
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    reads: list[tuple[int, int]] = []
    read = changefeed._Stretch.read

    async def counted(conn: asyncpg.Connection, after: int, head: int) -> Any:
        reads.append((after, head))
        return await read(conn, after, head)

    monkeypatch.setattr(changefeed._Stretch, "read", counted)
    async with running_server(database_url) as srv:
        await pool.execute(INSERT, conv, customer, "kept in the log")
        await stamped_head(pool)
        sock = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            config = {"postgres_changes": _ALL_MESSAGES, "resume": {"position": 0}}
            assert (await sock.join("lobby", config))["status"] == "ok"
            replayed, _ = await _collect_until_subscribed(sock)
            assert replayed == []
        finally:
            await sock.close()
    assert reads == []
