"""A customer follows the presence rows of the staff of their conversations live, as row
security lets them read those rows: the staff assigned to one of their conversations or who
wrote in one, as of the channel's join. Never anyone else's."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from realtime_messaging.server.realtime import shared
from realtime_messaging.store.customer_staff import staff_of_customers
from tests.conftest import RunningServer, Seed
from tests.server.wsclient import RawSocket

from .conftest import is_change, subscribe
from .test_resume import _collect_until_subscribed, stamped_head

PRESENCE = "SELECT update_user_presence($1, NULL, $2, $3::jsonb)"
ASSIGN = "UPDATE conversations SET assigned_user_id = $1 WHERE id = $2"
STAFF_MESSAGE = (
    "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
    "VALUES ($1, 'staff', $2, 'hello')"
)


def _staff_presence(*users: uuid.UUID) -> list[dict[str, Any]]:
    ids = ",".join(str(u) for u in users)
    return [
        {
            "event": "*",
            "schema": "public",
            "table": "user_presence",
            "filter": f"user_id=in.({ids})",
        }
    ]


async def _set(pool: asyncpg.Pool, user: uuid.UUID, status: str, mark: str) -> None:
    await pool.execute(PRESENCE, user, status, f'{{"mark": "{mark}"}}')


async def _staff_rows_until(sock: RawSocket, mark: str) -> list[tuple[str, str]]:
    """(user_id, mark) of every staff presence row received, up to the one marked ``mark``."""
    seen: list[tuple[str, str]] = []
    while True:
        record = (await sock.expect(is_change("user_presence")))["payload"]["data"]["record"]
        if record["user_id"] is None:
            continue  # the customer's own row (not named by these bindings: never sent)
        seen.append((record["user_id"], record["metadata"].get("mark", "")))
        if seen[-1][1] == mark:
            return seen


async def _assigned_to_the_first_of_two(
    seed: Seed, pool: asyncpg.Pool
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, str, uuid.UUID]:
    """Two staff users, and a customer (with a token) whose conversation the first is assigned."""
    first, _ = await seed.staff()
    second, _ = await seed.staff()
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    await pool.execute(ASSIGN, first, conv)
    return first, second, customer, token, conv


async def _readable_by_rules(pool: asyncpg.Pool, customer: uuid.UUID) -> set[str]:
    """The staff presence rows row security lets ``customer`` read."""
    claims = f'{{"role": "authenticated", "customer_id": "{customer}"}}'
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", claims)
        await conn.execute("SET LOCAL ROLE authenticated")
        rows = await conn.fetch("SELECT user_id FROM user_presence WHERE user_id IS NOT NULL")
    return {str(r["user_id"]) for r in rows}


async def test_a_customer_follows_the_staff_of_their_conversations_and_no_one_else(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    assigned, _ = await seed.staff()
    writer, _ = await seed.staff()
    stranger, _ = await seed.staff()  # works only on another customer's conversation
    customer, token = await seed.customer()
    other, _ = await seed.customer()
    conv = await seed.conversation(customer)
    elsewhere = await seed.conversation(other)
    await pool.execute(ASSIGN, assigned, conv)
    await pool.execute(STAFF_MESSAGE, conv, writer)
    await pool.execute(ASSIGN, stranger, elsewhere)
    await pool.execute(STAFF_MESSAGE, elsewhere, stranger)
    for user in (assigned, writer, stranger):
        await _set(pool, user, "online", "start")

    sock, _ = await subscribe(
        server.ws_url, token, "agents", _staff_presence(assigned, writer, stranger)
    )
    # A plain binding on the table still carries the customer's own rows only.
    reply = await sock.join(
        "own", {"postgres_changes": [{"event": "*", "schema": "public", "table": "user_presence"}]}
    )
    assert reply["status"] == "ok"
    try:
        await _set(pool, stranger, "away", "s1")
        await _set(pool, assigned, "away", "a1")
        await _set(pool, stranger, "online", "s2")
        await _set(pool, writer, "away", "w1")
        seen = await _staff_rows_until(sock, "w1")
        assert (str(assigned), "a1") in seen
        assert str(stranger) not in {user for user, _ in seen}
        # What the channel follows is what row security lets the customer read.
        readable = await _readable_by_rules(pool, customer)
        assert {str(assigned), str(writer)} <= readable and str(stranger) not in readable
    finally:
        await sock.close()


async def test_staff_named_later_are_followed_from_the_next_join(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """Who the customer may follow is read when the channel joins: an agent assigned after it
    is followed once the channel joins again (the SDKs join anew when the set they name
    changes), and one whose assignment moved away (who never wrote) no longer is."""
    first, second, customer, token, conv = await _assigned_to_the_first_of_two(seed, pool)

    sock, _ = await subscribe(server.ws_url, token, "agents", _staff_presence(first, second))
    try:
        await pool.execute(ASSIGN, second, conv)
        await _set(pool, second, "online", "too soon")
        await _set(pool, first, "online", "f1")
        seen = await _staff_rows_until(sock, "f1")
        assert (str(second), "too soon") not in seen
    finally:
        await sock.close()

    sock, _ = await subscribe(server.ws_url, token, "agents", _staff_presence(first, second))
    try:
        await _set(pool, first, "away", "f2")
        await _set(pool, second, "away", "s2")
        seen = await _staff_rows_until(sock, "s2")
        assert (str(first), "f2") not in seen
    finally:
        await sock.close()


async def test_a_resume_replays_the_followed_staffs_changes_in_order(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    agent, _ = await seed.staff()
    stranger, _ = await seed.staff()
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    await pool.execute(ASSIGN, agent, conv)
    bindings = _staff_presence(agent, stranger)
    sock, _ = await subscribe(server.ws_url, token, "agents", bindings)
    await sock.close()
    position = await stamped_head(pool)

    for i in range(3):  # while disconnected
        await _set(pool, stranger, "online" if i % 2 else "away", f"s{i}")
        await _set(pool, agent, "online" if i % 2 else "away", f"a{i}")
    sock = await RawSocket.connect(server.ws_url, token)
    try:
        reply = await sock.join(
            "agents", {"postgres_changes": bindings, "resume": {"position": position}}
        )
        assert reply["status"] == "ok"
        replayed, seen = await _collect_until_subscribed(sock)
        assert not any(s.get("history_lost") for s in seen["systems"])
        staff_rows = [d for d in replayed if d["record"]["user_id"] is not None]
        assert [(d["record"]["user_id"], d["record"]["metadata"]["mark"]) for d in staff_rows] == [
            (str(agent), f"a{i}") for i in range(3)
        ]
        positions = [d["position"] for d in replayed]
        assert positions == sorted(positions) and positions[0] > position
    finally:
        await sock.close()


async def test_a_token_refresh_reads_the_staff_again(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """Authorization is decided again when a channel's token changes: an agent assigned since
    the join is followed from the refresh on, without a new join."""
    first, second, customer, token, conv = await _assigned_to_the_first_of_two(seed, pool)
    sock, _ = await subscribe(server.ws_url, token, "agents", _staff_presence(first, second))
    try:
        await pool.execute(ASSIGN, second, conv)
        fresh = await seed.portal_token(customer)
        await sock.send("realtime:agents", "access_token", {"access_token": fresh}, "8", "1")
        # A socket's frames are handled in order: the heartbeat's reply follows the refresh.
        await sock.send("phoenix", "heartbeat", {}, "9")
        assert (await sock.reply_to("9"))["payload"]["status"] == "ok"
        await _set(pool, second, "away", "after refresh")
        seen = await _staff_rows_until(sock, "after refresh")
        assert seen[-1] == (str(second), "after refresh")
    finally:
        await sock.close()


async def test_only_joins_that_name_staff_read_them_and_a_failed_read_refuses_the_join(
    server: RunningServer, seed: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A customer's join whose bindings name no staff costs no query; one that does and cannot
    read them (the database away) is refused with the reason, and the socket carries on."""
    agent, _ = await seed.staff()
    customer, token = await seed.customer()
    reads: list[list[str]] = []
    failing = False

    async def counted(conn: asyncpg.Connection, customers: list[str]) -> dict[str, frozenset[str]]:
        reads.append(customers)
        if failing:
            raise OSError("connection refused")
        return await staff_of_customers(conn, customers)

    monkeypatch.setattr(shared, "staff_of_customers", counted)
    own = [{"event": "*", "schema": "public", "table": "user_presence"}]
    sock, _ = await subscribe(server.ws_url, token, "own", own)
    try:
        assert reads == []
        await sock.close()
        sock, _ = await subscribe(server.ws_url, token, "agents", _staff_presence(agent))
        assert reads == [[str(customer)]]
        failing = True
        reply = await sock.join("agents-again", {"postgres_changes": _staff_presence(agent)})
        assert reply["status"] == "error"
        assert reply["response"]["reason"].startswith("UnableToConnectToProject")
        await sock.send("phoenix", "heartbeat", {}, "30")
        assert (await sock.reply_to("30"))["payload"]["status"] == "ok"
    finally:
        await sock.close()


