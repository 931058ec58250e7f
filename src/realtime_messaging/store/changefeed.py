"""The change feed: every committed change to the messaging tables, in order, with a position.

Triggers (``rtm.capture_change``, currently defined by migration ``0013_lean_capture``) append
each row change to ``rtm.change_queue`` and, while the stamper sleeps, ``NOTIFY rtm_change``
(migration ``0007``). One process at a time, the *stamper*, moves the committed queue rows into
``rtm.change_log``, numbering them with consecutive positions in one transaction. Why this is
gap-free and ordered:

* rows of transactions that have not committed are invisible to the stamper, so a transaction
  that commits late is simply stamped later, with a higher position: nothing is skipped;
* the trigger locks the conversation's counter row before queueing, so within a conversation
  queue ids follow commit order, and so do positions.

Every process then reads the log by position and hands the changes to its router (the stamper
hands over what it stamps, without reading it back). The log is kept for ``retention`` seconds
so that clients can resume. The stamper also keeps the statistics of growing tables current
(:func:`analyze_grown_tables`): docs/changes.md, "A fresh database".
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NamedTuple

import asyncpg
import orjson

from .database import SERVER_SETTINGS

log = logging.getLogger(__name__)

#: Advisory lock held by the stamping process for as long as its connection lives.
STAMPER_LOCK_KEY = 0x52544D5F46454544  # "RTM_FEED"
NOTIFY_CHANNEL = "rtm_change"
#: Seconds a closing connection may take before it is dropped.
CLOSE_TIMEOUT = 2.0
#: How the feed's connection shows in pg_stat_activity.
APPLICATION_NAME = "rtm change feed"
BATCH = 2000
#: Most changes a resuming channel is replayed, and most database broadcasts
#: (``Settings.replay_limit``).
REPLAY_LIMIT = 10_000

_COLUMNS = (
    "pos, table_name, op, record, old_record, conversation_id, customer_id, "
    "to_char(changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS changed_at, "
    "extract(epoch FROM changed_at)::float8 AS changed_epoch"
)

#: Moves committed queue rows into the log with consecutive positions, and returns them (the
#: stamping process delivers them without reading them back). Other processes are woken by one
#: NOTIFY per batch that moved something. The first position is a scalar from ``base``'s one
#: row, not a join with it: joined, the planner multiplied the batch by its guess at the rows of
#: ``change_feed_state`` (2,140 when never analysed), and planned millions of rows (issue 12).
#: The batch's ids are an array computed once, not ``id IN (subquery)``: the statement has no
#: parameters, so its plan is made once per session, whatever the queue held then, and after an
#: ANALYZE that found the queue empty the planner rescanned the subquery for every queued row (a
#: nested loop: stamps took 20 to 390 ms at 1,000 changes/s, issue 16).
_STAMP = f"""
WITH batch AS (
    DELETE FROM rtm.change_queue
    WHERE id = ANY (ARRAY(SELECT id FROM rtm.change_queue ORDER BY id LIMIT {BATCH}))
    RETURNING *
), base AS (
    UPDATE rtm.change_feed_state SET last_pos = last_pos + (SELECT count(*) FROM batch)
    WHERE EXISTS (SELECT 1 FROM batch)  -- an empty round writes nothing (no WAL flush)
    RETURNING last_pos - (SELECT count(*) FROM batch) AS first
), numbered AS (
    SELECT b.*, (SELECT first FROM base) + row_number() OVER (ORDER BY b.id) AS pos FROM batch b
), inserted AS (
    INSERT INTO rtm.change_log
        (pos, table_name, op, record, old_record, conversation_id, customer_id, changed_at)
    SELECT pos, table_name, op, record, old_record, conversation_id, customer_id, changed_at
    FROM numbered
    RETURNING *
), notified AS (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') AS sent FROM (SELECT 1 FROM inserted LIMIT 1) AS one
)
SELECT {_COLUMNS} FROM inserted LEFT JOIN notified ON true ORDER BY pos
"""

#: While the stamper is awake it polls the queue every FAST_POLL seconds, and writers do not
#: NOTIFY (a notifying commit takes a cluster-wide lock until its WAL is flushed, which
#: serialises busy writers); after LINGER seconds without changes it sleeps and writers wake it.
FAST_POLL = 0.002
LINGER = 0.05
LAST_LOOK = 0.005
_AWAKE = "UPDATE rtm.change_feed_state SET stamper_awake = $1"

_HEAD = "SELECT last_pos, (SELECT min(pos) FROM rtm.change_log) FROM rtm.change_feed_state"
_READ = f"SELECT {_COLUMNS} FROM rtm.change_log WHERE pos > $1 ORDER BY pos LIMIT {BATCH}"


#: The ``table`` of a change that is a broadcast from the database (a ``realtime.messages``
#: row, migration ``0011_db_broadcast``): its record holds ``id``, ``topic``, ``event``,
#: ``payload`` and ``private``.
BROADCAST_TABLE = "realtime.messages"


@dataclass(frozen=True, slots=True)
class Change:
    """One committed row change, as the log holds it."""

    pos: int
    table: str
    op: str  # INSERT, UPDATE or DELETE
    record: dict[str, Any] | None
    old_record: dict[str, Any] | None
    conversation_id: Any
    customer_id: Any  # the customer who may see it besides staff; None: staff only
    changed_at: str
    changed_epoch: float  # the same instant, as Unix time (for latency metrics)
    #: Why the change is delivered incomplete (postgres_changes ``errors``); empty when whole.
    errors: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Change:
        """The change a log row holds. A record the decoder refuses (nested past its limit,
        written by plain SQL) is replaced by an empty one and the change marked, so that it
        still reaches its subscribers and never stops the feed."""
        errors: tuple[str, ...] = ()
        try:
            record, old_record = _json(row["record"]), _json(row["old_record"])
        except orjson.JSONDecodeError:
            log.warning("change %s has a record that cannot be decoded", row["pos"])
            record = {} if row["record"] is not None else None
            old_record = {} if row["old_record"] is not None else None
            errors = (UNDECODABLE,)
        return cls(
            row["pos"],
            row["table_name"],
            row["op"],
            record,
            old_record,
            row["conversation_id"],
            row["customer_id"],
            row["changed_at"],
            row["changed_epoch"],
            errors,
        )


#: The ``errors`` of a change whose record could not be read back (as Supabase words a record
#: too large to send).
UNDECODABLE = "Error 413: Payload Too Large"


def _json(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        decoded: dict[str, Any] = orjson.loads(value)
        return decoded
    return dict(value)


@dataclass(frozen=True, slots=True)
class History:
    """What a resuming subscriber missed: changes after its position, or the news it is too late."""

    changes: list[Change]
    lost: bool
    head: int


def _pruned(position: int, head: int, oldest: int | None) -> bool:
    """Whether changes after ``position`` (up to ``head``) are no longer all in the log."""
    return position < head and (oldest is None or position < oldest - 1)


#: What the log's reads after a position narrow to (``$2``): one customer's changes, the
#: broadcasts to one topic, or one staff user's presence changes (each with an index of its own).
_OF_CUSTOMER = " AND customer_id = $2"
_OF_TOPIC = f" AND table_name = '{BROADCAST_TABLE}' AND record ->> 'topic' = $2"
_OF_STAFF = (
    " AND table_name = 'user_presence' AND customer_id IS NULL"
    " AND (coalesce(record, old_record) ->> 'user_id') = $2"
)


async def _after(
    conn: asyncpg.Connection, position: int, head: int, where: str, key: Any, most: int | None
) -> list[Change]:
    """The log's changes after ``position`` up to ``head`` (narrowed by ``where`` to ``key``
    unless it is None), a batch at a time; with ``most``, the first ``most`` of them."""
    query = (
        f"SELECT {_COLUMNS} FROM rtm.change_log WHERE pos > $1{where} AND pos <= {int(head)} "
        f"ORDER BY pos LIMIT {BATCH}"
    )
    changes: list[Change] = []
    cursor = position
    while True:
        rows = await conn.fetch(query, *((cursor,) if key is None else (cursor, key)))
        changes.extend(Change.from_row(r) for r in rows)
        if len(rows) < BATCH:
            return changes
        if most is not None and len(changes) >= most:
            return changes[:most]
        cursor = rows[-1]["pos"]


async def read_since(
    conn: asyncpg.Connection, position: int, *, customer_id: Any = None, most: int | None = None
) -> History:
    """Changes after ``position`` up to the current head; ``lost`` when some were pruned.

    With ``customer_id`` only what that customer may see is read (the router re-checks);
    with ``most``, only the first ``most`` of them.
    """
    head, oldest = await conn.fetchrow(_HEAD)
    if position >= head:
        return History([], False, head)
    where = "" if customer_id is None else _OF_CUSTOMER
    changes = await _after(conn, position, head, where, customer_id, most)
    return History(changes, _pruned(position, head, oldest), head)


async def read_broadcasts(
    conn: asyncpg.Connection, position: int, topic: str, head: int, *, most: int | None = None
) -> list[Change]:
    """The broadcasts from the database to ``topic`` (a sub-topic) after ``position``, up to
    ``head``: what a resuming channel of that topic missed (the first ``most`` of them)."""
    return await _after(conn, position, head, _OF_TOPIC, topic, most)


class Missed(NamedTuple):
    """What one resuming channel asks for: changes after ``position`` (all of them when
    ``customer`` is None, else only that customer's and the presence changes of the ``staff``
    it follows; of ``tables`` only, when they are named), or none without ``bindings``; and
    the broadcasts from the database to ``topic`` (a sub-topic)."""

    position: int
    customer: Any
    topic: str
    bindings: bool
    tables: tuple[str, ...] | None = None
    staff: tuple[str, ...] = ()


# The arrays are passed as text: asyncpg has codecs of its own for text[] and oid[] only, and
# asks the database about any other array type on every new pool connection (a slow catalog
# query, on each of the pool's fresh connections during a reconnect storm).

#: In one statement, so one round trip and one snapshot: the head (the row of kind ``h``: its
#: ``pos`` is the head, its ``i`` the oldest position the log still holds), then per customer
#: its changes after a position (kind ``c``: one index probe each, however far back the
#: positions of the batch reach; one pass over the log from the oldest would read every other
#: customer's changes too), then per topic its broadcasts after a position (kind ``b``: the
#: log's broadcast index), then per staff user a customer follows their presence changes after
#: a position (kind ``s``: the log's staff presence index). Each probe reads at most a page; a
#: full page reads the rest on its own, up to the same head. A reconnect storm's replays wait for
#: one another's batches on a busy event loop, where every round trip costs a turn of it (issue
#: 16, the reconnect row).
_PROBES = f"""
WITH state AS (SELECT last_pos AS head FROM rtm.change_feed_state)
SELECT 'h' AS kind, (SELECT min(pos) FROM rtm.change_log) AS i, head AS pos, NULL AS table_name,
    NULL AS op, NULL::jsonb AS record, NULL::jsonb AS old_record, NULL::uuid AS conversation_id,
    NULL::uuid AS customer_id, NULL AS changed_at, NULL::float8 AS changed_epoch
