#!/usr/bin/env python3
"""Change-feed benchmark: commit-to-client latency of ``postgres_changes`` under load.

``rtm serve`` runs pinned to CPU 0 with a temporary ``RTM_DATA_DIR`` (embedded PostgreSQL). The
load generator (this process: picows subscribers + asyncpg writers on uvloop) runs on CPU 1. The
embedded PostgreSQL would inherit rtm's CPU; it costs about three times rtm's CPU per message, so
by default it is let onto both CPUs (``--pg-cpu server``: with rtm on CPU 0; ``load``: CPU 1).
Traffic goes to 127.0.0.1 and to the embedded database's Unix socket only.

Setup, through plain SQL on the server's database (the URL ``rtm serve`` prints) and the admin API:

* N customers, one conversation each, one portal token each (``pt_…``; only its SHA-256 is
  stored, as ``POST /api/admin/customers/{id}/portal-tokens`` does it);
* S staff users (default 5), with staff JWTs from ``POST /api/admin/users/{id}/tokens``.

Subscribers (Phoenix vsn 2.0.0, JSON arrays, raw frames, heartbeat every 25 s):

* each customer connects with its portal token as ``apikey`` and joins
  ``realtime:conversation:<its conversation>`` with the binding
  ``{"event":"INSERT","schema":"public","table":"customer_messages",
  "filter":"conversation_id=eq.<id>"}``;
* each staff user connects with its JWT and joins ``realtime:staff:<user id>:messages`` with an
  unfiltered INSERT binding on ``customer_messages``;
* a subscriber counts as ready once "Subscribed to PostgreSQL" arrived.

Writers: W asyncpg connections (default 8), each ``INSERT INTO customer_messages`` its own
transaction (autocommit), paced open-loop at a fixed rate into random conversations,
``sender_type = 'customer'``, the sender being the conversation's customer. The content is
``cf:<seq>:<ns>``: a sequence number and the writer's ``time.time_ns()`` before the INSERT was
sent. They use ``synchronous_commit = off`` (``--commit sync``: on): with it on, each commit
holds PostgreSQL's database-wide NOTIFY lock through its WAL flush, which caps the writers around
or below 1,000 msgs/s on a small machine (benchmarks/README.md).

Latency, per delivery: receipt ``time.time_ns()`` - the writer's ``time.time_ns()`` taken as soon
as the INSERT's commit returned (kept in memory by sequence number; the content cannot carry a
time taken after its own commit). This is "commit to client": it leaves out the commit itself,
and errs low by however late the writer's coroutine resumed. ``commit_timestamp`` (the trigger's
``clock_timestamp()``, before the commit, truncated to the millisecond) gives a second,
server-clocked figure that errs high by the commit time plus up to 1 ms; both are printed.

Phases, on the same connections: the cold start (500 msgs/s for 3 s, the first messages the fresh
server and its fresh database ever see, before anything was analysed; latency also per second),
then 1,000 msgs/s for 20 s (target p99 < 50 ms), then 500 msgs/s for 3 s again (the warm
baseline of the cold start, same connections, same run), then a stepped search (1,500, 2,000, 3,000, … msgs/s, 10 s each) for the highest rate
sustained with p99 < 100 ms, stopping at the first step that fails it, that loses or duplicates
a delivery, or that the writers cannot keep up with. Every phase checks that each message
reached its customer and every staff subscriber exactly once (by subscriber and sequence
number).

    python benchmarks/changefeed/run.py [--subscribers 10000] [--quick] [--profile DIR]

Profiling PostgreSQL (no pg_stat_statements in the embedded build): ``--pg-sample`` samples
``pg_stat_activity`` every 10 ms and prints, per phase, which statements the backends were
running (by backend kind); ``--pg-log-ms N`` logs statements slower than N ms and every
autovacuum/autoanalyze into ``<profile dir>/postgres.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil
from picows import WSListener, WSMsgType, WSTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402  (benchmarks/common.py, put on the path above)
    ANALYZE_TABLES,
    CLIENT_CPU,
    NOISY_PCT,
    SERVER_CPU,
    RtmServer,
    busy_pct,
    close_reason,
    connect_ws,
    cpu_times,
    default_rtm_cmd,
    disconnect_all,
    heartbeats,
    listen_overflows,
    pct_ms,
    pin_processes,
    postgres_procs,
    print_log_problems,
    proc_cpu,
    run_pinned,
    seed,
    start_py_spy,
    stop_py_spy,
    summarize_profile,
    wait_quiet,
)

WRITER_APP = "rtm-bench-writer"
STATISTICS_APP = "rtm statistics"  # store/changefeed.py, STATISTICS_APPLICATION_NAME
MONITOR_APP = "rtm-bench-monitor"
JWT_SECRET = "changefeed-benchmark-secret-0123456789abcdef"  # throwaway, for a temp data dir
FIRST_TARGET_MS = 50.0  # p99 target at 1,000 msgs/s
STEP_TARGET_MS = 100.0  # p99 target of the stepped search
KEEP_UP = 0.95  # a step whose writers reach less than this share of the rate is not sustained
COLD = "cold start"
WARM = "warm 500/s"
COLD_RATE = 500.0
#: The cold start's target: p99 under this in every second.
COLD_TARGET_MS = 50.0
STEPS = (1500, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 15000)
INSERT = (
    "INSERT INTO public.customer_messages (conversation_id, sender_type, sender_id, content) "
    "VALUES ($1, 'customer', $2, $3)"
)


@dataclass
class Plan:
    subscribers: int
    staff: int
    writers: int
    first_rate: float
    first_s: float
    step_s: float
    cold_s: float
    batch: int
    drain_s: float
    budget_s: float  # no new step starts after this many seconds of phases
    sync_commit: bool  # the writers' synchronous_commit
    pg_sample: bool  # sample pg_stat_activity during phases
    pg_log_ms: int | None  # log statements slower than this, and autovacuum runs
    analyze: bool  # ANALYZE after the cold start (as autovacuum would, later)
    seed: int


# -- the server ---------------------------------------------------------------------------


class Probe:
    """CPU seconds of the rtm process and of the embedded PostgreSQL (postmaster + backends)."""

    def __init__(self, server: RtmServer) -> None:
        assert server.proc is not None
        self.rtm = psutil.Process(server.proc.pid)
        self.server = server
        self.me = psutil.Process()
        self.seen: dict[int, float] = {}  # postgres pid -> last CPU seconds seen

    def pg_procs(self) -> list[psutil.Process]:
        return postgres_procs(self.server.postmaster())

    def sample(self) -> tuple[float, dict[int, float], float]:
        """(rtm CPU s, {postgres pid: CPU s}, this process's CPU s)."""
        self.seen.update((p.pid, proc_cpu(p)) for p in self.pg_procs())
        return proc_cpu(self.rtm), dict(self.seen), proc_cpu(self.me)

    async def watch_postgres(self) -> None:
        """Sample PostgreSQL processes twice a second, so that short-lived ones count too."""
        while True:
            await asyncio.sleep(0.5)
            self.seen.update((p.pid, proc_cpu(p)) for p in self.pg_procs())

    def pin_postgres(self, cpus: set[int]) -> int:
        """Move the postmaster (new backends inherit it) and its current backends to ``cpus``."""
        return pin_processes(self.pg_procs(), cpus)


#: besides busy %: the share in interrupts (on loopback, the TCP receive path runs there,
#: charged to no process)
CPU_PARTS = {"irq": ("irq", "softirq")}


# -- subscribers --------------------------------------------------------------------------


class Sub(WSListener):
    """One subscriber socket with one channel."""

    def __init__(self, gen: LoadGen, index: int, bit: int, conv: int, token: str, topic: str):
        self.gen = gen
        self.index = index
        self.bit = bit  # 1 for a customer; 2, 4, 8, ... for the staff subscribers
        self.conv = conv  # the customer's conversation index; -1 for staff
        self.token = token
        self.topic = topic
        self.transport: WSTransport | None = None
        self.joined: asyncio.Future[None] | None = None
        self.last_sent = 0.0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        data = frame.get_payload_as_bytes()
        i = data.find(b'"cf:')
        if i >= 0:
            self.gen.on_change(self, data, i)
        else:
            self.gen.on_control(self, data)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.gen.on_disconnect(self, transport)


@dataclass
class Phase:
    name: str
    target_rate: float
    start_seq: int
    end_seq: int = -1
    sent: int = 0
    write_errors: int = 0
    expected: int = 0
    delivered: int = 0
    duplicated: int = 0
    misrouted: int = 0
    disconnects: int = 0
    send_span_s: float = 0.0
    max_behind_s: float = 0.0  # how late the writers got against the schedule
    t0_ns: int = 0  # time.time_ns() when the phase's writers started
    per_second: bool = False  # report latency by second of the phase too
    pg_samples: Counter[tuple[str, str]] = field(default_factory=Counter)
    pg_sample_rounds: int = 0
    drain_s: float = 0.0
    wall_s: float = 0.0
    rtm_cpu_s: float = 0.0
    pg_cpu_s: float = 0.0
    pg_by_kind: dict[str, float] = field(default_factory=dict)  # CPU s by backend kind
    feed_stats: dict[str, int] = field(default_factory=dict)
    cli_cpu_s: float = 0.0
    cpu_busy: dict[int, dict[str, float]] = field(default_factory=dict)
    recv_seq: array[int] = field(default_factory=lambda: array("q"))
    recv_ns: array[int] = field(default_factory=lambda: array("q"))
    insert_ns: array[int] = field(default_factory=lambda: array("q"))

    def summary(self, gen: LoadGen) -> dict[str, Any]:
        lat = array("q")
        lat_ts = array("q")
        commit_ns, stamp_ns = gen.commit_ns, gen.stamp_ns
        for seq, at in zip(self.recv_seq, self.recv_ns, strict=True):
            if commit_ns[seq]:
                lat.append(at - commit_ns[seq])
            if stamp_ns[seq]:
                lat_ts.append(at - stamp_ns[seq])
        negative = sum(1 for v in lat if v < 0)
        buckets: dict[int, list[int]] = {}
        if self.per_second:
            for seq, at in zip(self.recv_seq, self.recv_ns, strict=True):
                if commit_ns[seq]:
                    second = (commit_ns[seq] - self.t0_ns) // 1_000_000_000
                    buckets.setdefault(int(second), []).append(at - commit_ns[seq])
        lat_sorted, ts_sorted, ins = sorted(lat), sorted(lat_ts), sorted(self.insert_ns)

        def pct(values: list[int], q: float) -> float | None:
            if not values:
                return None
            return round(values[min(len(values) - 1, int(q * len(values)))] / 1e6, 2)

        wall = self.wall_s or 1.0
        return {
            "phase": self.name,
            "target_msgs_per_s": self.target_rate,
            "sent": self.sent,
            "write_errors": self.write_errors,
            "msgs_per_s": round(self.sent / self.send_span_s, 1) if self.send_span_s else 0.0,
            "writers_behind_max_s": round(self.max_behind_s, 3),
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.expected - self.delivered,
            "duplicated": self.duplicated,
            "misrouted": self.misrouted,
            "disconnects": self.disconnects,
            "deliveries_per_s": (
                round(self.delivered / self.send_span_s, 1) if self.send_span_s else 0.0
            ),
            "p50_ms": pct(lat_sorted, 0.50),
            "p95_ms": pct(lat_sorted, 0.95),
            "p99_ms": pct(lat_sorted, 0.99),
            "max_ms": pct(lat_sorted, 1.0),
            "delivered_before_commit_returned": negative,
            "ts_p50_ms": pct(ts_sorted, 0.50),
            "ts_p99_ms": pct(ts_sorted, 0.99),
            "insert_p50_ms": pct(ins, 0.50),
            "insert_p99_ms": pct(ins, 0.99),
            "drain_s": round(self.drain_s, 2),
            "rtm_cpu_pct": round(100 * self.rtm_cpu_s / wall, 1),
            "pg_cpu_pct": round(100 * self.pg_cpu_s / wall, 1),
            "load_cpu_pct": round(100 * self.cli_cpu_s / wall, 1),
            "cpu_busy_pct": self.cpu_busy,
            "rtm_cpu_us_per_delivery": (
                round(1e6 * self.rtm_cpu_s / self.delivered, 1) if self.delivered else None
            ),
            "pg_cpu_us_per_msg": round(1e6 * self.pg_cpu_s / self.sent, 1) if self.sent else None,
            "pg_cpu_pct_by_kind": {k: round(100 * v / wall, 1) for k, v in self.pg_by_kind.items()},
            "pg_cpu_us_per_msg_by_kind": {
                k: round(1e6 * v / self.sent, 1) for k, v in self.pg_by_kind.items() if self.sent
            },
            # from pg_stat_* (which backends flush about once a second): stamp transactions
            # (updates of rtm.change_feed_state), rows of rtm.change_log read by sequential
            # scans, transactions committed in the database
            "feed_stats": self.feed_stats,
            # by second of the phase (of the commit): deliveries, p50 / p99 / max ms
            "per_second": [
                {
                    "second": k,
                    "deliveries": len(v),
                    "p50_ms": pct(sorted(v), 0.5),
                    "p99_ms": pct(sorted(v), 0.99),
                    "max_ms": pct(sorted(v), 1.0),
                }
                for k, v in sorted(buckets.items())
            ],
            # --pg-sample: share of samples in which a backend of that kind ran that statement
            "pg_samples": [
                {"kind": kind, "query": query, "busy": round(n / self.pg_sample_rounds, 3)}
                for (kind, query), n in self.pg_samples.most_common(12)
            ]
            if self.pg_sample_rounds
            else [],
        }


class LoadGen:
    def __init__(self, plan: Plan, server: RtmServer, probe: Probe) -> None:
        self.plan = plan
        self.server = server
        self.probe = probe
        self.rng = random.Random(plan.seed)
        self.conv_ids: list[Any] = []  # asyncpg UUIDs, by conversation index
        self.cust_ids: list[Any] = []
        self.subs: list[Sub] = []
        self.full_mask = 0
        # by sequence number: conversation index, bits still to receive it, commit times
        self.conv_of = array("i")
        self.pending = array("q")
        self.commit_ns = array("q")  # writer's time.time_ns() when the commit returned
        self.stamp_ns = array("q")  # commit_timestamp (trigger time, ms) as ns
        self.phases: list[Phase] = []
        self.phase: Phase | None = None
        self.outstanding = 0
        self.closing = False
        self.disconnects = 0
        self.close_codes: Counter[str] = Counter()
        self.control: Counter[str] = Counter()
        self.control_samples: list[str] = []
        self.connect_errors: Counter[str] = Counter()
        self.write_error_samples: list[str] = []
        self.join_s: list[float] = []
        self.upgrade_s: list[float] = []
        self.stray = 0
        self.pools: list[asyncpg.Connection] = []
        self.monitor: asyncpg.Connection | None = None
        self.sample_conn: asyncpg.Connection | None = None  # --pg-sample

    # -- setup ----------------------------------------------------------------------------

    async def create_data(self) -> dict[str, Any]:
        plan = self.plan
        started = time.monotonic()
        server = self.server
        seeded = await seed(
            server.db_url,
            server.http,
            server.service_key,
            customers=plan.subscribers,
            staff=plan.staff,
            analyze=False,  # the cold start runs on tables nobody analysed
        )
        self.cust_ids, self.conv_ids = seeded.customer_ids, seeded.conversation_ids
        for k, (conv, token) in enumerate(zip(self.conv_ids, seeded.portal_tokens, strict=True)):
            self.subs.append(Sub(self, k, 1, k, token, f"realtime:conversation:{conv}"))
        for j, (user, token) in enumerate(zip(seeded.staff_ids, seeded.staff_tokens, strict=True)):
            topic = f"realtime:staff:{user}:messages"
            self.subs.append(Sub(self, plan.subscribers + j, 2 << j, -1, token, topic))
        self.full_mask = (2 << plan.staff) - 1
        return {"setup_s": round(time.monotonic() - started, 2)}

    # -- connections ----------------------------------------------------------------------

    async def connect_all(self) -> dict[str, Any]:
        started = time.monotonic()
        subs = self.subs
        for at in range(0, len(subs), self.plan.batch):
            await asyncio.gather(*(self._connect(s) for s in subs[at : at + self.plan.batch]))
        took = time.monotonic() - started

        return {
            "connect_s": round(took, 2),
            "subscribes_per_s": round(len(subs) / took, 1),
            # connect + upgrade (portal token checked) + join + "Subscribed to PostgreSQL"
            "subscribe_p50_ms": pct_ms(self.join_s, 0.5, 1),
            "subscribe_p99_ms": pct_ms(self.join_s, 0.99, 1),
            "subscribe_max_ms": pct_ms(self.join_s, 1.0, 1),
            "upgrade_p50_ms": pct_ms(self.upgrade_s, 0.5, 1),
            "upgrade_p99_ms": pct_ms(self.upgrade_s, 0.99, 1),
            "slow_subscribes_over_1s": sum(1 for t in self.join_s if t > 1.0),
            "connect_errors": dict(self.connect_errors),
        }

    async def _connect(self, sub: Sub) -> None:
        started = time.monotonic()
        url = self.server.ws_url(sub.token)
        await connect_ws(sub, url, self.connect_errors, f"subscriber {sub.index}", 4096)
        self.upgrade_s.append(time.monotonic() - started)
        binding: dict[str, str] = {
            "event": "INSERT",
            "schema": "public",
            "table": "customer_messages",
        }
        if sub.conv >= 0:
            binding["filter"] = f"conversation_id=eq.{self.conv_ids[sub.conv]}"
        join = orjson.dumps(
            [
                "1",
                "1",
                sub.topic,
                "phx_join",
                {
                    "config": {
                        "broadcast": {"self": False},
                        "presence": {"key": ""},
                        "postgres_changes": [binding],
                    }
                },
            ]
        )
        sub.joined = asyncio.get_running_loop().create_future()
        assert sub.transport is not None
        sub.transport.send(WSMsgType.TEXT, join)
        sub.last_sent = time.monotonic()
        try:
            await asyncio.wait_for(sub.joined, 60)
        except TimeoutError as exc:
            raise RuntimeError(f"subscriber {sub.index}: not subscribed after 60 s") from exc
        self.join_s.append(time.monotonic() - started)

    async def heartbeats(self) -> None:
        """A Phoenix heartbeat from every socket at least every 25 s (rtm closes idle ones)."""
        await heartbeats(self.subs)

    def close_all(self) -> None:
        self.closing = True
        disconnect_all(self.subs)

    # -- frames ---------------------------------------------------------------------------

    def on_control(self, sub: Sub, data: bytes) -> None:
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.control["undecodable"] += 1
            return
        key = "unexpected"
        if isinstance(msg, list) and len(msg) == 5:
            _, ref, _topic, event, payload = msg
            status = payload.get("status") if isinstance(payload, dict) else None
            joined = sub.joined
            if event == "phx_reply" and ref == "hb" and status == "ok":
                self.control["heartbeat ok"] += 1
                return
            if event == "phx_reply" and ref == "1":
                if status == "ok":
                    self.control["join ok"] += 1
                    return
                if joined is not None and not joined.done():
                    joined.set_exception(RuntimeError(f"join refused: {payload}"))
            if event == "system" and isinstance(payload, dict):
                message = str(payload.get("message", ""))
                if status == "ok" and message.startswith("Subscribed to PostgreSQL"):
                    self.control["subscribed"] += 1
                    if joined is not None and not joined.done():
                        joined.set_result(None)
                    return
                if joined is not None and not joined.done():
                    joined.set_exception(RuntimeError(f"subscription failed: {payload}"))
            key = f"{event} {status or ''}".strip()
        self.control[key] += 1
        if len(self.control_samples) < 10:
            self.control_samples.append(data[:300].decode(errors="replace"))

    def on_change(self, sub: Sub, data: bytes, i: int) -> None:
        now = time.time_ns()
        j = data.find(b":", i + 4)
        seq = int(data[i + 4 : j])
        phase = self.phase
        if phase is None or seq < phase.start_seq or (0 <= phase.end_seq <= seq):
            phase = self._phase_of(seq)
            if phase is None:
                self.stray += 1
                return
        if sub.conv >= 0 and self.conv_of[seq] != sub.conv:
            phase.misrouted += 1
            return
        mask = self.pending[seq]
        if not mask & sub.bit:
            phase.duplicated += 1
            return
        self.pending[seq] = mask ^ sub.bit
        phase.delivered += 1
        self.outstanding -= 1
        phase.recv_seq.append(seq)
        phase.recv_ns.append(now)
        if not self.stamp_ns[seq]:
            k = data.find(b'"commit_timestamp":"')
            if k >= 0:
                text = data[k + 20 : data.find(b'"', k + 20)].decode()
                stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
                self.stamp_ns[seq] = int(stamp.timestamp() * 1000) * 1_000_000

    def _phase_of(self, seq: int) -> Phase | None:
        for phase in self.phases:
            if phase.start_seq <= seq and (phase.end_seq < 0 or seq < phase.end_seq):
                return phase
        return None

    def on_disconnect(self, sub: Sub, transport: WSTransport) -> None:
        if self.closing:
            return
        self.disconnects += 1
        if self.phase is not None:
            self.phase.disconnects += 1
        reason = close_reason(transport)
        self.close_codes[reason] += 1
        if sub.joined is not None and not sub.joined.done():
            sub.joined.set_exception(RuntimeError(f"disconnected before subscribing: {reason}"))

    # -- writers --------------------------------------------------------------------------

    async def open_writers(self) -> None:
        settings = {
            "application_name": WRITER_APP,
            "synchronous_commit": "on" if self.plan.sync_commit else "off",
        }
        for _ in range(self.plan.writers):
            self.pools.append(await asyncpg.connect(self.server.db_url, server_settings=settings))
        self.monitor = await asyncpg.connect(
            self.server.db_url, server_settings={"application_name": MONITOR_APP}
        )
        if self.plan.pg_sample:
            self.sample_conn = await asyncpg.connect(
                self.server.db_url, server_settings={"application_name": MONITOR_APP}
            )

    async def _backend_kinds(self) -> dict[int, str]:
        """PostgreSQL pid -> what it does: the writers, rtm's change feed, rtm's pool, ..."""
        assert self.monitor is not None
        rows = await self.monitor.fetch(
            "SELECT pid, backend_type, application_name, query FROM pg_stat_activity"
        )
        kinds = {}
        for row in rows:
            query = row["query"] or ""
            if row["backend_type"] != "client backend":
                kind = "background"
            elif row["application_name"] == WRITER_APP:
                kind = "writers"
            elif row["application_name"] == MONITOR_APP:
                kind = "monitor"
            elif row["application_name"] == STATISTICS_APP:
                kind = "rtm statistics"  # the stamping process's ANALYZE of grown tables
            elif "rtm.change_" in query or "advisory_lock" in query or "LISTEN" in query:
                kind = "rtm feed"
            else:
                kind = "rtm pool"
            kinds[row["pid"]] = kind
        return kinds

    async def _sample_pg(self, phase: Phase) -> None:
        """What the backends are running, every 10 ms, until cancelled (``--pg-sample``).

        The query is the top-level statement: time in a trigger counts to its INSERT."""
        conn = self.sample_conn
        assert conn is not None
        kinds = await self._backend_kinds()
        while True:
            rows = await conn.fetch(
                "SELECT pid, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query, "
                "wait_event FROM pg_stat_activity "
                "WHERE state = 'active' AND pid <> pg_backend_pid()"
            )
            phase.pg_sample_rounds += 1
            for row in rows:
                kind = kinds.get(row["pid"])
                if kind is None:
                    kinds = await self._backend_kinds()
                    kind = kinds.get(row["pid"], "background")
                if kind == "monitor":
                    continue
                wait = f" [{row['wait_event']}]" if row["wait_event"] else ""
                phase.pg_samples[(kind, (row["query"] or "") + wait)] += 1
            await asyncio.sleep(0.01)

    async def _feed_stats(self) -> dict[str, int]:
        assert self.monitor is not None
        row = await self.monitor.fetchrow(
            "SELECT (SELECT n_tup_upd FROM pg_stat_all_tables "
            "        WHERE relid = 'rtm.change_feed_state'::regclass) AS stamps, "
            "       (SELECT seq_tup_read FROM pg_stat_all_tables "
            "        WHERE relid = 'rtm.change_log'::regclass) AS log_seq_rows, "
            "       (SELECT xact_commit FROM pg_stat_database "
            "        WHERE datname = current_database()) AS commits"
        )
        return {k: int(v or 0) for k, v in dict(row).items()}

    async def analyze(self) -> None:
        assert self.monitor is not None
        for table in ANALYZE_TABLES:
            await self.monitor.execute(f"ANALYZE {table}")

    async def close_writers(self) -> None:
        for extra in (self.monitor, self.sample_conn):
            if extra is not None:
                self.pools.append(extra)
        self.monitor = self.sample_conn = None
        for conn in self.pools:
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()
        self.pools = []

    def _new_seq(self, conv: int) -> int:
        seq = len(self.conv_of)
        self.conv_of.append(conv)
        self.pending.append(0)
        self.commit_ns.append(0)
        self.stamp_ns.append(0)
        return seq

    async def _writer(self, conn: asyncpg.Connection, sched: dict[str, Any]) -> None:
        phase = self.phase
        assert phase is not None
        rate, t0, total = sched["rate"], sched["t0"], sched["total"]
        rng = self.rng
        n_conv = len(self.conv_ids)
        while True:
            k = sched["next"]
            if k >= total:
                return
            sched["next"] = k + 1
            due = t0 + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > phase.max_behind_s:
                phase.max_behind_s = -delay
            conv = rng.randrange(n_conv)
            seq = self._new_seq(conv)
            # expected before the INSERT is sent: a delivery may (rarely) be read before this
            # coroutine resumes after the commit
            self.pending[seq] = self.full_mask
            self.outstanding += self.plan.staff + 1
            phase.expected += self.plan.staff + 1
            before = time.time_ns()
            try:
                await conn.execute(
                    INSERT, self.conv_ids[conv], self.cust_ids[conv], f"cf:{seq}:{before}"
                )
            except Exception as exc:  # counted; the message is not expected anywhere
                left = self.pending[seq].bit_count()
                self.pending[seq] = 0
                self.outstanding -= left
                phase.expected -= left
                phase.write_errors += 1
                if len(self.write_error_samples) < 5:
                    self.write_error_samples.append(repr(exc)[:300])
                continue
            after = time.time_ns()
            self.commit_ns[seq] = after
            phase.sent += 1
            phase.insert_ns.append(after - before)
            sched["last"] = time.monotonic()

    async def run_phase(
        self, name: str, rate: float, duration: float, *, per_second: bool = False
    ) -> dict[str, Any]:
        phase = Phase(name, rate, len(self.conv_of), per_second=per_second)
        self.phases.append(phase)
        self.phase = phase
        phase.t0_ns = time.time_ns()
        rtm0, pg0, cli0 = self.probe.sample()
        stats0 = await self._feed_stats()
        cpus0 = cpu_times()
        wall0 = time.monotonic()
        sched = {
            "rate": rate,
            "t0": time.monotonic() + 0.01,
            "total": int(rate * duration),
            "next": 0,
            "last": 0.0,
        }
        sampler = (
            asyncio.create_task(self._sample_pg(phase)) if self.sample_conn is not None else None
        )
        await asyncio.gather(*(self._writer(c, sched) for c in self.pools))
        phase.end_seq = len(self.conv_of)
        phase.send_span_s = max(1e-9, sched["last"] - sched["t0"])
        # drain: wait for what is still on its way; stop when nothing arrives for a while
        drain0 = time.monotonic()
        last_progress, last_count = drain0, phase.delivered
        while self.outstanding > 0:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            if phase.delivered != last_count:
                last_progress, last_count = now, phase.delivered
            if now - last_progress > 5.0 or now - drain0 > self.plan.drain_s:
                break
        phase.drain_s = time.monotonic() - drain0
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        rtm1, pg1, cli1 = self.probe.sample()
        phase.wall_s = time.monotonic() - wall0
        phase.rtm_cpu_s = rtm1 - rtm0
        phase.pg_cpu_s = sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items())
        kinds = await self._backend_kinds()
        for pid, v in pg1.items():
            kind = kinds.get(pid, "background")
            phase.pg_by_kind[kind] = phase.pg_by_kind.get(kind, 0.0) + v - pg0.get(pid, 0.0)
        stats1 = await self._feed_stats()
        phase.feed_stats = {k: stats1[k] - stats0.get(k, 0) for k in stats1}
        phase.cli_cpu_s = cli1 - cli0
        phase.cpu_busy = busy_pct(cpus0, cpu_times(), CPU_PARTS)
        # whatever is still outstanding counts as lost to this phase; later phases start at 0
        self.outstanding = 0
        return phase.summary(self)


