"""Several server processes on one database and no Redis: the PostgreSQL broker.

Servers run in this event loop with ``broker="postgres"``; the broker's own behaviour (control
envelopes, reconnection, retention) is driven on bare :class:`PostgresBroker` instances with a
recording sink. The database is kept from answering by killing the broker's connections
(``pg_terminate_backend``, found by ``application_name``) and, for as long as a test needs it
away, refusing new connections to the test database (``ALLOW_CONNECTIONS false``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import pytest

from realtime_messaging.broker import BrokerStatus, Envelope
from realtime_messaging.broker.postgres import PostgresBroker
from realtime_messaging.protocol.frames import (
    Vsn,
    encode_user_broadcast,
    encode_user_broadcast_push,
)
from tests.conftest import RunningServer, running_server
from tests.server.wsclient import RawSocket

from .conftest import WAIT, eventually, metric, ready, sockets


class Recorder:
    """A sink that remembers everything it is handed."""

    def __init__(self) -> None:
        self.delivered: list[Envelope] = []
        self.controls: list[Envelope] = []
        self.connections = 0

    def deliver(self, envelope: Envelope) -> None:
        self.delivered.append(envelope)

    def control(self, envelope: Envelope) -> None:
        self.controls.append(envelope)

    def connected(self) -> None:
        self.connections += 1

    def events(self, topic: str | None = None) -> list[str]:
        return [e.event for e in self.delivered if topic is None or e.topic == topic]


@asynccontextmanager
async def brokers(
    database_url: str, n: int, **options: Any
) -> AsyncIterator[list[tuple[PostgresBroker, Recorder]]]:
    """``n`` started brokers on the database, each with its own recorder; stopped on exit."""
    started: list[tuple[PostgresBroker, Recorder]] = []
    try:
        for _ in range(n):
            broker = PostgresBroker(database_url, secrets.token_hex(8), **options)
            sink = Recorder()
            await broker.start(sink)
            started.append((broker, sink))
        yield started
    finally:
        for broker, _ in started:
            await broker.stop()


@asynccontextmanager
async def pg_servers(database_url: str, n: int) -> AsyncIterator[list[RunningServer]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(running_server(database_url, broker="postgres"))
            for _ in range(n)
        ]


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own to the test database."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


class Gate:
    """Keeps the test database from taking new connections, and kills existing ones, from a
    connection to another database of the server (a database cannot shut itself)."""

    def __init__(self, conn: asyncpg.Connection, database: str) -> None:
        self.conn = conn
        self.database = database

    async def allow(self, allowed: bool) -> None:
        """Let new connections in, or refuse them (those open stay)."""
        flag = "true" if allowed else "false"
        await self.conn.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS {flag}')

    async def kill(self, application_name: str) -> int:
        """Terminate the backends of connections named ``application_name``; how many."""
        killed: int = await self.conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = $2",
            application_name,
            self.database,
        )
        return killed


@pytest.fixture
async def gate(admin_url: str, database_url: str) -> AsyncIterator[Gate]:
    conn = await asyncpg.connect(admin_url)
    gate = Gate(conn, urlsplit(database_url).path.lstrip("/"))
    try:
        yield gate
    finally:
        await gate.allow(True)
        await conn.close()


def _env(topic: str, event: str, n: int = 0) -> Envelope:
    return Envelope(topic, event, {"n": n})


# -- across servers ---------------------------------------------------------------------


def _push(sender: str, n: int, event: str = "n") -> dict[str, Any]:
    return {"type": "broadcast", "event": event, "payload": {"from": sender, "n": n}}


async def _collect(sock: RawSocket, publishers: set[str]) -> dict[str, list[int]]:
    """Broadcasts ``n`` per publisher, until each publisher's ``end`` arrived."""
    seen: dict[str, list[int]] = {p: [] for p in publishers}
    ended: set[str] = set()
    while ended != publishers:
        msg = await sock.expect(lambda m: m.get("event") == "broadcast", WAIT)
        body = msg["payload"]
        sender = body["payload"]["from"]
        assert sender in publishers and sender not in ended, body
        if body["event"] == "end":
            ended.add(sender)
        else:
            seen[sender].append(body["payload"]["n"])
    return seen