FROM state
UNION ALL
SELECT 'c', r.i, c.* FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(who, since, i)
CROSS JOIN LATERAL (SELECT {_COLUMNS} FROM rtm.change_log WHERE customer_id = r.who::uuid
    AND pos > r.since::bigint AND pos <= (SELECT head FROM state) ORDER BY pos LIMIT $5) AS c
UNION ALL
SELECT 'b', r.i, c.* FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS r(topic, since, i)
CROSS JOIN LATERAL (SELECT {_COLUMNS} FROM rtm.change_log
    WHERE table_name = '{BROADCAST_TABLE}' AND record ->> 'topic' = r.topic
    AND pos > r.since::bigint AND pos <= (SELECT head FROM state) ORDER BY pos LIMIT $5) AS c
UNION ALL
SELECT 's', r.i, c.* FROM unnest($6::text[], $7::text[]) WITH ORDINALITY AS r(who, since, i)
CROSS JOIN LATERAL (SELECT {_COLUMNS} FROM rtm.change_log
    WHERE table_name = 'user_presence' AND customer_id IS NULL
    AND (coalesce(record, old_record) ->> 'user_id') = r.who
    AND pos > r.since::bigint AND pos <= (SELECT head FROM state) ORDER BY pos LIMIT $5) AS c
"""


async def read_missed(
    conn: asyncpg.Connection,
    asks: list[Missed],
    *,
    page_size: int = BATCH,
    replay_limit: int = REPLAY_LIMIT,
) -> dict[Missed, tuple[History, list[Change]]]:
    """For each ask, its history and its topic's broadcasts up to one head: customers'
    changes and topics' broadcasts by index probes, all in one query (a probe that fills a
    page of ``page_size`` reads the rest on its own); the asks that want every change, or
    every change to some tables (staff, the service), share one read of the log from the
    oldest of them, a second query. Such an ask more than ``replay_limit`` changes behind
    reads nothing and is told its history is lost: what it would read is held in memory. A
    customer's ask, or a topic's broadcasts, with more than ``replay_limit`` to replay reads
    no further than that and is told the same, as is one that follows a staff user with more
    than ``replay_limit`` presence changes to replay."""
    customers = sorted({(a.customer, a.position) for a in asks if a.bindings and a.customer})
    topics = sorted({(a.topic, a.position) for a in asks})
    staff = sorted(
        {(user, a.position) for a in asks if a.bindings and a.customer for user in a.staff}
    )
    rows = await conn.fetch(
        _PROBES,
        [str(c) for c, _ in customers],
        [str(p) for _, p in customers],
        [t for t, _ in topics],
        [str(p) for _, p in topics],
        min(page_size, replay_limit + 1),
        [u for u, _ in staff],
        [str(p) for _, p in staff],
    )
    # The head's row is found by its kind: a plan may return the branches in any order.
    (state,) = [row for row in rows if row["kind"] == "h"]
    head, oldest = state["pos"], state["i"]
    pages: dict[str, list[list[Change]]] = {
        "c": [[] for _ in customers],
        "b": [[] for _ in topics],
        "s": [[] for _ in staff],
    }
    for row in rows:
        if row is not state:
            pages[row["kind"]][row["i"] - 1].append(Change.from_row(row))
    for page in (*pages["c"], *pages["b"], *pages["s"]):
        page.sort(key=attrgetter("pos"))
    of_customer = dict(zip(customers, pages["c"], strict=True))
    of_topic = dict(zip(topics, pages["b"], strict=True))
    of_staff = dict(zip(staff, pages["s"], strict=True))
    wide = [
        a.position
        for a in asks
        if a.bindings and a.customer is None and head - replay_limit <= a.position < head
    ]
    stretch = await _Stretch.read(conn, min(wide), head) if wide else _Stretch([])

    async def whole(page: list[Change], position: int, where: str, key: Any) -> list[Change]:
        """A probe's page, or, when it filled, everything it narrows to up to the same head
        (at most one more than the replay limit)."""
        if len(page) >= page_size and page_size <= replay_limit:
            return await _after(conn, position, head, where, key, replay_limit + 1)
        return page

    found: dict[Missed, tuple[History, list[Change]]] = {}
    for ask in asks:
        position = ask.position
        lost = _pruned(position, head, oldest)
        changes: list[Change] = []
        if ask.bindings and ask.customer:
            # A copy: asks of one customer and position share their page.
            changes = list(
                await whole(
                    of_customer[(ask.customer, position)], position, _OF_CUSTOMER, ask.customer
                )
            )
            for user in ask.staff:
                changes += await whole(of_staff[(user, position)], position, _OF_STAFF, user)
            changes.sort(key=attrgetter("pos"))
            if len(changes) > replay_limit:
                lost, changes = True, []
        elif ask.bindings and head - position > replay_limit:
            lost = True
        elif ask.bindings:
            changes = stretch.changes(ask)
        page = await whole(of_topic[(ask.topic, position)], position, _OF_TOPIC, ask.topic)
        if len(page) > replay_limit:
            lost, page = True, []
        found[ask] = (History(changes, lost, head), page)
    return found


#: The log after a position up to the head.
_RANGE = f"SELECT {_COLUMNS} FROM rtm.change_log WHERE pos > $1 AND pos <= $2 ORDER BY pos"


class _Stretch:
    """The log after a position up to the head, read once for the staff and service asks of a
    batch (each used to read it on its own), each row decoded only when an ask takes it."""

    def __init__(self, rows: list[asyncpg.Record]) -> None:
        self._rows = rows
        self._decoded: dict[int, Change] = {}

    @classmethod
    async def read(cls, conn: asyncpg.Connection, after: int, head: int) -> _Stretch:
        return cls(await conn.fetch(_RANGE, after, head) if after < head else [])

    def changes(self, ask: Missed) -> list[Change]:
        """What a staff or service ``ask`` missed of the stretch: some tables' changes or all."""
        rows, decoded, tables = self._rows, self._decoded, ask.tables
        found: list[Change] = []
        for i, row in enumerate(rows):
            if row["pos"] > ask.position and (tables is None or row["table_name"] in tables):
                change = decoded.get(i)
                if change is None:
                    change = decoded[i] = Change.from_row(row)
                found.append(change)
        return found


