"""Broadcast from the database: realtime.send and realtime.broadcast_changes through the feed.

Messages are written with plain SQL on the test database and reach raw sockets joined to
``realtime:<topic>`` as ``broadcast`` events, only once their transaction commits, in commit
order, and a client that rejoins with the last position it saw gets those it missed.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import asyncpg
import orjson

from tests.conftest import RunningServer, Seed, fresh_database, running_server
from tests.server.wsclient import RawSocket

from .test_resume import stamped_head

SEND = "SELECT realtime.send($1::jsonb, $2, $3, $4)"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def is_broadcast(m: dict[str, Any]) -> bool:
    return m.get("event") == "broadcast"


async def send(
    conn: asyncpg.Connection | asyncpg.Pool,
    topic: str,
    payload: dict[str, Any],
    *,
    event: str = "note",
    private: bool = False,
) -> None:
    await conn.execute(SEND, orjson.dumps(payload).decode(), event, topic, private)


async def joined(server: RunningServer, token: str, topic: str, **config: Any) -> RawSocket:
    sock = await RawSocket.connect(server.ws_url, token)
    reply = await sock.join(topic, config)
    assert reply["status"] == "ok", reply
    return sock


async def next_broadcast(sock: RawSocket) -> dict[str, Any]:
    msg = await sock.expect(is_broadcast)
    payload: dict[str, Any] = msg["payload"]
    return payload


async def test_a_committed_send_reaches_the_topic_as_a_broadcast(
    server: RunningServer, pool: asyncpg.Pool
) -> None:
    topic = unique("room")
    sock = await joined(server, server.anon_key, topic)
    other = await joined(server, server.anon_key, unique("elsewhere"))
    try:
        await send(pool, topic, {"body": "hi"}, event="chat")
        msg = await sock.expect(is_broadcast)
        assert msg["topic"] == f"realtime:{topic}"
        body = msg["payload"]
        assert body["type"] == "broadcast" and body["event"] == "chat"
        # realtime.send adds the row id to the payload; meta carries it and the position.
        assert body["payload"]["body"] == "hi"
        assert body["payload"]["id"] == body["meta"]["id"]
        assert isinstance(body["meta"]["position"], int)
        stored = await pool.fetchval(
            "SELECT payload FROM realtime.messages WHERE id = $1", uuid.UUID(body["meta"]["id"])
        )
        assert orjson.loads(stored) == body["payload"]
        with_id = {"id": "mine", "body": "kept"}
        await send(pool, topic, with_id)
        assert (await next_broadcast(sock))["payload"] == with_id
        # Nothing reached the channel of another topic.
        try:
            got = await other.recv(timeout=0.3)
        except TimeoutError:
            got = None
        assert got is None or not is_broadcast(got)
    finally:
        await sock.close()
        await other.close()


async def test_a_rolled_back_send_is_never_delivered(
    server: RunningServer, pool: asyncpg.Pool
) -> None:
    topic = unique("room")
    sock = await joined(server, server.anon_key, topic)
    try:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await send(conn, topic, {"n": "rolled back"})
            await tx.rollback()
        await send(pool, topic, {"n": "committed"})
        assert (await next_broadcast(sock))["payload"]["n"] == "committed"
        assert (
            await pool.fetchval("SELECT count(*) FROM realtime.messages WHERE topic = $1", topic)
            == 1
        )
    finally:
        await sock.close()


async def test_broadcasts_arrive_in_commit_order(
    server: RunningServer, pool: asyncpg.Pool, database_url: str
) -> None:
    topic = unique("room")
    sock = await joined(server, server.anon_key, topic)
    first = await asyncpg.connect(database_url)
    second = await asyncpg.connect(database_url)
    try:
        # The transaction that starts first but commits last is delivered last.
        early = first.transaction()
        await early.start()
        await first.execute("SELECT txid_current()")
        async with second.transaction():
            await send(second, topic, {"n": "committed first"})
        await send(first, topic, {"n": "committed second"})
        await early.commit()
        got = [(await next_broadcast(sock))["payload"]["n"] for _ in range(2)]
        assert got == ["committed first", "committed second"]

        # How: a second sender to the topic waits for the first one's commit, so the feed
        # cannot queue them in the other order (and a sender to another topic does not wait).
        holding = first.transaction()
        await holding.start()
        await send(first, topic, {"n": "holder"})
        waiting = asyncio.create_task(send(second, topic, {"n": "waiter"}))
        await send(pool, unique("other"), {"n": "not held up"})
        # The second sender is blocked on a lock (PostgreSQL says so), not merely slow.
        blocked = second.get_server_pid()
        async with asyncio.timeout(5):
            while not await pool.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", blocked
            ):
                await asyncio.sleep(0.02)
        assert not waiting.done()
        await holding.commit()
        await asyncio.wait_for(waiting, 5)
        got = [(await next_broadcast(sock))["payload"]["n"] for _ in range(2)]
        assert got == ["holder", "waiter"]

        # Racing writers: what arrives is the order in which they committed.
        committed: list[int] = []

        async def writer(n: int) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await send(conn, topic, {"n": n})
                await conn.execute("SELECT pg_sleep($1)", random.uniform(0.005, 0.02))
            committed.append(n)

        await asyncio.gather(*(writer(n) for n in range(12)))
        received = [(await next_broadcast(sock))["payload"]["n"] for _ in range(12)]
        assert received == committed
    finally:
        await first.close()
        await second.close()
        await sock.close()


async def test_a_client_that_rejoins_gets_what_it_missed(
    server: RunningServer, pool: asyncpg.Pool
) -> None:
    topic = unique("room")
    sock = await joined(server, server.anon_key, topic)
    try:
        await send(pool, topic, {"n": "seen"})
        last = (await next_broadcast(sock))["meta"]["position"]
    finally:
        await sock.close()
    for i in range(3):  # while away
        await send(pool, topic, {"n": f"missed-{i}"})
    await send(pool, unique("other"), {"n": "not this topic"})
    await send(pool, topic, {"n": "private"}, private=True)  # not for a public channel
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await send(conn, topic, {"n": "rolled back"})
        await tx.rollback()

    sock = await joined(server, server.anon_key, topic, resume={"position": last})
    try:
        replayed = [await next_broadcast(sock) for _ in range(3)]
        assert [b["payload"]["n"] for b in replayed] == [f"missed-{i}" for i in range(3)]
        positions = [b["meta"]["position"] for b in replayed]
        assert positions == sorted(positions) and positions[0] > last
        await send(pool, topic, {"n": "live"})
        live = await next_broadcast(sock)
        assert live["payload"]["n"] == "live" and live["meta"]["position"] > positions[-1]
    finally:
        await sock.close()


async def test_private_messages_reach_only_private_channels(
    server: RunningServer, pool: asyncpg.Pool, seed: Seed
) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    topic = f"conversation:{conv}"  # our own topic: our rules authorize the private join
    public = await joined(server, portal, topic)
    private = await joined(server, portal, topic, private=True)
    try:
        await send(pool, topic, {"n": "private"}, private=True)
        await send(pool, topic, {"n": "public"})
        assert [(await next_broadcast(private))["payload"]["n"] for _ in range(2)] == [
            "private",
            "public",
        ]
        assert (await next_broadcast(public))["payload"]["n"] == "public"
    finally:
        await public.close()
        await private.close()


async def test_broadcast_changes_from_a_trigger(server: RunningServer, pool: asyncpg.Pool) -> None:
    schema = unique("bc").replace("-", "_")
    topic = f"{schema}:items"
    await pool.execute(
        f"""
        CREATE SCHEMA {schema};
        CREATE TABLE {schema}.items (id int PRIMARY KEY, body text);
        CREATE FUNCTION {schema}.items_changed() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER AS $$
        BEGIN
            PERFORM realtime.broadcast_changes(
                '{topic}', TG_OP, TG_OP, TG_TABLE_NAME, TG_TABLE_SCHEMA, NEW, OLD);
            RETURN NULL;
        END $$;
        CREATE TRIGGER items_changed AFTER INSERT OR UPDATE OR DELETE ON {schema}.items
            FOR EACH ROW EXECUTE FUNCTION {schema}.items_changed();
        """
    )
    # broadcast_changes sends privately: the service role joins privately (no policy needed).
    sock = await joined(server, server.service_key, topic, private=True)
    try:
        await pool.execute(f"INSERT INTO {schema}.items VALUES (1, 'hi')")
        await pool.execute(f"UPDATE {schema}.items SET body = 'edited' WHERE id = 1")
        await pool.execute(f"DELETE FROM {schema}.items WHERE id = 1")
        got = [await next_broadcast(sock) for _ in range(3)]
        assert [b["event"] for b in got] == ["INSERT", "UPDATE", "DELETE"]
        insert, update, delete = (b["payload"] for b in got)
        common = {"table": "items", "schema": schema}
        assert insert == {
            **common,
            "id": insert["id"],
            "operation": "INSERT",
            "record": {"id": 1, "body": "hi"},
            "old_record": None,
        }
        assert update == {
            **common,
            "id": update["id"],
            "operation": "UPDATE",
            "record": {"id": 1, "body": "edited"},
            "old_record": {"id": 1, "body": "hi"},
        }
        assert delete == {
            **common,
            "id": delete["id"],
            "operation": "DELETE",
            "record": None,
            "old_record": {"id": 1, "body": "edited"},
        }
    finally:
        await sock.close()
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_a_resume_interleaves_broadcasts_and_changes_in_feed_order(
    server: RunningServer, pool: asyncpg.Pool, seed: Seed
) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    topic = f"conversation:{conv}"
    bindings = [
        {
            "event": "INSERT",
            "schema": "public",
            "table": "customer_messages",
            "filter": f"conversation_id=eq.{conv}",
        }
    ]
    sock = await joined(server, portal, topic, postgres_changes=bindings)
    # Stays on the topic: once it has the last broadcast live, the feed has it in its log, so the
    # resume below replays all four before "Subscribed" (a change still on its way to the log
    # would come right after it, live).
    observer = await joined(server, portal, topic)
    try:
        await send(pool, topic, {"n": "seen"})
        last = (await next_broadcast(sock))["meta"]["position"]
    finally:
        await sock.close()
    for i in range(2):  # while away: a message, then a broadcast, twice
        await pool.execute(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'customer', $2, $3)",
            conv,
            customer,
            f"message-{i}",
        )
        await send(pool, topic, {"n": f"broadcast-{i}"})
    try:
        while (await next_broadcast(observer))["payload"]["n"] != "broadcast-1":
            pass
    finally:
        await observer.close()

    sock = await joined(server, portal, topic, postgres_changes=bindings, resume={"position": last})
    try:
        seen: list[tuple[str, int]] = []
        while True:
            msg = await sock.recv()
            if msg["event"] == "broadcast":
                seen.append((msg["payload"]["payload"]["n"], msg["payload"]["meta"]["position"]))
            elif msg["event"] == "postgres_changes":
                data = msg["payload"]["data"]
                seen.append((data["record"]["content"], data["position"]))
            elif msg["event"] == "system":
                assert msg["payload"]["message"] == "Subscribed to PostgreSQL"
                break
        assert [name for name, _ in seen] == [
            "message-0",
            "broadcast-0",
            "message-1",
            "broadcast-1",
        ]
        positions = [pos for _, pos in seen]
        assert positions == sorted(positions) and positions[0] > last
    finally:
        await sock.close()


async def test_a_resume_past_retention_says_history_is_lost(admin_url: str) -> None:
    async with (
        fresh_database(admin_url) as url,
        running_server(url, change_retention_seconds=1.0) as srv,
    ):
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            topic = unique("room")
            before = await pool.fetchval("SELECT last_pos FROM rtm.change_feed_state")
            await send(pool, topic, {"n": "soon forgotten"})
            # The server prunes its log (and realtime.messages) by itself; wait until it has.
            async with asyncio.timeout(15):
                while await pool.fetchval(
                    "SELECT (SELECT count(*) FROM rtm.change_log) "
                    "+ (SELECT count(*) FROM rtm.change_queue) "
                    "+ (SELECT count(*) FROM realtime.messages)"
                ):
                    await asyncio.sleep(0.1)
            sock = await joined(srv, srv.anon_key, topic, resume={"position": before})
            try:
                system = await sock.expect(lambda m: m.get("event") == "system")
                assert system["payload"]["history_lost"] is True
                assert system["payload"]["position"] == before
                await send(pool, topic, {"n": "live again"})
                assert (await next_broadcast(sock))["payload"]["n"] == "live again"
            finally:
                await sock.close()
        finally:
            await pool.close()


async def test_a_private_join_does_not_wait_for_a_senders_commit(
    server: RunningServer, database_url: str
) -> None:
    topic = unique("room")
    writer = await asyncpg.connect(database_url)
    try:
        async with writer.transaction():
            await send(writer, topic, {"n": "uncommitted"}, private=True)  # holds the topic
            async with asyncio.timeout(2):
                sock = await joined(server, server.service_key, topic, private=True)
        try:
            assert (await next_broadcast(sock))["payload"]["n"] == "uncommitted"
        finally:
            await sock.close()
    finally:
        await writer.close()


async def test_a_resume_too_far_behind_on_a_busy_topic_is_told_to_reload(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """Broadcasts from the database are replayed up to ``replay_limit`` of them; a channel
    further behind on its topic gets ``history_lost`` (reload) instead of the topic's whole
    day read into the server's memory for an anonymous join."""
    topic = unique("busy")
    async with running_server(database_url, replay_limit=5) as srv:
        start = await stamped_head(pool)
        for i in range(8):
            await send(pool, topic, {"n": i})
        await stamped_head(pool)  # stamped, so routed before the joins: none reaches them live
        positions = await pool.fetch(
            "SELECT pos FROM rtm.change_log WHERE table_name = 'realtime.messages' "
            "AND record ->> 'topic' = $1 ORDER BY pos",
            topic,
        )
        assert len(positions) == 8
        watcher = await joined(srv, srv.anon_key, topic, resume={"position": start})
        try:
            system = await watcher.expect(lambda m: m.get("event") == "system")
            assert system["payload"]["history_lost"] is True, system
            await send(pool, topic, {"n": "live"})
            assert (await next_broadcast(watcher))["payload"]["n"] == "live"
        finally:
            await watcher.close()
        sock = await joined(srv, srv.anon_key, topic, resume={"position": positions[4]["pos"]})
        try:
            replayed = [(await next_broadcast(sock))["payload"]["n"] for _ in range(4)]
            assert replayed == [5, 6, 7, "live"]
        finally:
            await sock.close()