async def test_broadcasts_cross_three_servers_once_and_in_each_publishers_order(
    database_url: str,
) -> None:
    count = 200
    async with pg_servers(database_url, 3) as (a, b, c), sockets() as open_socket:
        senders = {
            "a": await open_socket(a),
            "b": await open_socket(b, Vsn.V2),
            "c": await open_socket(c),
        }
        receivers = [await open_socket(a, Vsn.V2), await open_socket(b), await open_socket(c)]
        topic = "realtime:pg-order"
        for sender in senders.values():
            await sender.join("pg-order", {"broadcast": {"self": False}})
        for receiver in receivers:
            await receiver.join("pg-order")

        for n in range(count):  # interleaved: the three publish at once
            for name, sender in senders.items():
                await sender.send(topic, "broadcast", _push(name, n), None, "1")
        for name, sender in senders.items():
            await sender.send(topic, "broadcast", _push(name, 0, "end"), None, "1")

        everyone = set(senders)
        expected = list(range(count))
        for receiver in receivers:
            assert await _collect(receiver, everyone) == {p: expected for p in everyone}
        # self: false holds across processes: each sender hears the other two only.
        for name, sender in senders.items():
            others = everyone - {name}
            assert await _collect(sender, others) == {p: expected for p in others}


async def test_binary_broadcasts_cross_servers_in_every_format(database_url: str) -> None:
    async with pg_servers(database_url, 2) as (a, b), sockets() as open_socket:
        sender = await open_socket(a, Vsn.V2)
        v2 = await open_socket(b, Vsn.V2)
        v1 = await open_socket(b)
        topic = "realtime:pg-binary"
        for sock in (sender, v2, v1):
            await sock.join("pg-binary", {"broadcast": {"ack": True}})

        json_bytes = orjson.dumps({"x": 1, "s": "héllo"})
        await sender.send_raw(encode_user_broadcast_push("1", "7", topic, "cursor", json_bytes))
        assert (await sender.reply_to("7"))["payload"]["status"] == "ok"
        raw = bytes(range(256))
        await sender.send_raw(
            encode_user_broadcast_push("1", "8", topic, "blob", raw, json_encoded=False)
        )
        assert (await sender.reply_to("8"))["payload"]["status"] == "ok"
        await sender.send(topic, "broadcast", _push("a", 1, "after"), "9", "1")

        # vsn 2.0.0 on the other process: kind-4 frames carrying the exact bytes.
        got = [(await v2.expect(lambda m: "binary" in m))["binary"] for _ in range(2)]
        assert got == [
            encode_user_broadcast(topic, "cursor", json_bytes, json_encoded=True),
            encode_user_broadcast(topic, "blob", raw, json_encoded=False),
        ]
        # vsn 1.0.0: the JSON one as a JSON broadcast, the raw bytes not at all.
        first = await v1.expect(lambda m: m.get("event") == "broadcast")
        assert first["payload"] == {
            "type": "broadcast",
            "event": "cursor",
            "payload": {"x": 1, "s": "héllo"},
        }
        second = await v1.expect(lambda m: m.get("event") == "broadcast")
        assert second["payload"]["event"] == "after"


async def test_readyz_and_metrics_say_the_postgres_broker_is_up(database_url: str) -> None:
    async with pg_servers(database_url, 2) as (a, b), aiohttp.ClientSession() as http:

        async def both_ready() -> bool:
            """/readyz answers 200 on both (once their change feeds are connected too)"""
            return [(await ready(http, s))[0] for s in (a, b)] == [200, 200]

        await eventually(both_ready)
        for server in (a, b):
            assert await ready(http, server) == (200, {"status": "ok", "broker": "up"})
            assert await metric(http, server, "rtm_broker_up") == 1.0


# -- the broker itself ------------------------------------------------------------------