#: The feed's session plans no table scans. Every statement it runs walks a primary key in
#: order (or the log's time index), over tables whose size swings from nothing to thousands of
#: rows within a second (the queue, the log of a fresh database). A plan made once for the
#: session while a table was empty (the stamp has no parameters; the read's cached generic plan)
#: was a scan of the whole table, kept as the table grew: on a fresh database every read scanned
#: the whole log until autovacuum's first ANALYZE (issue 12), and the stamp the whole queue. A
#: bitmap scan reads every row after the position, then sorts them, for a batch of 2,000.
FEED_SETTINGS: dict[str, str] = {
    **SERVER_SETTINGS,
    "application_name": APPLICATION_NAME,
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
}


async def connect_feed(url: str) -> asyncpg.Connection:
    """The change feed's own connection (the server's session settings, no JIT; no table
    scans, :data:`FEED_SETTINGS`)."""
    conn: asyncpg.Connection = await asyncpg.connect(url, timeout=10, server_settings=FEED_SETTINGS)
    return conn


#: How the statistics keeper's connection shows in pg_stat_activity.
STATISTICS_APPLICATION_NAME = "rtm statistics"
#: Seconds between two looks at the tables' growth.
STATISTICS_INTERVAL = 1.0

#: Tables that have grown past twice their size at their last ANALYZE (and by more than
#: STATISTICS_MIN_GROWTH rows), in the schemas the messaging tables, their triggers and the
#: feed use. Autovacuum would analyse them too, but it looks every minute (autovacuum_naptime),
#: and what a trigger or a session plans in between, it plans for the size at its last ANALYZE,
#: or, for a table never analysed, with no statistics at all: on a fresh database the presence
#: trigger then walked every open connection for each participant that connected (10,000
#: customers connecting: 3.5 s per batch of 250 and a core busy for 15 s, issue 16). Generic
#: plans cached by triggers and sessions are replanned after an ANALYZE.
_GROWN = """
SELECT format('%I.%I', s.schemaname, s.relname) AS name
FROM pg_stat_user_tables AS s
JOIN pg_class AS c ON c.oid = s.relid
WHERE s.schemaname IN ('public', 'rtm', 'realtime')
  AND s.n_live_tup > 2 * greatest(c.reltuples, 0) + $1
  AND pg_has_role(c.relowner, 'MEMBER')  -- what this role may analyse
ORDER BY s.n_live_tup
"""
STATISTICS_MIN_GROWTH = 500


