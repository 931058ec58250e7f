"""The presence rules of migration 0006, on a clock the test moves (``settle(now=...)``).

Each test has a database of its own: settling in the future would otherwise declare the
session's test server dead.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from realtime_messaging.store import liveness as store
from realtime_messaging.store.caller import Caller, as_caller
from realtime_messaging.store.liveness import Connection, Participant
from tests.conftest import fresh_database

AWAY = 300.0
GRACE = 10.0
DEAD = 15.0


@pytest.fixture
async def db(admin_url: str) -> AsyncIterator[asyncpg.Connection]:
    async with fresh_database(admin_url) as url:
        conn = await asyncpg.connect(url)
        try:
            yield conn
        finally:
            await conn.close()


async def _customer(db: asyncpg.Connection) -> Participant:
    customer = await db.fetchval("INSERT INTO customers (name) VALUES ('C') RETURNING id")
    return Participant(None, customer)


async def _now(db: asyncpg.Connection) -> datetime:
    now: datetime = await db.fetchval("SELECT now()")
    return now


async def _settle(db: asyncpg.Connection, at: datetime, *, dead: tuple[str, ...] = ()) -> int:
    """Settle at ``at``, every process but ``dead`` having heartbeaten just then."""
    await db.execute(
        "UPDATE rtm.server_processes SET heartbeat_at = greatest(heartbeat_at, $1) "
        "WHERE id <> ALL($2::text[])",
        at,
        list(dead),
    )
    return await store.settle(db, now=at, away_after=AWAY, grace=GRACE, dead_after=DEAD)


async def _presence(db: asyncpg.Connection, who: Participant) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT status, last_seen_at FROM user_presence "
        "WHERE user_id IS NOT DISTINCT FROM $1 AND customer_id IS NOT DISTINCT FROM $2",
        who.user_id,
        who.customer_id,
    )
    assert row is not None
    return dict(row)


async def _open(db: asyncpg.Connection, process: str, who: Participant) -> str:
    connection_id = f"{process}/{uuid.uuid4().hex}"
    await store.heartbeat(db, process)
    await store.open_connections(db, process, [Connection(connection_id, who)])
    return connection_id


async def test_online_then_away_when_idle_then_online_on_activity(db: asyncpg.Connection) -> None:
    who = await _customer(db)
    connection = await _open(db, "p1", who)
    assert (await _presence(db, who))["status"] == "online"
    t0 = await _now(db)
    assert await _settle(db, t0 + timedelta(seconds=AWAY - 5)) == 0
    assert (await _presence(db, who))["status"] == "online"
    assert await _settle(db, t0 + timedelta(seconds=AWAY + 1)) == 1
    away = await _presence(db, who)
    assert away["status"] == "away"
    # Last seen at the last activity: when the connection opened.
    assert abs((away["last_seen_at"] - t0).total_seconds()) < 1
    await store.record_activity(db, [connection])
    assert (await _presence(db, who))["status"] == "online"


async def test_offline_only_after_the_grace_period(db: asyncpg.Connection) -> None:
    who = await _customer(db)
    connection = await _open(db, "p1", who)
    await store.close_connections(db, [connection])
    closed_at = await db.fetchval(
        "SELECT closed_at FROM rtm.live_connections WHERE id = $1", connection
    )
    await _settle(db, closed_at + timedelta(seconds=GRACE - 1))
    assert (await _presence(db, who))["status"] == "online"
    await _settle(db, closed_at + timedelta(seconds=GRACE + 1))
    gone = await _presence(db, who)
    assert gone["status"] == "offline"
    assert gone["last_seen_at"] == closed_at
    assert await db.fetchval("SELECT count(*) FROM rtm.live_connections") == 0


async def test_a_reconnect_within_the_grace_period_does_not_flicker(
    db: asyncpg.Connection,
) -> None:
    who = await _customer(db)
    first = await _open(db, "p1", who)
    await store.close_connections(db, [first])
    await _open(db, "p1", who)
    t = await _now(db)
    await _settle(db, t + timedelta(seconds=GRACE + 1))
    assert (await _presence(db, who))["status"] == "online"


async def test_several_devices(db: asyncpg.Connection) -> None:
    """Away only when every device is idle; offline only when none is connected."""
    who = await _customer(db)
    phone = await _open(db, "p1", who)
    laptop = await _open(db, "p2", who)
    t0 = await _now(db)
    later = t0 + timedelta(seconds=AWAY + 1)
    # The laptop was used recently (its activity is newer than the phone's).
    await db.execute(
        "UPDATE rtm.live_connections SET last_active_at = $2 WHERE id = $1",
        laptop,
        later - timedelta(seconds=10),
    )
    await _settle(db, later)
    assert (await _presence(db, who))["status"] == "online"
    much_later = later + timedelta(seconds=AWAY)
    await _settle(db, much_later)
    assert (await _presence(db, who))["status"] == "away"
    await store.close_connections(db, [phone])
    await _settle(db, much_later + timedelta(seconds=GRACE + 1))
    assert (await _presence(db, who))["status"] == "away"  # the laptop is still connected
    await store.close_connections(db, [laptop])
    closed = await _now(db)
    await _settle(db, max(closed, much_later) + timedelta(seconds=GRACE + 1))
    assert (await _presence(db, who))["status"] == "offline"


async def test_a_dead_process_takes_its_participants_offline_and_typing_away(
    db: asyncpg.Connection,
) -> None:
    who = await _customer(db)
    other = await _customer(db)
    conv = await db.fetchval(
        "INSERT INTO conversations (customer_id) VALUES ($1) RETURNING id", who.customer_id
    )
    connection = await _open(db, "doomed", who)
    await _open(db, "alive", other)
    typing = await db.fetchval(
        "SELECT (update_typing_indicator($1, NULL, $2, true, 30)).id", conv, who.customer_id
    )
    await db.execute(
        "INSERT INTO rtm.typing_owners (indicator_id, connection_id) VALUES ($1, $2)",
        typing,
        connection,
    )
    last_beat = await db.fetchval(
        "SELECT heartbeat_at FROM rtm.server_processes WHERE id = 'doomed'"
    )
    t = last_beat + timedelta(seconds=DEAD + 1)
    await _settle(db, t, dead=("doomed",))
    # Declared dead: its connection closed as of its last heartbeat, so (dead_after being
    # longer than the grace) its participant is offline at once, last seen then; typing gone.
    assert await db.fetchval("SELECT count(*) FROM rtm.server_processes WHERE id = 'doomed'") == 0
    gone = await _presence(db, who)
    assert gone == {"status": "offline", "last_seen_at": last_beat}
    assert (await _presence(db, other))["status"] == "online"
    assert (
        await db.fetchval("SELECT count(*) FROM message_typing_indicators WHERE id = $1", typing)
        == 0
    )


async def test_a_process_declared_dead_while_alive_reopens_its_connections(
    db: asyncpg.Connection,
) -> None:
    who = await _customer(db)
    connection = await _open(db, "slow", who)
    beat = await db.fetchval("SELECT heartbeat_at FROM rtm.server_processes WHERE id = 'slow'")
    await _settle(db, beat + timedelta(seconds=DEAD + 1), dead=("slow",))
    assert await store.heartbeat(db, "slow") is False  # it learns it was declared dead
    await store.open_connections(db, "slow", [Connection(connection, who)])
    assert await db.fetchval(
        "SELECT closed_at IS NULL FROM rtm.live_connections WHERE id = $1", connection
    )
    assert (await _presence(db, who))["status"] == "online"


async def test_explicit_states_and_connections_agree(db: asyncpg.Connection) -> None:
    """update_user_presence (what the API and RPC call) and the connection-derived state."""
    who = await _customer(db)
    connection = await _open(db, "p1", who)
    caller = Caller.customer(who.customer_id)  # type: ignore[arg-type]
    async with as_caller(db, caller):
        await db.execute("SELECT update_user_presence(NULL, $1, 'away')", who.customer_id)
    t = await _now(db)
    await _settle(db, t + timedelta(seconds=1))
    # Declared away: the sweep does not bring the user back online on its own...
    assert (await _presence(db, who))["status"] == "away"
    # ...activity on the connection does.
    await store.record_activity(db, [connection])
    assert (await _presence(db, who))["status"] == "online"
    # An explicit "online" counts as activity: the idle clock restarts.
    idle_since = t - timedelta(seconds=AWAY * 2)
    await db.execute(
        "UPDATE rtm.live_connections SET last_active_at = $2 WHERE id = $1", connection, idle_since
    )
    async with as_caller(db, caller):
        await db.execute("SELECT update_user_presence(NULL, $1, 'online')", who.customer_id)
    await _settle(db, await _now(db) + timedelta(seconds=1))
    assert (await _presence(db, who))["status"] == "online"


async def test_presence_without_any_connection_lasts_only_the_grace_period(
    db: asyncpg.Connection,
) -> None:
    """A back end may say someone is online; with no connection, that ends after the grace."""
    who = await _customer(db)
    await db.execute("SELECT update_user_presence(NULL, $1, 'online')", who.customer_id)
    t = await _now(db)
    await _settle(db, t + timedelta(seconds=GRACE - 1))
    assert (await _presence(db, who))["status"] == "online"
    await _settle(db, t + timedelta(seconds=GRACE + 1))
    assert (await _presence(db, who))["status"] == "offline"


async def test_concurrent_settles_do_not_conflict(admin_url: str) -> None:
    async with fresh_database(admin_url) as url, asyncpg.create_pool(url, min_size=4) as pool:
        async with pool.acquire() as c:
            for _ in range(20):
                await _open(c, "p1", await _customer(c))
            t = await _now(c)

        async def settle() -> int:
            async with pool.acquire() as c:
                return await _settle(c, t + timedelta(seconds=DEAD + GRACE + 2), dead=("p1",))

        results = await asyncio.gather(*(settle() for _ in range(4)))
        # Exactly the 20 participants went offline, whichever round did it.
        assert sum(results) == 20
        async with pool.acquire() as c:
            assert (
                await c.fetchval("SELECT count(*) FROM user_presence WHERE status = 'offline'")
                == 20
            )