async def test_send_reaches_the_control_of_every_other_process_or_of_one(
    database_url: str,
) -> None:
    async with brokers(database_url, 3) as [(a, sa), (b, sb), (c, sc)]:
        a.send(_env("ctl", "everyone"))
        a.send(_env("ctl", "just-b"), node=b.node)
        a.send(_env("ctl", "to-myself"), node=a.node)
        c.send(_env("ctl", "from-c"), node=a.node)
        c.send(_env("ctl", "last"))

        async def all_arrived() -> bool:
            return len(sa.controls) == 2 and len(sb.controls) == 3 and len(sc.controls) == 1

        await eventually(all_arrived)

        def heard(sink: Recorder) -> set[tuple[str, str | None]]:
            return {(e.event, e.origin) for e in sink.controls}

        assert heard(sb) == {("everyone", a.node), ("just-b", a.node), ("last", c.node)}
        assert heard(sc) == {("everyone", a.node)}
        assert heard(sa) == {("from-c", c.node), ("last", c.node)}
        # Each sender's order is kept (between senders there is none to keep).
        assert [e.event for e in sb.controls if e.origin == a.node] == ["everyone", "just-b"]
        assert [e.event for e in sa.controls] == ["from-c", "last"]
        # Control envelopes are never topic traffic, and never delivered locally.
        assert sa.delivered == sb.delivered == sc.delivered == []
        assert b.status().received == 3


async def test_publish_delivers_locally_at_once_and_to_processes_with_members(
    database_url: str,
) -> None:
    async with brokers(database_url, 3) as [(a, sa), (b, sb), (c, sc)]:
        a.topic_added("realtime:t")
        b.topic_added("realtime:t")
        a.publish(_env("realtime:t", "one"))
        assert sa.events() == ["one"]  # before any await: local delivery does not wait
        a.send(_env("ctl", "between"))
        a.publish(_env("realtime:t", "two"))

        async def arrived() -> bool:
            return sb.events() == ["one", "two"] and len(sc.controls) == 1

        await eventually(arrived)
        # C has no member of the topic: its rows were read and skipped, not delivered.
        assert sc.delivered == [] and c.status().received == 1
        # A join that asked for a topic gets it before its member is added (a presence join
        # follows the topic while it waits for the other processes' metas).
        await c.ready("realtime:asked")
        a.publish(_env("realtime:asked", "asked"))

        async def asked() -> bool:
            return sc.events() == ["asked"]

        await eventually(asked)
        assert [e.origin for e in sb.delivered] == [a.node, a.node]
        # Its own rows were not delivered a second time.
        assert sa.events() == ["one", "two", "asked"]
        assert a.status() == BrokerStatus("postgres", True, published=4, received=0, dropped=0)


async def test_connected_on_start_and_nothing_lost_while_the_reader_was_away(
    database_url: str, admin: asyncpg.Connection, gate: Gate
) -> None:
    async with brokers(database_url, 2) as [(a, _), (b, sb)]:
        assert sb.connections == 1  # start() returns once connected
        b.topic_added("realtime:away")
        a.publish(_env("realtime:away", "before"))

        async def before() -> bool:
            return sb.events() == ["before"]

        await eventually(before)

        await gate.allow(False)
        assert await gate.kill(b.reader_name) == 1

        async def b_down() -> bool:
            return not b.status().up

        await eventually(b_down)
        for n in range(50):
            a.publish(_env("realtime:away", "while-away", n))

        async def written() -> bool:
            return a.status().published == 51

        await eventually(written)
        assert sb.events() == ["before"]  # B cannot read: it is away
        await gate.allow(True)

        async def caught_up() -> bool:
            return len(sb.delivered) == 51

        await eventually(caught_up)
        assert [e.payload["n"] for e in sb.delivered[1:]] == list(range(50))
        assert sb.connections == 2
        assert b.status().up and b.gaps == 0


async def test_a_database_away_degrades_without_stopping_local_delivery(
    database_url: str, admin: asyncpg.Connection, gate: Gate
) -> None:
    async with brokers(database_url, 2) as [(a, sa), (b, sb)]:
        b.topic_added("realtime:down")
        await gate.allow(False)
        assert await gate.kill(a.reader_name) == 1
        assert await gate.kill(a.writer_name) == 1

        async def a_down() -> bool:
            return not a.status().up

        await eventually(a_down)
        a.publish(_env("realtime:down", "lost"))
        assert sa.events() == ["lost"]  # its own clients still get it

        async def dropped() -> bool:
            return a.status().dropped == 1 and a.status().published == 0

        await eventually(dropped)
        await gate.allow(True)

        async def a_up() -> bool:
            return a.status().up

        await eventually(a_up)
        a.publish(_env("realtime:down", "after"))

        async def after() -> bool:
            return sb.events() == ["after"]

        await eventually(after)


