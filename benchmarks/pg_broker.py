#!/usr/bin/env python3
"""PostgreSQL broker benchmark: envelopes per second between processes, and their latency.

Two processes, each with its own :class:`~realtime_messaging.broker.postgres.PostgresBroker` on
one database (what ``rtm serve --workers 2`` without Redis runs), publish broadcast envelopes on
one topic both have a member of, paced open-loop, each at half the offered rate. Each receives
the other's through the database and records publish-to-receive latency (the payload carries the
publisher's ``time.monotonic_ns()``: one clock for every process of the machine). The offered
rate goes up step by step until delivery falls behind; a step counts as sustained when p99 < 100
ms and every envelope arrived within the drain time after it.

    python benchmarks/pg_broker.py                          # embedded PostgreSQL in a temp dir
    python benchmarks/pg_broker.py --rates 1000,4000 --duration 2
    python benchmarks/pg_broker.py --database-url postgresql://postgres@localhost/postgres

``--database-url`` names a server (any database on it, as a role that may create databases);
the benchmark creates a scratch database there and drops it at the end. Bounded: every step
lasts ``--duration`` + ``--drain`` seconds, the ramp stops at the first step that is not
sustained twice over (p99 over 1 s or envelopes missing), and ``--time-limit`` bounds the whole
run. The two processes are children of this one, stopped (by their pid) on every way out.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from realtime_messaging.broker import Envelope
from realtime_messaging.broker.postgres import PostgresBroker
from realtime_messaging.store.embedded import EmbeddedPostgres
from realtime_messaging.store.migrate import migrate

TOPIC = "realtime:bench"
TARGET_P99_MS = 100.0
DEFAULT_RATES = "250,500,1000,2000,4000,6000,8000,12000,16000,24000,32000"

# -- the two publishing processes ---------------------------------------------------------


@dataclass
class StepResult:
    """What one process saw of one step."""

    sent: int
    dropped: int
    latencies_ms: list[float]  # of the envelopes it received from the other process
    disordered: int  # received again, or before one published earlier
    first_ns: int  # its first publish of the step
    last_received_ns: int
    cpu_s: float  # CPU time of the process during the step and its drain


class _Sink:
    def __init__(self, me: int) -> None:
        self.me = me
        self.latencies: dict[int, list[float]] = {}
        self.last_ns: dict[int, int] = {}
        self.last_n: dict[int, int] = {}
        self.disordered: dict[int, int] = {}

    def deliver(self, envelope: Envelope) -> None:
        now = time.monotonic_ns()
        payload = envelope.payload
        if envelope.origin is None or payload["w"] == self.me:
            return  # its own, delivered locally at once
        step = payload["s"]
        self.latencies.setdefault(step, []).append((now - payload["t"]) / 1e6)
        self.last_ns[step] = now
        if payload["n"] <= self.last_n.get(step, -1):
            self.disordered[step] = self.disordered.get(step, 0) + 1
        self.last_n[step] = payload["n"]

    def control(self, envelope: Envelope) -> None:
        pass

    def connected(self) -> None:
        pass


async def _publisher(me: int, url: str, commands: Queue[Any], results: Queue[Any]) -> None:
    loop = asyncio.get_running_loop()
    sink = _Sink(me)
    broker = PostgresBroker(url, f"bench-{me}-{os.getpid()}")
    await broker.start(sink)
    broker.topic_added(TOPIC)
    results.put(("ready", me, broker.status().up))
    try:
        while True:
            command = await loop.run_in_executor(None, commands.get)
            if command is None:
                return
            step, rate, start_at, duration, drain, pad = command
            per_second = rate / 2
            dropped_before = broker.status().dropped
            cpu_before = time.process_time()
            sent = 0
            first_ns = 0
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            end = start_at + duration
            while (now := time.monotonic()) < end:
                due = int((now - start_at) * per_second) - sent
                for _ in range(due):
                    t = time.monotonic_ns()
                    first_ns = first_ns or t
                    payload = {"w": me, "s": step, "t": t, "n": sent, "body": pad}
                    broker.publish(Envelope(TOPIC, "broadcast", payload))
                    sent += 1
                await asyncio.sleep(0.001)
            await asyncio.sleep(max(0.0, end + drain - time.monotonic()))
            result = StepResult(
                sent=sent,
                dropped=broker.status().dropped - dropped_before,
                latencies_ms=sink.latencies.pop(step, []),
                disordered=sink.disordered.pop(step, 0),
                first_ns=first_ns,
                last_received_ns=sink.last_ns.pop(step, 0),
                cpu_s=time.process_time() - cpu_before,
            )
            results.put(("step", me, result))
    finally:
        await broker.stop()


def publisher_main(me: int, url: str, commands: Queue[Any], results: Queue[Any]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_publisher(me, url, commands, results))


# -- the driver -----------------------------------------------------------------------------


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def postgres_cpu(pgdata: Path | None) -> float | None:
    """CPU seconds used so far by the embedded server's processes (None if unknown)."""
    if pgdata is None:
        return None
    try:
        import psutil

        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        main = psutil.Process(pid)
        total = 0.0
        for proc in [main, *main.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total
    except (ImportError, OSError, ValueError):
        return None


def run_steps(url: str, args: argparse.Namespace, pgdata: Path | None) -> bool:
    ctx = mp.get_context("spawn")
    results: Queue[Any] = ctx.Queue()
    commands: list[Queue[Any]] = [ctx.Queue(), ctx.Queue()]
    procs: list[BaseProcess] = [
        ctx.Process(target=publisher_main, args=(me, url, commands[me], results), daemon=True)
        for me in (0, 1)
    ]
    deadline = time.monotonic() + args.time_limit
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            kind, me, up = results.get(timeout=60)
            assert kind == "ready" and up, f"publisher {me} could not connect its broker"
        pad = "x" * args.payload_bytes
        print(
            f"{'offered/s':>10} {'delivered/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
            f"{'missing':>8} {'dropped':>8} {'disorder':>8} {'pub CPU%':>9} {'PG CPU%':>8}  "
            "sustained"
        )
        best = 0
        for step, rate in enumerate(int(r) for r in args.rates.split(",")):
            if time.monotonic() + args.duration + args.drain + 5 > deadline:
                print(f"stopping: --time-limit {args.time_limit:g} s reached")
                break
            start_at = time.monotonic() + 0.5
            pg_before = postgres_cpu(pgdata)
            for queue in commands:
                queue.put((step, rate, start_at, args.duration, args.drain, pad))
            got = [results.get(timeout=args.duration + args.drain + 30) for _ in procs]
            pg_after = postgres_cpu(pgdata)
            steps: list[StepResult] = [r for _, _, r in got]
            sent = sum(r.sent for r in steps)
            dropped = sum(r.dropped for r in steps)
            latencies = sorted(x for r in steps for x in r.latencies_ms)
            delivered = len(latencies)
            missing = sent - dropped - delivered
            disordered = sum(r.disordered for r in steps)
            first = min(r.first_ns for r in steps if r.first_ns) if sent else 0
            last = max(r.last_received_ns for r in steps)
            span = (last - first) / 1e9 if delivered else float("nan")
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            worst = latencies[-1] if latencies else float("nan")
            window = args.duration + args.drain
            pub_cpu = 100 * statistics.fmean(r.cpu_s for r in steps) / window
            pg_cpu = (
                f"{100 * (pg_after - pg_before) / window:8.0f}"
                if pg_before is not None and pg_after is not None
                else f"{'?':>8}"
            )
            ok = p99 < TARGET_P99_MS and missing == dropped == disordered == 0
            if ok:
                best = max(best, rate)
            print(
                f"{rate:>10,} {delivered / span:>12,.0f} {p50:>8.1f} {p99:>8.1f} {worst:>8.1f} "
                f"{missing:>8,} {dropped:>8,} {disordered:>8,} {pub_cpu:>9.0f} {pg_cpu}  "
                f"{'yes' if ok else 'no'}",
                flush=True,
            )
            if p99 > 10 * TARGET_P99_MS or missing or dropped or disordered:
                break
        print()
        print(
            f"highest offered rate with p99 < {TARGET_P99_MS:g} ms, nothing lost, duplicated or "
            f"out of order: {best:,}/s"
        )
        return best > 0
    finally:
        for queue in commands:
            queue.put(None)
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, 9)  # by its pid: only what this run started
                proc.join(timeout=5)


