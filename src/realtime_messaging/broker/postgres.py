"""Several processes acting as one through their database alone: a broker without Redis.

The shape is Centrifugo's PostgreSQL broker (``internal/pgstreambroker``), cut down to what one
database of a handful of processes needs. Migration ``0010_broker`` holds the table,
``rtm.broker_messages``: unlogged, rows kept for seconds.

- **Publish** delivers to this process's hub first, then queues the encoded envelope
  (:mod:`.wire`) for the channel ``t:<topic>``; ``send`` queues a control envelope for ``ctl``
  (every other process) or ``n:<node>`` (one). One writer task appends everything queued in
  one call of ``rtm.broker_publish`` per batch: a transaction that takes an advisory lock
  before drawing ids, inserts the batch in one statement and NOTIFYs ``rtm_broker`` (empty: a
  wake-up, never data). The lock makes batches commit in id order across processes, which is
  what lets readers follow a cursor without ever skipping a late committer. One writer keeps
  each process's order; local delivery never waits for the database.
- **Read**: one reader per process on a dedicated connection that LISTENs, reading ``id >
  cursor`` in id order, 1000 rows at a time until nothing is left, whenever it is woken and
  every 100 ms anyway (a notification can be missed: it is only sent at commit, and a listener
  connection can be replaced between two). Every process reads every row; rows of topics with
  no member here are skipped by their channel before being decoded (the hub reports them with
  ``topic_added``/``topic_removed``), as are other processes' ``n:`` rows and, once decoded,
  this process's own rows (delivered locally when published). Filtering here rather than in
  SQL keeps the query one index range scan, and the cursor moves past every row read. A topic
  is also read for ``linger`` seconds after a join asked for it (:meth:`PostgresBroker.ready`):
  the cluster follows a topic it is syncing presence for before the hub has a member of it.
- **Cursor**: starts at the newest row when the process starts (nothing older is delivered)
  and is kept across reconnections, so a reader that comes back resumes where it was and loses
  nothing published meanwhile, as long as the rows are still there: rows are deleted
  ``retention`` seconds after they were written (by whichever process gets there first, one at
  a time). A reader away longer than that may have missed rows: it skips to the newest row
  instead of delivering a partial, stale stretch, and counts a gap. Either way the sink is told
  (``connected``) once the reader is current again, so state kept from other processes is
  resynced. Ids going backwards (a crash empties the unlogged table and restarts its sequence)
  are noticed within ``prune_interval`` and the reader starts over from the first row.
  ``ready`` returns at once: rows committed after a join was answered all lie past
  the cursor, and the reader reads every row past it.
- **Faults**: either connection failing marks the broker degraded (logged once per
  transition, ``status().up``); this process keeps delivering to its own clients, and what it
  publishes meanwhile reaches only them (counted as dropped). Each connection comes back on its
  own with capped, jittered backoff. Malformed rows are counted and skipped; a sink that raises
  is logged and does not stop the reader.

Every publishing transaction takes a cluster-wide lock at commit (NOTIFY) and every process reads
every row, so this carries some ten thousand envelopes a second between a few processes (16,000
to 24,000 with p99 under 100 ms on 2 vCPUs: ``benchmarks/README.md``, "PostgreSQL broker"), not
the hundreds of thousands Redis can.
LISTEN needs a direct connection: not through PgBouncer in transaction mode, which drops it (the
100 ms poll still delivers, later).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from typing import Final

import asyncpg

from ..store.database import SERVER_SETTINGS
from . import BrokerStatus, Envelope, Sink
from .backoff import Backoff
from .inbound import Inbound
from .tasks import cancel_until_done
from .wire import encode

log = logging.getLogger(__name__)

#: The channel NOTIFY wakes readers on (``rtm.broker_publish`` sends it).
NOTIFY_CHANNEL: Final = "rtm_broker"
#: Held (transaction-level) by the process deleting old rows, so that processes take turns
#: instead of queueing on each other's row locks: one that finds it taken skips its round.
PRUNE_LOCK_KEY: Final = 0x52544D5F4250524E  # "RTM_BPRN"
#: Rows per read and at most per written batch.
BATCH: Final = 1000
#: Bytes of envelopes per written batch, past which the batch is cut (large binary broadcasts).
BATCH_BYTES: Final = 4 * 1024 * 1024
#: Seconds a closing connection may take before its socket is dropped: asyncpg's close first
#: waits, without a bound of its own, for a cancelled query's cancel request.
CLOSE_TIMEOUT: Final = 2.0

_APPEND = "SELECT rtm.broker_publish($1::text[], $2::bytea[])"
_READ = f"SELECT id, channel, body FROM rtm.broker_messages WHERE id > $1 ORDER BY id LIMIT {BATCH}"
_HEAD = "SELECT coalesce(max(id), 0) FROM rtm.broker_messages"
#: The last id handed out (0 before the first): below the cursor only when the sequence
#: restarted, which a crash does to an unlogged one (and ``TRUNCATE ... RESTART IDENTITY``).
_ISSUED = (
    "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END "
    "FROM rtm.broker_messages_id_seq"
)
#: Deletes rows older than the retention, without an index on their time and without reading
#: the rows that stay: ids run in commit order and so, give or take a transaction's length, do
#: times, so the old rows are those below the first young one, found by walking the primary key
#: from its low end past the rows about to go (or all rows, with no young one). A row dated
#: ahead of this transaction (the clock was stepped back) is not taken as that first young row,
#: which would keep everything after it; it stays until its own time comes.
_PRUNE = """
DELETE FROM rtm.broker_messages
WHERE created_at < now() - make_interval(secs => $1)
  AND id < coalesce(
        (SELECT id FROM rtm.broker_messages
         WHERE created_at >= now() - make_interval(secs => $1) AND created_at <= now()
         ORDER BY id LIMIT 1),
        9223372036854775807)