async def test_a_row_moved_from_someone_else_to_an_agent_is_not_followed(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """Only the owner can move a presence row between people (row security stops clients),
    but should it, the change carries the old row: another customer's status and metadata.
    Followers of the staff user it moved to are not sent it."""
    agent, _ = await seed.staff()
    customer, token = await seed.customer()
    other, _ = await seed.customer()
    await pool.execute(ASSIGN, agent, await seed.conversation(customer))
    await pool.execute(
        "SELECT update_user_presence(NULL, $1, 'online', '{\"mark\": \"private\"}')", other
    )
    sock, _ = await subscribe(server.ws_url, token, "agents", _staff_presence(agent))
    try:
        await pool.execute(
            "UPDATE user_presence SET customer_id = NULL, user_id = $1 WHERE customer_id = $2",
            agent,
            other,
        )
        await _set(pool, agent, "away", "afterwards")
        seen = await _staff_rows_until(sock, "afterwards")
        assert (str(agent), "private") not in seen
    finally:
        await sock.close()


async def test_a_refresh_whose_staff_read_fails_takes_the_token_and_keeps_the_agents(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new token is valid: a database that cannot say who the customer's staff are now does
    not keep the channel on the old token (which may expire first); it goes on following whom
    it followed."""
    first, _, customer, token, _ = await _assigned_to_the_first_of_two(seed, pool)
    sock, _ = await subscribe(server.ws_url, token, "agents", _staff_presence(first))

    async def unavailable(conn: asyncpg.Connection, customers: list[str]) -> Any:
        raise OSError("connection refused")

    monkeypatch.setattr(shared, "staff_of_customers", unavailable)
    try:
        short = await seed.portal_token(customer, ttl_seconds=2)
        await sock.send("realtime:agents", "access_token", {"access_token": short}, "8", "1")
        await sock.send("phoenix", "heartbeat", {}, "9")
        assert (await sock.reply_to("9"))["payload"]["status"] == "ok"
        await _set(pool, first, "away", "kept")
        assert (await _staff_rows_until(sock, "kept"))[-1] == (str(first), "kept")
        # The channel lives by the new token now: it ends at that token's expiry.
        system = await sock.expect(lambda m: m.get("event") == "system", timeout=10)
        assert system["payload"]["message"].startswith("Token has expired")
    finally:
        await sock.close()