async def prepare(server_url: str) -> tuple[str, str]:
    """A scratch database on the server, migrated; its name and URL."""
    name = f"rtm_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        version = await admin.fetchval("SHOW server_version")
    finally:
        await admin.close()
    url = with_database(server_url, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    print(f"PostgreSQL {version}, scratch database {name}; {os.cpu_count()} CPUs")
    return name, url


async def drop(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def run(server_url: str, args: argparse.Namespace, pgdata: Path | None) -> bool:
    name, url = asyncio.run(prepare(server_url))
    try:
        return run_steps(url, args, pgdata)
    finally:
        asyncio.run(drop(server_url, name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a server to use (default: embedded, temporary)")
    parser.add_argument(
        "--rates", default=DEFAULT_RATES, help="offered envelopes/s, both processes together"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of publishing a step")
    parser.add_argument(
        "--drain", type=float, default=2.0, help="seconds after a step for the rest to arrive"
    )
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument("--time-limit", type=float, default=180.0)
    args = parser.parse_args()

    if args.database_url:
        ok = run(args.database_url, args, None)
    else:
        with tempfile.TemporaryDirectory(prefix="rtm-bench-") as tmp:
            server = EmbeddedPostgres(Path(tmp))
            try:
                ok = run(server.url(), args, server.pgdata)
            finally:
                server.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