# -- profiling ----------------------------------------------------------------------------


async def _log_slow_statements(db_url: str, ms: int) -> None:
    """Statements slower than ``ms`` and every autovacuum run go to PostgreSQL's log."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(f"ALTER SYSTEM SET log_min_duration_statement = {int(ms)}")
        await conn.execute("ALTER SYSTEM SET log_autovacuum_min_duration = 0")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def _start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    return start_py_spy(pid, out, duration=600, threads=False)


# -- the run ------------------------------------------------------------------------------


def _line(s: dict[str, Any]) -> str:
    return (
        f"{s['phase']}: {s['sent']} msgs at {s['msgs_per_s']:,.0f}/s "
        f"(target {s['target_msgs_per_s']:,.0f}), {s['deliveries_per_s']:,.0f} deliveries/s, "
        f"p50/p95/p99/max {s['p50_ms']}/{s['p95_ms']}/{s['p99_ms']}/{s['max_ms']} ms "
        f"(commit_timestamp p99 {s['ts_p99_ms']}), lost {s['lost']}, dup {s['duplicated']}, "
        f"misrouted {s['misrouted']}, CPU rtm/pg/load {s['rtm_cpu_pct']}/{s['pg_cpu_pct']}/"
        f"{s['load_cpu_pct']}%, busy {s['cpu_busy_pct']}"
    )


def _seconds(s: dict[str, Any]) -> str:
    """A cold-start or warm phase by second: deliveries and p50 / p99 / max ms."""
    cells = [
        f"s{b['second']}: {b['p50_ms']}/{b['p99_ms']}/{b['max_ms']} ms ({b['deliveries']})"
        for b in s["per_second"]
    ]
    return f"  {s['phase']} by second (p50/p99/max, deliveries): " + ", ".join(cells)


def step_verdict(s: dict[str, Any], limit_ms: float) -> str | None:
    """Why a phase does not count as sustained at its rate (None: it does)."""
    if s["lost"] or s["duplicated"] or s["misrouted"] or s["write_errors"]:
        return "lost/duplicated/misrouted deliveries or write errors"
    if s["msgs_per_s"] < KEEP_UP * s["target_msgs_per_s"]:
        return f"writers reached only {s['msgs_per_s']:,.0f} msgs/s"
    if s["p99_ms"] is None or s["p99_ms"] >= limit_ms:
        return f"p99 {s['p99_ms']} ms >= {limit_ms:.0f} ms"
    return None


async def bench(args: argparse.Namespace, plan: Plan, workdir: Path, pin: bool) -> dict[str, Any]:
    server = RtmServer(
        workdir, SERVER_CPU if pin else None, args.rtm_cmd or default_rtm_cmd(), JWT_SECRET
    )
    result: dict[str, Any] = {"subscribers": plan.subscribers, "staff": plan.staff}
    gen: LoadGen | None = None
    hb: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        print("starting rtm serve", flush=True)
        started = time.monotonic()
        await asyncio.to_thread(server.start, 180.0)
        assert server.proc is not None
        result["startup_s"] = round(time.monotonic() - started, 1)
        probe = Probe(server)
        if pin and args.pg_cpu != "server":
            cpus = {CLIENT_CPU} if args.pg_cpu == "load" else {SERVER_CPU, CLIENT_CPU}
            print(f"postgres moved to CPUs {sorted(cpus)}: {probe.pin_postgres(cpus)} processes")
        result["pg_cpu"] = args.pg_cpu if pin else "unpinned"
        if plan.pg_log_ms is not None:
            await _log_slow_statements(server.db_url, plan.pg_log_ms)
        gen = LoadGen(plan, server, probe)
        result["setup"] = await gen.create_data()
        await gen.open_writers()
        if pin and args.pg_cpu != "server":  # the writers' backends, forked before the move?
            probe.pin_postgres({CLIENT_CPU} if args.pg_cpu == "load" else {0, 1})
        hb = asyncio.create_task(gen.heartbeats())
        watcher = asyncio.create_task(probe.watch_postgres())
        print(
            f"subscribing {plan.subscribers} customers + {plan.staff} staff "
            f"({result['setup']['setup_s']} s setup)",
            flush=True,
        )
        if args.profile is not None:
            spy = _start_py_spy(server.proc.pid, args.profile / "connect.txt")
        cpu0 = probe.sample()[0]
        overflows0 = listen_overflows()
        result["connect"] = await gen.connect_all()
        result["connect"]["rtm_cpu_ms_per_subscribe"] = round(
            1e3 * (probe.sample()[0] - cpu0) / len(gen.subs), 3
        )
        # machine-wide: SYNs dropped because a listen queue was full (retried after 1 s)
        result["connect"]["listen_overflows"] = listen_overflows() - overflows0
        await stop_py_spy(spy)
        spy = None
        print(f"subscribed: {result['connect']}", flush=True)
        # The load generator's own full collections (10,000 sockets' objects) pause its loop
        # for 100+ ms, which would count as delivery latency: keep them out of the phases.
        gc.collect()
        gc.freeze()
        gc.disable()
        await asyncio.sleep(1.0)
        phases = []
        t_phases = time.monotonic()
        if args.profile is not None:
            spy = _start_py_spy(server.proc.pid, args.profile / "cold.txt")
        cold = await gen.run_phase(COLD, COLD_RATE, plan.cold_s, per_second=True)
        phases.append(cold)
        print(_line(cold), flush=True)
        print(_seconds(cold), flush=True)
        await stop_py_spy(spy)
        spy = None
        if plan.analyze:
            # What autovacuum does within a minute or so; the phases below have always run
            # on analysed tables.
            await gen.analyze()
        if args.profile is not None:
            spy = _start_py_spy(server.proc.pid, args.profile / "first.txt")
        first = await gen.run_phase(f"{plan.first_rate:,.0f}/s", plan.first_rate, plan.first_s)
        phases.append(first)
        print(_line(first), flush=True)
        await stop_py_spy(spy)
        spy = None
        warm = await gen.run_phase(WARM, COLD_RATE, plan.cold_s, per_second=True)
        phases.append(warm)
        print(_line(warm), flush=True)
        print(_seconds(warm), flush=True)
        if args.profile is not None:
            spy = _start_py_spy(server.proc.pid, args.profile / "steps.txt")
        best = first["target_msgs_per_s"] if step_verdict(first, STEP_TARGET_MS) is None else 0
        stop_reason = "" if best else f"{first['phase']}: {step_verdict(first, STEP_TARGET_MS)}"
        if best:
            for rate in STEPS:
                if rate <= plan.first_rate:
                    continue
                if time.monotonic() - t_phases > plan.budget_s:
                    stop_reason = "time budget spent"
                    break
                step = await gen.run_phase(f"step {rate:,}/s", float(rate), plan.step_s)
                phases.append(step)
                why = step_verdict(step, STEP_TARGET_MS)
                print(_line(step) + (f"  -> FAIL: {why}" if why else "  -> ok"), flush=True)
                if why:
                    stop_reason = f"{rate:,}/s: {why}"
                    break
                best = rate
            else:
                stop_reason = "no higher step configured"
        await stop_py_spy(spy)
        spy = None
        result["phases"] = phases
        result["best_rate"] = best
        result["stop_reason"] = stop_reason
        result["disconnects"] = gen.disconnects
        result["close_codes"] = dict(gen.close_codes)
        result["control_frames"] = dict(gen.control)
        result["control_samples"] = gen.control_samples
        result["stray_deliveries"] = gen.stray
        result["write_error_samples"] = gen.write_error_samples
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"ERROR {result['error']}", flush=True)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        gc.enable()
        if hb is not None:
            hb.cancel()
        if watcher is not None:
            watcher.cancel()
        if gen is not None:
            gen.close_all()
            await gen.close_writers()
            await asyncio.sleep(0.5)
        await asyncio.to_thread(server.stop)
        result["server_log_problems"] = server.problems()[:20]
        pg_log = server.data_dir / "pg" / "log"
        if plan.pg_log_ms is not None and args.profile is not None and pg_log.exists():
            args.profile.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pg_log, args.profile / "postgres.log")
    return result


def table(r: dict[str, Any]) -> str:
    head = (
        "| phase | target msgs/s | sent msgs/s | deliveries/s | p50 / p95 / p99 / max ms "
        "| p50 / p99 ms from commit_timestamp | INSERT p99 ms | lost / dup / misrouted "
        "| CPU % rtm / pg / load | busy % CPU0 / CPU1 | verdict |"
    )
    lines = [head, "|" + "---|" * 11]
    for s in r.get("phases", []):
        limit = FIRST_TARGET_MS if s is r["phases"][1] else STEP_TARGET_MS
        why = step_verdict(s, limit) if s["phase"] not in (COLD, WARM) else None
        busy = s["cpu_busy_pct"]
        lines.append(
            f"| {s['phase']} | {s['target_msgs_per_s']:,.0f} | {s['msgs_per_s']:,.0f} "
            f"| {s['deliveries_per_s']:,.0f} "
            f"| {s['p50_ms']} / {s['p95_ms']} / {s['p99_ms']} / {s['max_ms']} "
            f"| {s['ts_p50_ms']} / {s['ts_p99_ms']} | {s['insert_p99_ms']} "
            f"| {s['lost']} / {s['duplicated']} / {s['misrouted']} "
            f"| {s['rtm_cpu_pct']:.0f} / {s['pg_cpu_pct']:.0f} / {s['load_cpu_pct']:.0f} "
            f"| {busy.get(SERVER_CPU, {}).get('busy', '-')} "
            f"/ {busy.get(CLIENT_CPU, {}).get('busy', '-')} "
            f"| {'ok' if why is None else why} |"
        )
    lines += [
        "",
        "PostgreSQL CPU by backend (% of one CPU; µs per message sent) and change-feed work per "
        "message sent:",
        "",
        "| phase | writers | rtm feed | rtm pool | rtm statistics | background "
        "| stamp transactions / msg | change_log rows seq-scanned / msg | commits / msg |",
        "|" + "---|" * 9,
    ]
    for s in r.get("phases", []):
        pct, us, fs = s["pg_cpu_pct_by_kind"], s["pg_cpu_us_per_msg_by_kind"], s["feed_stats"]
        sent = s["sent"] or 1

        def cell(kind: str, pct: dict[str, float] = pct, us: dict[str, float] = us) -> str:
            return f"{pct.get(kind, 0):.0f} % ({us.get(kind, 0):,.0f} µs)"

        seq_rows = fs.get("log_seq_rows", 0) / sent
        lines.append(
            f"| {s['phase']} | {cell('writers')} | {cell('rtm feed')} | {cell('rtm pool')} "
            f"| {cell('rtm statistics')} | {cell('background')} | {fs.get('stamps', 0) / sent:.2f} "
            f"| {seq_rows:,.1f} | {fs.get('commits', 0) / sent:.2f} |"
        )
    return "\n".join(lines)


def verdict(r: dict[str, Any]) -> str:
    lines = []
    c = r["connect"]
    lines.append(
        f"{r['subscribers']:,} customers + {r['staff']} staff subscribed in {c['connect_s']} s "
        f"(p50/p99/max {c['subscribe_p50_ms']}/{c['subscribe_p99_ms']}/{c['subscribe_max_ms']} "
        f"ms to 'Subscribed to PostgreSQL', {c['slow_subscribes_over_1s']} over 1 s, "
        f"{c.get('listen_overflows', 0)} SYNs dropped by a full listen queue, "
        f"rtm CPU {c['rtm_cpu_ms_per_subscribe']} ms per subscriber)"
    )
    cold, warm = r["phases"][0], r["phases"][2] if len(r["phases"]) > 2 else None
    worst = max((b["p99_ms"] or 0.0 for b in cold["per_second"]), default=None)
    ok = "PASS" if worst is not None and worst <= COLD_TARGET_MS else "FAIL"
    lines.append(
        f"cold start (500 msgs/s, 3 s): p50 {cold['p50_ms']} ms, p99 {cold['p99_ms']} ms, worst "
        f"second's p99 {worst} ms (target <= {COLD_TARGET_MS:.0f} ms): {ok}; PostgreSQL "
        f"{cold['pg_cpu_us_per_msg']} µs per message"
        + (
            f" (warm baseline, same run: p50 {warm['p50_ms']} ms, p99 {warm['p99_ms']} ms, "
            f"{warm['pg_cpu_us_per_msg']} µs)"
            if warm is not None
            else ""
        )
    )
    first = r["phases"][1]
    p99 = first["p99_ms"]
    ok = "PASS" if p99 is not None and p99 < FIRST_TARGET_MS else "FAIL"
    lines.append(
        f"{first['phase']}: p50 {first['p50_ms']} ms, p95 {first['p95_ms']} ms, p99 {p99} ms "
        f"(target p99 < {FIRST_TARGET_MS:.0f} ms): {ok}"
    )
    lines.append(
        f"highest sustained rate with p99 < {STEP_TARGET_MS:.0f} ms: {r['best_rate']:,} msgs/s "
        f"({r['best_rate'] * (r['staff'] + 1):,} deliveries/s); stopped at {r['stop_reason']}"
    )
    lost = sum(s["lost"] for s in r["phases"])
    dup = sum(s["duplicated"] for s in r["phases"])
    mis = sum(s["misrouted"] for s in r["phases"])
    bad = lost + dup + mis
    note = " (the failing step included)" if bad else ""
    lines.append(
        f"lost / duplicated / misrouted deliveries over all phases: {lost} / {dup} / {mis}"
        f"{note}: {'PASS' if bad == 0 else 'FAIL'}"
    )
    if r["disconnects"]:
        lines.append(f"unexpected disconnects: {r['disconnects']} {r['close_codes']}")
    early = sum(s["delivered_before_commit_returned"] for s in r["phases"])
    if early:
        lines.append(f"note: {early} deliveries arrived before the writer saw its commit return")
    for s in r["phases"]:
        busy = s["cpu_busy_pct"]
        # busy time of the two pinned CPUs outside interrupts that is neither rtm, its
        # PostgreSQL nor this process
        other = sum(b["busy"] - b["irq"] for b in busy.values()) - (
            s["rtm_cpu_pct"] + s["pg_cpu_pct"] + s["load_cpu_pct"]
        )
        if other > NOISY_PCT:
            lines.append(
                f"WARNING {s['phase']}: ~{other:.0f}% of the two CPUs went to neither rtm, its "
                "PostgreSQL nor the load generator (other processes, kernel threads, PostgreSQL "
                "workers that exited between samples): figures may be disturbed"
            )
        if s["load_cpu_pct"] > 85:
            lines.append(
                f"NOTE {s['phase']}: the load generator was at {s['load_cpu_pct']:.0f}% CPU; "
                "latency there includes client-side queueing"
            )
    return "\n".join(lines)


async def amain(args: argparse.Namespace, plan: Plan, pin: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rtm-changefeed-") as tmp:
        busy = await wait_quiet(args.quiet_wait)
        if busy > 10:
            print(f"  machine still busy ({busy:.0f}%); measuring anyway", flush=True)
        return await bench(args, plan, Path(tmp), pin)


def main() -> int:
    parser = argparse.ArgumentParser(description="Change-feed benchmark (see the docstring).")
    parser.add_argument(
        "--subscribers", type=int, default=None, help="customers; default 10000 (quick: 1000)"
    )
    parser.add_argument("--staff", type=int, default=5, help="staff subscribers (see every row)")
    parser.add_argument("--writers", type=int, default=8, help="writer connections")
    parser.add_argument(
        "--commit",
        choices=("async", "sync"),
        default="async",
        help="the writers' synchronous_commit: off (default) or on; see the README",
    )
    parser.add_argument(
        "--no-analyze", action="store_true", help="do not ANALYZE after the cold start"
    )
    parser.add_argument(
        "--pg-sample", action="store_true", help="sample pg_stat_activity every 10 ms"
    )
    parser.add_argument(
        "--pg-log-ms",
        type=int,
        default=None,
        help="log statements slower than this (and autovacuum) to <profile dir>/postgres.log",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 subscribers, short phases")
    parser.add_argument("--rate", type=float, default=1000.0, help="first phase, msgs/s")
    parser.add_argument("--duration", type=float, default=None, help="first phase, s (20)")
    parser.add_argument("--step-duration", type=float, default=None, help="per step, s (10)")
    parser.add_argument("--batch", type=int, default=250, help="subscribers connecting at once")
    parser.add_argument(
        "--pg-cpu",
        choices=("server", "load", "all"),
        default="all",
        help="where the embedded PostgreSQL runs: on both CPUs (default), with rtm on CPU 0, "
        "or with the load generator on CPU 1",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet-wait", type=float, default=None, help="wait for idle CPUs, s")
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the server (raw profiles here)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--rtm-cmd",
        type=lambda s: s.split(),
        default=None,
        help="command that runs the rtm CLI (default: rtm beside this python)",
    )
    parser.add_argument("--time-limit", type=float, default=None, help="abort after this many s")
    args = parser.parse_args()
    if args.staff > 60:
        parser.error("at most 60 staff subscribers")

    subscribers = args.subscribers or (1000 if args.quick else 10000)
    if args.quiet_wait is None:
        args.quiet_wait = 2.0 if args.quick else 5.0
    plan = Plan(
        subscribers=subscribers,
        staff=args.staff,
        writers=args.writers,
        first_rate=args.rate,
        first_s=args.duration or (5.0 if args.quick else 20.0),
        step_s=args.step_duration or (3.0 if args.quick else 10.0),
        cold_s=3.0,
        batch=args.batch,
        drain_s=10.0 if args.quick else 20.0,
        budget_s=30.0 if args.quick else 200.0,
        seed=args.seed,
        sync_commit=args.commit == "sync",
        analyze=not args.no_analyze,
        pg_sample=args.pg_sample,
        pg_log_ms=args.pg_log_ms,
    )
    outcome = run_pinned(
        plan,
        lambda pin: amain(args, plan, pin),
        fds=(subscribers + 1000, subscribers + 200, f"{subscribers} subscribers"),
        pg_cpu=args.pg_cpu,
        time_limit=args.time_limit or (150.0 if args.quick else 480.0),
    )
    if isinstance(outcome, int):
        return outcome
    result = outcome
    print()
    if "phases" in result:
        print(table(result))
        print()
        print(verdict(result))
    else:
        print(f"no figures: {result.get('error')}")
    for key in ("control_frames", "close_codes", "write_error_samples"):
        if result.get(key):
            print(f"{key}: {result[key]}")
    if result.get("stray_deliveries"):
        print(f"stray deliveries (no phase): {result['stray_deliveries']}")
    for s in result.get("phases", []):
        if s["pg_samples"]:
            print(f"\n{s['phase']}: busy backends by statement (mean number active):")
            for row in s["pg_samples"]:
                print(f"  {row['busy']:6.3f}  {row['kind']:<10} {row['query']}")
    print_log_problems(result.get("server_log_problems", []))
    if args.profile is not None:
        for name in ("connect.txt", "cold.txt", "first.txt", "steps.txt"):
            print()
            print(summarize_profile(args.profile / name))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if "error" in result:
        return 1
    bad = sum(s["lost"] + s["duplicated"] + s["misrouted"] for s in result["phases"][:2])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