async def test_rows_are_deleted_after_the_retention(
    database_url: str, admin: asyncpg.Connection
) -> None:
    async with brokers(database_url, 2, retention=1.0, prune_interval=0.1) as [(a, _), (b, sb)]:
        b.topic_added("realtime:prune")
        a.publish(_env("realtime:prune", "old"))

        async def arrived() -> bool:
            return sb.events() == ["old"]

        await eventually(arrived)
        old = await admin.fetchval("SELECT max(id) FROM rtm.broker_messages")
        assert old is not None

        async def pruned() -> bool:
            return not await admin.fetchval(
                "SELECT count(*) FROM rtm.broker_messages WHERE id <= $1", old
            )

        await eventually(pruned)
        assert a.pruned + b.pruned >= 1
        # Only rows past the retention go: of rows written together, the young one stays, and
        # so does one dated ahead (a clock stepped back), without holding up the old row
        # written after it.
        rows = await admin.fetch(
            "INSERT INTO rtm.broker_messages (channel, body, created_at) VALUES "
            "('x:old', '', now() - interval '1 hour'), ('x:ahead', '', now() + interval '1 hour'), "
            "('x:old', '', now() - interval '1 hour'), ('x:young', '', now()) RETURNING id"
        )
        ids = [r["id"] for r in rows]

        async def old_gone() -> bool:
            return not await admin.fetchval(
                "SELECT count(*) FROM rtm.broker_messages WHERE id = ANY($1) AND channel = 'x:old'",
                ids,
            )

        await eventually(old_gone)
        left = await admin.fetch(
            "SELECT channel FROM rtm.broker_messages WHERE id = ANY($1) ORDER BY id", ids
        )
        assert [r["channel"] for r in left] == ["x:ahead", "x:young"]
        await admin.execute("DELETE FROM rtm.broker_messages WHERE id = ANY($1)", ids)


async def test_a_reader_away_past_the_retention_skips_what_is_left_and_resyncs(
    database_url: str, admin: asyncpg.Connection, gate: Gate
) -> None:
    options = {"retention": 1.0, "prune_interval": 0.1}
    async with brokers(database_url, 2, **options) as [(a, _), (b, sb)]:
        b.topic_added("realtime:long")
        await gate.allow(False)
        assert await gate.kill(b.reader_name) == 1
        a.publish(_env("realtime:long", "deleted"))

        async def written() -> bool:
            return a.status().published == 1

        await eventually(written)
        first = await admin.fetchval("SELECT max(id) FROM rtm.broker_messages")

        async def deleted() -> bool:
            return not await admin.fetchval(
                "SELECT count(*) FROM rtm.broker_messages WHERE id = $1", first
            )

        await eventually(deleted)
        a.publish(_env("realtime:long", "stale"))
        await eventually(lambda: _published(a, 2))
        await gate.allow(True)

        async def resynced() -> bool:
            return sb.connections == 2

        await eventually(resynced)
        assert b.gaps == 1
        # Not a stretch with a hole in it: what was left of the outage is skipped too.
        assert sb.delivered == []
        a.publish(_env("realtime:long", "live"))

        async def live() -> bool:
            return sb.events() == ["live"]

        await eventually(live)


async def _published(broker: PostgresBroker, n: int) -> bool:
    return broker.status().published == n


async def test_ids_restarting_are_noticed_and_delivery_goes_on(
    database_url: str, admin: asyncpg.Connection
) -> None:
    """A crash empties the unlogged table and restarts its sequence; so does this."""
    async with brokers(database_url, 2, prune_interval=0.1) as [(a, _), (b, sb)]:
        b.topic_added("realtime:restart")
        for n in range(5):
            a.publish(_env("realtime:restart", "before", n))

        async def before() -> bool:
            return len(sb.delivered) == 5

        await eventually(before)
        await admin.execute("TRUNCATE rtm.broker_messages RESTART IDENTITY")
        a.publish(_env("realtime:restart", "after"))

        async def after() -> bool:
            return sb.events()[5:] == ["after"]

        await eventually(after)
        assert b.gaps == 1 and sb.connections == 2


