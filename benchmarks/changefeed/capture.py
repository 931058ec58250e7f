#!/usr/bin/env python3
"""What capturing a change costs PostgreSQL: ``INSERT INTO customer_messages`` with the change
feed's capture trigger against the same insert with it disabled, in the same run.

A scratch embedded PostgreSQL (or a new database on ``--admin-url``), migrated, with
``--conversations`` customers and conversations. One writer connection inserts messages one per
transaction (autocommit, ``synchronous_commit = off``, as the change-feed benchmark's writers),
into random conversations, in rounds that alternate between

* ``capture``: every trigger on, as in production;
* ``bare``: ``ALTER TABLE customer_messages DISABLE TRIGGER zz_capture_change`` (the other
  triggers, the conversation lock and the message rules included, still run),

* ``previous``: every trigger on, with the capture function as migration 0007 defined it
  (before 0013), so that the change is measured in the same run,

and reports the writer backend's CPU time per insert (from ``/proc`` through psutil, so the
server must run on this machine) for each, round-robin. After each capture round the queue is stamped into
the log with the feed's own statement (``store/changefeed.py``), and the stamping backend's CPU
per change is reported too: that is the rest of what a change costs the database.

    python benchmarks/changefeed/capture.py [--inserts 3000] [--rounds 6] [--upto 12]

``--upto N`` applies migrations up to N only (the capture of an older migration, as a baseline),
``--sql FILE`` applies a file after migrating (a candidate definition).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
MIGRATIONS = Path(__file__).resolve().parents[2] / "src/realtime_messaging/store/migrations"

from realtime_messaging.store.changefeed import _STAMP  # noqa: E402
from realtime_messaging.store.embedded import EmbeddedPostgres  # noqa: E402
from realtime_messaging.store.migrate import load_migrations  # noqa: E402

INSERT = (
    "INSERT INTO public.customer_messages (conversation_id, sender_type, sender_id, content) "
    "VALUES ($1, 'customer', $2, $3)"
)
TRIGGER = "zz_capture_change"
#: Where the capture function was last defined before the current one.
PREVIOUS = "0007_quiet_writers.sql"
MODES = ("capture", "previous", "bare")


def capture_function(migration: str) -> str:
    """The ``CREATE OR REPLACE FUNCTION rtm.capture_change()`` statement of a migration."""
    text = (MIGRATIONS / migration).read_text()
    start = text.index("CREATE OR REPLACE FUNCTION rtm.capture_change()")
    end = text.index("$$;", text.index("AS $$", start) + 5) + 3
    return text[start:end]


def current_migration(upto: int | None) -> str:
    """The last migration (up to ``upto``) that defines the capture function."""
    found = [
        p.name
        for p in sorted(MIGRATIONS.glob("*.sql"))
        if "FUNCTION rtm.capture_change()" in p.read_text()
        and (upto is None or int(p.name[:4]) <= upto)
    ]
    return found[-1]


def backend_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def prepare(url: str, upto: int | None, extra: list[Path], conversations: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS rtm")
        for migration in load_migrations():
            if upto is not None and migration.version > upto:
                break
            async with conn.transaction():
                await conn.execute(migration.sql)
        for path in extra:
            await conn.execute(path.read_text())
        await conn.execute(
            "INSERT INTO public.customers (name, email) "
            "SELECT 'c' || g, 'c' || g || '@bench.invalid' FROM generate_series(1, $1) AS g",
            conversations,
        )
        await conn.execute(
            "INSERT INTO public.conversations (customer_id, subject) "
            "SELECT id, 'capture benchmark' FROM public.customers"
        )
        await conn.execute(_STAMP)  # the conversations' own changes
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def run_round(
    writer: asyncpg.Connection,
    writer_pid: int,
    pairs: list[tuple[Any, Any]],
    inserts: int,
    rng: random.Random,
) -> float:
    """CPU seconds of the writer's backend for ``inserts`` single-row transactions."""
    cpu0 = backend_cpu(writer_pid)
    for k in range(inserts):
        conv, customer = pairs[rng.randrange(len(pairs))]
        await writer.execute(INSERT, conv, customer, f"cf:{k}:{time.time_ns()}")
    return backend_cpu(writer_pid) - cpu0


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = {"synchronous_commit": "off", "jit": "off"}
    writer = await asyncpg.connect(url, server_settings=settings)
    stamper = await asyncpg.connect(url, server_settings={"jit": "off"})
    admin = await asyncpg.connect(url)
    try:
        writer_pid = await writer.fetchval("SELECT pg_backend_pid()")
        stamper_pid = await stamper.fetchval("SELECT pg_backend_pid()")
        pairs = [
            (r["id"], r["customer_id"])
            for r in await admin.fetch("SELECT id, customer_id FROM public.conversations")
        ]
        rng = random.Random(1)
        current, previous = (
            capture_function(current_migration(args.upto)),
            capture_function(PREVIOUS),
        )
        modes = MODES if current != previous else ("capture", "bare")
        # Warm the writer's caches and plans in every mode before measuring.
        for mode in modes:
            await set_mode(admin, mode, current, previous)
            await run_round(writer, writer_pid, pairs, 200, rng)
        await stamper.execute(_STAMP)
        per_insert: dict[str, list[float]] = {mode: [] for mode in modes}
        per_stamped: list[float] = []
        machine0, me0 = psutil.cpu_times(), psutil.Process().cpu_times()
        ours0 = backend_cpu(writer_pid) + backend_cpu(stamper_pid)
        wall0 = time.monotonic()
        for r in range(args.rounds):
            mode = modes[r % len(modes)]
            await set_mode(admin, mode, current, previous)
            cpu = await run_round(writer, writer_pid, pairs, args.inserts, rng)
            per_insert[mode].append(1e6 * cpu / args.inserts)
            if mode != "bare":
                cpu0 = backend_cpu(stamper_pid)
                stamped = 0
                while True:
                    rows = await stamper.fetch(_STAMP)
                    stamped += len(rows)
                    if not rows:
                        break
                per_stamped.append(1e6 * (backend_cpu(stamper_pid) - cpu0) / max(1, stamped))
        wall = time.monotonic() - wall0
        machine1, me1 = psutil.cpu_times(), psutil.Process().cpu_times()
        ours = backend_cpu(writer_pid) + backend_cpu(stamper_pid) - ours0
        ours += me1.user + me1.system - me0.user - me0.system
        busy = sum(
            getattr(machine1, f) - getattr(machine0, f)
            for f in ("user", "nice", "system", "irq", "softirq", "steal")
        )
        # CPU (% of one CPU) that went to neither the writer's nor the stamper's backend nor
        # this process: other processes on the machine
        other_pct = round(100 * (busy - ours) / wall, 1)
        await set_mode(admin, "capture", current, previous)
    finally:
        for conn in (writer, stamper, admin):
            await conn.close()
    median = {mode: statistics.median(v) for mode, v in per_insert.items()}
    return {
        "capture_function": current_migration(args.upto),
        "us": {mode: round(v, 1) for mode, v in median.items()},
        "ratio": {mode: round(v / median["bare"], 2) for mode, v in median.items()},
        "rounds_us": {mode: [round(x, 1) for x in v] for mode, v in per_insert.items()},
        "stamp_us_per_change": round(statistics.median(per_stamped), 1) if per_stamped else None,
        "other_load_pct": other_pct,
    }