"""


def _storable(name: str) -> str:
    """``name`` as PostgreSQL text can hold it (no NUL). Only used to filter rows before
    decoding them: the hub matches envelopes by their own topic, so a collision costs a
    decode, never a wrong delivery."""
    return name.replace("\x00", "\\x00")


def _topic_channel(topic: str) -> str:
    return "t:" + _storable(topic)


def _node_channel(node: str) -> str:
    return "n:" + _storable(node)


async def _close(conn: asyncpg.Connection) -> None:
    """Close ``conn`` politely within :data:`CLOSE_TIMEOUT`, else drop its socket."""
    if conn.is_closed():
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await conn.close()
    except Exception:
        conn.terminate()
    except BaseException:
        conn.terminate()
        raise


class PostgresBroker:
    """The :class:`~realtime_messaging.broker.Broker` of several processes on one database.

    ``node_id`` must be unique per process (the composition root draws one at random). The
    reader's connection shows as ``rtm-broker-<node_id>`` in ``pg_stat_activity``, the
    writer's as ``rtm-broker-writer-<node_id>``.
    """

    def __init__(
        self,
        database_url: str,
        node_id: str,
        *,
        retention: float = 30.0,
        prune_interval: float = 5.0,
        poll_interval: float = 0.1,
        max_backoff: float = 2.0,
        io_timeout: float = 2.0,
        max_queue: int = 10_000,
        linger: float = 5.0,
    ) -> None:
        self._url = database_url
        self._node = node_id.encode()
        if not 0 < len(self._node) < 256:
            raise ValueError("node_id must be 1 to 255 bytes")
        self.node = node_id
        self.reader_name = f"rtm-broker-{node_id}"
        self.writer_name = f"rtm-broker-writer-{node_id}"
        self._own = _node_channel(node_id)
        self._retention = retention
        self._prune_interval = prune_interval
        self._poll = poll_interval
        self._max_backoff = max_backoff
        self._io_timeout = io_timeout
        self._max_queue = max_queue
        self._linger = linger
        self._sink: Sink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # -- reading
        self._local: Counter[str] = Counter()  # channels of topics with a member here
        self._asked: dict[str, float] = {}  # channels of topics joins asked for -> until when
        self._cursor: int | None = None  # the last id read; None until the first connection
        self._positioned = asyncio.Event()  # the cursor is set: later rows will all be read
        self._read_at = 0.0  # loop time before the last read that succeeded
        self._readable = asyncio.Event()  # a notification came, or the connection ended
        # -- writing
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        # -- health
        self._reader_up = False
        self._writer_up = False
        self._writer_ready = asyncio.Event()  # set while the writer is connected
        self._closing = False
        self._closed = asyncio.Event()  # set by stop(): ends a backoff pause early
        self._state = "starting"  # then "up" or "degraded", logged on each change
        self._settled = asyncio.Event()  # both connections tried once
        self._reader_tried = False
        self._writer_tried = False
        self._inbound = Inbound(self._node)
        self.published = 0
        self.dropped = 0
        #: Times rows may have been missed: the reader was away past the retention, or the
        #: ids restarted (a database crash empties the unlogged table and its sequence).
        self.gaps = 0
        #: Rows this process deleted after the retention.
        self.pruned = 0

    # -- Broker ------------------------------------------------------------------------

    async def start(self, sink: Sink) -> None:
        """Connect in the background; return once both connections were tried (bounded)."""
        self._sink = sink
        self._tasks = [
            asyncio.create_task(self._reader(), name="rtm-pg-broker-reader"),
            asyncio.create_task(self._writer(), name="rtm-pg-broker-writer"),
        ]
        try:
            async with asyncio.timeout(self._io_timeout + 0.5):
                await self._settled.wait()
        except TimeoutError:
            pass  # still connecting: the process serves its own clients meanwhile

    async def stop(self) -> None:
        """Write what is queued (bounded by ``io_timeout``), then close both connections."""
        self._closing = True
        self._closed.set()
        self._wake.set()
        self._readable.set()
        # The tasks end by themselves (the writer once its queue is empty); past the deadline
        # they are cancelled.
        pending: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self._io_timeout)
        await cancel_until_done(pending, CLOSE_TIMEOUT, "PostgreSQL broker")
        self.dropped += len(self._queue)
        self._queue.clear()
        self._tasks = []
        self._sink = None

    def publish(self, envelope: Envelope) -> None:
        """Deliver here at once; queue for the other processes (never blocks)."""
        sink = self._sink
        if sink is None:
            return
        sink.deliver(envelope)
        self._enqueue(_topic_channel(envelope.topic), envelope)

    def send(self, envelope: Envelope, node: str | None = None) -> None:
        """Queue a control envelope for every other process, or for process ``node``."""
        if self._sink is None:
            self.dropped += 1
            return
        self._enqueue("ctl" if node is None else _node_channel(node), envelope)

    def topic_added(self, topic: str) -> None:
        self._local[_topic_channel(topic)] += 1

    def topic_removed(self, topic: str) -> None:
        channel = _topic_channel(topic)
        left = self._local[channel] - 1
        if left > 0:
            self._local[channel] = left
        else:
            del self._local[channel]

    async def ready(self, topic: str) -> None:
        """Return at once once the reader has its cursor: anything published after the caller
        answers its join commits past it (ids commit in order), so the reader reads it. The topic passes the reader's
        filter from now on for ``linger`` seconds, member or not yet: a presence-enabled join
        follows the topic while it waits for the other processes' metas, before the hub has
        its member (then ``topic_added`` keeps it)."""
        self._asked[_topic_channel(topic)] = asyncio.get_running_loop().time() + self._linger
        if not self._positioned.is_set():
            # Not yet connected once: rows committed before the cursor is placed would never
            # be read, so wait for it (bounded: without the database, serve this process alone).
            # asyncio.wait, not asyncio.timeout: a join runs this before it has a task
            # (server/eager.py).
            waiting = asyncio.create_task(self._positioned.wait())
            try:
                await asyncio.wait([waiting], timeout=self._io_timeout)
            finally:
                waiting.cancel()

    def status(self) -> BrokerStatus:
        return BrokerStatus(
            "postgres",
            up=self._state == "up",
            published=self.published,
            received=self._inbound.received,
            dropped=self.dropped,
            malformed=self._inbound.malformed,
        )

    # -- writing -----------------------------------------------------------------------

    def _enqueue(self, channel: str, envelope: Envelope) -> None:
        if not self._writer_up or self._closing or len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        try:
            data = encode(envelope, self._node)
        except (TypeError, ValueError):  # not JSON: local delivery could not have encoded it
            log.exception("cannot forward an envelope %s on %s", envelope.event, envelope.topic)
            self.dropped += 1
            return
        self._queue.append((channel, data))
        self._wake.set()

    async def _connect(self, name: str) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._url,
            timeout=self._io_timeout,
            server_settings={**SERVER_SETTINGS, "application_name": name},
        )
        return conn

    def _wake_writer(self, *_: object) -> None:
        self._wake.set()

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or until the broker stops."""
        try:
            async with asyncio.timeout(delay):
                await self._closed.wait()
        except TimeoutError:
            pass

    async def _writer(self) -> None:
        backoff = Backoff(self._max_backoff)
        while not self._closing:
            conn: asyncpg.Connection | None = None
            batch: list[tuple[str, bytes]] = []
            try:
                conn = await self._connect(self.writer_name)
                conn.add_termination_listener(self._wake_writer)
                self._writer_tried = True
                self._writer_up = True
                self._writer_ready.set()
                self._health_changed(None)
                backoff.reset()
                await self._write(conn, batch)
                await _close(conn)
                return  # closing, and everything queued is written
            except asyncio.CancelledError:
                if conn is not None:
                    conn.terminate()
                self.dropped += len(batch)  # stop() counts what is still queued
                raise
            except Exception as exc:
                if conn is not None:
                    conn.terminate()
                self._writer_tried = True
                self._writer_up = False
                self._writer_ready.clear()
                # Unconfirmed or unsent: counted as not forwarded (some may have been).
                self.dropped += len(batch) + len(self._queue)
                self._queue.clear()
                self._health_changed(exc)
            await self._pause(backoff.next())

    async def _write(self, conn: asyncpg.Connection, batch: list[tuple[str, bytes]]) -> None:
        """Append what is queued, a batch per transaction, until closing with nothing left;
        delete old rows between batches. ``batch`` holds the batch in flight (for counting
        it as dropped should it fail)."""
        loop = asyncio.get_running_loop()
        timeout = self._io_timeout
        next_prune = loop.time()
        while True:
            now = loop.time()
            if now >= next_prune:
                # Between batches, busy or not; when idle it also proves the connection still
                # works, so that a dead one is replaced before it is needed.
                async with asyncio.timeout(timeout):
                    await self._prune(conn)
                now = loop.time()
                next_prune = now + self._prune_interval
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                try:
                    async with asyncio.timeout(next_prune - now):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                if conn.is_closed():
                    # Noticed at once (it wakes the writer), not at the next batch: the broker
                    # says it is degraded, and drops rather than queues, from now on.
                    raise ConnectionError("the writer's connection was closed")
                continue
            queue = self._queue
            size = 0
            while queue and len(batch) < BATCH and (not batch or size < BATCH_BYTES):
                item = queue.popleft()
                batch.append(item)
                size += len(item[1])
            async with asyncio.timeout(timeout):
                await conn.execute(_APPEND, [c for c, _ in batch], [b for _, b in batch])
            self.published += len(batch)
            batch.clear()

    async def _prune(self, conn: asyncpg.Connection) -> None:
        """Delete rows past the retention, unless another process is doing it right now."""
        async with conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", PRUNE_LOCK_KEY):
                return
            status = await conn.execute(_PRUNE, float(self._retention))
        self.pruned += int(status.rsplit(" ", 1)[-1])

    # -- reading -----------------------------------------------------------------------

    def _notified(self, *_: object) -> None:
        self._readable.set()

    async def _reader(self) -> None:
        backoff = Backoff(self._max_backoff)
        while not self._closing:
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._connect(self.reader_name)
                conn.add_termination_listener(self._notified)
                await self._read_session(conn, backoff)
                await _close(conn)
                return  # closing
            except asyncio.CancelledError:
                if conn is not None:
                    conn.terminate()
                raise
            except Exception as exc:
                if conn is not None:
                    conn.terminate()
                self._reader_tried = True
                self._reader_up = False
                self._health_changed(exc)
            await self._pause(backoff.next())

    async def _read_session(self, conn: asyncpg.Connection, backoff: Backoff) -> None:
        """One reader connection, from connecting to its failure (or to closing)."""
        loop = asyncio.get_running_loop()
        timeout = self._io_timeout
        async with asyncio.timeout(timeout):
            # LISTEN first: a batch committed from now on either wakes this reader or is
            # already visible to the reads below.
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
            if self._cursor is None:
                self._cursor = await conn.fetchval(_HEAD)
                self._read_at = loop.time()
                self._positioned.set()
            elif loop.time() - self._read_at >= self._retention * 0.9:
                # Rows written after the last read may be deleted already: deliver none of
                # what is left rather than a stretch with a hole in it (the sink resyncs).
                self._gap("the reader was away longer than the retention")
                self._cursor = await conn.fetchval(_HEAD)
            await self._check_ids(conn)
        await self._catch_up(conn)
        self._reader_tried = True
        self._reader_up = True
        self._health_changed(None)
        backoff.reset()
        await self._connected()
        next_check = loop.time() + self._prune_interval
        while not self._closing:
            try:
                async with asyncio.timeout(self._poll):
                    await self._readable.wait()
            except TimeoutError:
                pass
            if conn.is_closed():
                raise ConnectionError("the reader's connection was closed")
            if self._closing:
                return
            restarted = False
            if loop.time() >= next_check:
                async with asyncio.timeout(timeout):
                    restarted = await self._check_ids(conn)
                now = loop.time()
                next_check = now + self._prune_interval
                self._asked = {c: until for c, until in self._asked.items() if until >= now}
            await self._catch_up(conn)
            if restarted:
                await self._connected()

    async def _catch_up(self, conn: asyncpg.Connection) -> None:
        """Read and hand over every row after the cursor."""
        loop = asyncio.get_running_loop()
        while True:
            self._readable.clear()
            started = loop.time()
            async with asyncio.timeout(self._io_timeout):
                rows = await conn.fetch(_READ, self._cursor)
            self._read_at = started
            if rows:
                self._hand_over(rows)
            if len(rows) < BATCH:
                return

    async def _check_ids(self, conn: asyncpg.Connection) -> bool:
        """Start over from the first row if ids went backwards (the sequence restarted: a
        crash empties the unlogged table and restarts its sequence); True if they did."""
        issued: int = await conn.fetchval(_ISSUED)
        assert self._cursor is not None
        if issued >= self._cursor:
            return False
        self._gap(f"broker ids restarted (at {issued}, the reader was at {self._cursor})")
        self._cursor = 0
        return True

    def _gap(self, why: str) -> None:
        self.gaps += 1
        log.warning(
            "PostgreSQL broker %s: envelopes from other processes may have been missed: %s",
            self.node,
            why,
        )

    def _hand_over(self, rows: list[asyncpg.Record]) -> None:
        sink = self._sink
        local = self._local
        asked = self._asked
        own = self._own
        now = asyncio.get_running_loop().time()
        for row in rows:
            self._cursor = row[0]
            channel: str = row[1]
            if channel.startswith("t:"):
                if channel not in local and asked.get(channel, 0.0) < now:
                    continue  # no member here
                control = False
            elif channel == "ctl" or channel == own:
                control = True
            else:
                continue  # another process's
            self._inbound.relay(sink, row[2], control=control)

    async def _connected(self) -> None:
        """Tell the sink, once the writer is up too (bounded): what the sink sends on hearing
        it (a resync request) would be dropped by a writer still connecting."""
        if not self._writer_up:
            try:
                async with asyncio.timeout(self._io_timeout):
                    await self._writer_ready.wait()
            except TimeoutError:
                pass
        sink = self._sink
        if sink is None:
            return
        try:
            sink.connected()
        except Exception:
            log.exception("error in the broker sink's connected()")

    # -- health ------------------------------------------------------------------------

    def _health_changed(self, exc: BaseException | None) -> None:
        """Log each change between up and degraded once (not every failed attempt)."""
        if self._reader_tried and self._writer_tried:
            self._settled.set()
        if self._reader_up and self._writer_up:
            if self._state != "up":
                # Recovery is logged as loudly as the fault (no logging setup shows INFO).
                level = logging.WARNING if self._state == "degraded" else logging.INFO
                log.log(
                    level,
                    "PostgreSQL broker %s: connected; delivery between processes on",
                    self.node,
                )
                self._state = "up"
            return
        if exc is not None and self._state != "degraded" and not self._closing:
            self._state = "degraded"
            log.warning(
                "PostgreSQL broker %s: database unreachable (%s: %s); degraded: this process "
                "serves its own clients only, and reconnects in the background",
                self.node,
                type(exc).__name__,
                exc,
            )