async def analyze_grown_tables(conn: asyncpg.Connection) -> list[str]:
    """ANALYZE the tables that have outgrown their statistics (:data:`_GROWN`); their names.

    A table another session is analysing (or altering) is left for the next round."""
    done: list[str] = []
    for row in await conn.fetch(_GROWN, STATISTICS_MIN_GROWTH):
        await conn.execute(f"ANALYZE (SKIP_LOCKED) {row['name']}")
        done.append(row["name"])
    return done


async def feed_head(conn: asyncpg.Connection) -> int:
    head: int = await conn.fetchval("SELECT last_pos FROM rtm.change_feed_state")
    return head


class ChangeFeed:
    """Keeps this process's router supplied with every change, surviving database outages."""

    def __init__(
        self,
        database_url: str,
        deliver: Callable[[Sequence[Change]], None],
        *,
        retention_seconds: float = 24 * 3600,
        poll_interval: float = 0.5,
        max_backoff: float = 5.0,
    ) -> None:
        self._url = database_url
        self._deliver = deliver
        self._retention = retention_seconds
        self._poll = poll_interval
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: The connection :meth:`start` opened, until the task takes it over.
        self._first: asyncpg.Connection | None = None
        self.position: int | None = None
        self.live = asyncio.Event()
        self.stamper = False
        self._statistics: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and read the log's head before returning, so before the server listens: a
        client that joins once it does must get every change committed after its join. Read
        later, in the feed's task, the head could already lie past a change that another
        process stamped after the join (that change would then reach no one). If the database
        does not answer now, the task reads the head when it connects, as after an outage."""
        first: asyncpg.Connection | None = None
        if self.position is None:
            try:
                first = await connect_feed(self._url)
                self.position = await feed_head(first)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("change feed could not read the log's head at start (%r)", exc)
                if first is not None:
                    first.terminate()
                    first = None
        self._first = first
        self._task = asyncio.create_task(self._run(), name="rtm-change-feed")

    async def stop(self) -> None:
        if self._first is not None:  # the task never started
            self._first.terminate()
            self._first = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            opened, self._first = self._first, None
            try:
                await self._session(opened)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever broke, the feed must come back by itself
                if self.live.is_set():
                    backoff = 0.1  # it was working: start the backoff over
                self.live.clear()
                self.stamper = False
                log.warning("change feed lost its database (%r); retrying in %.1fs", exc, backoff)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self._max_backoff)

    async def _session(self, first: asyncpg.Connection | None = None) -> None:
        """One database connection's worth of feeding (``first``: the one :meth:`start`
        opened); returns or raises when it breaks."""
        conn = first if first is not None else await connect_feed(self._url)
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
            if self.position is None:
                self.position = await feed_head(conn)
            self.stamper = bool(
                await conn.fetchval("SELECT pg_try_advisory_lock($1)", STAMPER_LOCK_KEY)
            )
            self.live.set()
            last_prune = 0.0
            loop = asyncio.get_running_loop()
            # A stamper that died may have left the flag set: take it over as awake, and let
            # the linger put it to sleep properly.
            awake = False
            last_change = float("-inf")
            # The stamper hands out every position from here on: once it has read up to the
            # head it found, it knows what the log holds without reading it.
            head: int | None = None
            if self.stamper:
                head = await self._take_over(conn)
                awake, last_change = True, loop.time()
            while True:
                self._wake.clear()
                rows: list[asyncpg.Record] = []
                if head is not None:
                    stamped = await conn.fetch(_STAMP)
                    if stamped:
                        last_change = loop.time()
                        head = stamped[-1]["pos"]
                        if stamped[0]["pos"] == self.position + 1:
                            rows = stamped
                    if loop.time() - last_prune > min(60.0, self._retention / 4):
                        await self._prune(conn)
                        last_prune = loop.time()
                elif await conn.fetchval("SELECT pg_try_advisory_lock($1)", STAMPER_LOCK_KEY):
                    self.stamper = True
                    head = await self._take_over(conn)
                    awake, last_change = True, loop.time()
                    continue
                if not rows and (head is None or self.position < head):
                    rows = await conn.fetch(_READ, self.position)
                if rows:
                    changes = [Change.from_row(r) for r in rows]
                    # Past the batch only once it is handed over: should delivery fail, the
                    # next session reads the batch again (subscribers skip what they had).
                    self._deliver(changes)
                    self.position = changes[-1].pos
                    if len(rows) == BATCH:
                        continue
                if self.stamper:
                    if loop.time() - last_change < LINGER:
                        if not awake:
                            await conn.execute(_AWAKE, True)
                            awake = True
                        await asyncio.sleep(FAST_POLL)
                        continue
                    if awake:
                        await conn.execute(_AWAKE, False)
                        awake = False
                        # One more round, a moment later, for a writer that saw it awake just
                        # before committing.
                        await asyncio.sleep(LAST_LOOK)
                        continue
                try:
                    # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that
                    # arrives as a notification wakes it, and stop() then waited forever.
                    async with asyncio.timeout(self._poll):
                        await self._wake.wait()
                    if self.stamper:
                        last_change = loop.time()  # woken by a writer: stay awake a while
                except TimeoutError:
                    pass
                if conn.is_closed():
                    raise ConnectionError("connection closed")
        finally:
            await self._stop_statistics()
            await _close(conn)

    async def _take_over(self, conn: asyncpg.Connection) -> int:
        """Become the stamper: awake, keeping statistics; the head of the log now."""
        await conn.execute(_AWAKE, True)
        if self._statistics is None:
            self._statistics = asyncio.create_task(
                self._keep_statistics(), name="rtm-change-feed-statistics"
            )
        return await feed_head(conn)

    async def _keep_statistics(self) -> None:
        """While this process stamps: ANALYZE what outgrew its statistics, on a connection of
        its own (an ANALYZE takes milliseconds to seconds, which the stamper cannot wait)."""
        conn: asyncpg.Connection | None = None
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(
                            self._url,
                            timeout=10,
                            server_settings={
                                **SERVER_SETTINGS,
                                "application_name": STATISTICS_APPLICATION_NAME,
                            },
                        )
                    analysed = await analyze_grown_tables(conn)
                    if analysed:
                        log.debug("analysed %s", ", ".join(analysed))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.info("statistics upkeep failed (%r); trying again", exc)
                    if conn is not None:
                        conn.terminate()
                        conn = None
                await asyncio.sleep(STATISTICS_INTERVAL)
        finally:
            if conn is not None:
                await _close(conn)

    async def _stop_statistics(self) -> None:
        task, self._statistics = self._statistics, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _prune(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "DELETE FROM rtm.change_log WHERE changed_at < now() - make_interval(secs => $1)",
            float(self._retention),
        )
        # Broadcasts from the database are kept as long as the log that delivers them.
        await conn.execute(
            "DELETE FROM realtime.messages "
            "WHERE inserted_at < localtimestamp - make_interval(secs => $1)",
            float(self._retention),
        )


async def _close(conn: asyncpg.Connection) -> None:
    # Bounded: a close after a cancelled query first waits, without a timeout of its own, for
    # asyncpg's cancel request to complete, and was seen to wait forever in the test suite.
    # Past the bound the socket is dropped.
    try:
        await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT)
    except TimeoutError:
        conn.terminate()