async def set_mode(conn: asyncpg.Connection, mode: str, current: str, previous: str) -> None:
    action = "DISABLE" if mode == "bare" else "ENABLE"
    await conn.execute(f"ALTER TABLE public.customer_messages {action} TRIGGER {TRIGGER}")
    if mode != "bare":
        await conn.execute(previous if mode == "previous" else current)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    extra = [Path(p) for p in args.sql]
    if args.admin_url:
        name = f"rtm_capture_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(args.admin_url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url = args.admin_url.rsplit("/", 1)[0] + "/" + name
        try:
            await prepare(url, args.upto, extra, args.conversations)
            return await measure(url, args)
        finally:
            admin = await asyncpg.connect(args.admin_url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    with tempfile.TemporaryDirectory(prefix="rtm-capture-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        try:
            url = server.url()
            await prepare(url, args.upto, extra, args.conversations)
            return await measure(url, args)
        finally:
            server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="Capture cost per insert (see the docstring).")
    parser.add_argument("--inserts", type=int, default=5000, help="inserts per round")
    parser.add_argument("--rounds", type=int, default=9, help="rounds, modes in turn")
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--upto", type=int, default=None, help="apply migrations up to N")
    parser.add_argument("--sql", action="append", default=[], help="SQL file applied after")
    parser.add_argument(
        "--admin-url", default=None, help="a server on this machine (default: embedded)"
    )
    args = parser.parse_args()
    result = asyncio.run(amain(args))
    us, ratio = result["us"], result["ratio"]
    print(
        f"PostgreSQL CPU per INSERT INTO customer_messages (writer backend, median of the rounds "
        f"of {args.inserts}): with capture ({result['capture_function']}) {us['capture']} µs = "
        f"{ratio['capture']}x the insert without capture ({us['bare']} µs)"
        + (
            f"; with the capture of {PREVIOUS} {us['previous']} µs = {ratio['previous']}x"
            if "previous" in us
            else ""
        )
    )
    for mode, rounds in result["rounds_us"].items():
        print(f"  {mode:<9} rounds: {rounds} µs")
    print(f"stamping (the feed's statement), per change: {result['stamp_us_per_change']} µs")
    print(f"other load: {result['other_load_pct']} % of one CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