async def test_malformed_rows_and_a_failing_sink_do_not_stop_the_reader(
    database_url: str, admin: asyncpg.Connection
) -> None:
    class Failing(Recorder):
        def deliver(self, envelope: Envelope) -> None:
            super().deliver(envelope)
            if envelope.event == "boom":
                raise RuntimeError("a bug in the hub")

    async with brokers(database_url, 1) as [(a, _)]:
        b = PostgresBroker(database_url, "b-" + secrets.token_hex(4))
        sb = Failing()
        await b.start(sb)
        try:
            b.topic_added("realtime:bad")
            await admin.execute(
                "SELECT rtm.broker_publish($1, $2)",
                ["ctl", "t:realtime:bad", "ctl"],
                [b"", b"\x01\x00\x00\x00\x00\x00\xff", b"\x07garbage"],
            )
            a.publish(_env("realtime:bad", "boom"))
            a.publish(_env("realtime:bad", "fine"))

            async def past_them() -> bool:
                return sb.events() == ["boom", "fine"]

            await eventually(past_them)
            assert b.status().malformed == 3
            assert b.status().up
        finally:
            await b.stop()


async def test_stop_writes_what_is_queued(database_url: str) -> None:
    async with brokers(database_url, 1) as [(b, sb)]:
        b.topic_added("realtime:flush")
        a = PostgresBroker(database_url, secrets.token_hex(8))
        await a.start(Recorder())
        for n in range(500):
            a.publish(_env("realtime:flush", "n", n))
        await a.stop()
        assert a.status().published == 500 and a.status().dropped == 0

        async def all_there() -> bool:
            return len(sb.delivered) == 500

        await eventually(all_there)
        assert [e.payload["n"] for e in sb.delivered] == list(range(500))
        # A stopped broker has closed its connections.
        conn = await asyncpg.connect(database_url)
        try:
            names = {a.reader_name, a.writer_name}
            left = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY($1)",
                list(names),
            )
        finally:
            await conn.close()
        assert left == 0


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role"])
async def test_clients_can_neither_read_nor_write_the_broker_table(
    admin: asyncpg.Connection, role: str
) -> None:
    statements = [
        "SELECT count(*) FROM rtm.broker_messages",
        "INSERT INTO rtm.broker_messages (channel, body) VALUES ('ctl', '\\x00')",
        "SELECT rtm.broker_publish(ARRAY['ctl'], ARRAY['\\x00'::bytea])",
        "DELETE FROM rtm.broker_messages",
    ]
    for statement in statements:
        async with admin.transaction():
            await admin.execute(f"SET LOCAL ROLE {role}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await admin.execute(statement)
    persistence = await admin.fetchval(
        "SELECT relpersistence::text FROM pg_class WHERE oid = 'rtm.broker_messages'::regclass"
    )
    assert persistence == "u"


async def test_publishing_transactions_commit_one_at_a_time_in_id_order(
    admin: asyncpg.Connection, database_url: str
) -> None:
    """A batch whose ids were drawn later cannot commit before an earlier one: a reader that
    moved past it would never see the earlier one."""
    other = await asyncpg.connect(database_url)
    try:
        async with admin.transaction():
            await admin.execute("SELECT rtm.broker_publish(ARRAY['x:first'], ARRAY[''::bytea])")
            first = await admin.fetchval("SELECT currval('rtm.broker_messages_id_seq')")
            pid = other.get_server_pid()
            second = asyncio.create_task(
                other.fetchval(
                    "WITH p AS (SELECT rtm.broker_publish(ARRAY['x:second'], ARRAY[''::bytea])) "
                    "SELECT currval('rtm.broker_messages_id_seq') FROM p"
                )
            )

            async def waits_for_the_first() -> bool:
                return bool(
                    await admin.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' "
                        "AND NOT granted",
                        pid,
                    )
                )

            await eventually(waits_for_the_first)
        assert await asyncio.wait_for(second, WAIT) > first
    finally:
        await admin.execute("DELETE FROM rtm.broker_messages WHERE channel LIKE 'x:%'")
        await other.close()
