#!/usr/bin/env python3
"""Where an ``INSERT INTO customer_messages`` spends PostgreSQL's CPU: each trigger's share.

The same scratch database and writer as ``capture.py`` (one message per transaction,
autocommit, ``synchronous_commit = off``, random conversations), in rounds that alternate
between every trigger on and one trigger disabled (``ALTER TABLE … DISABLE TRIGGER``), for each
trigger of the table that an insert fires. A trigger's cost is the median CPU per insert with
everything on minus the median with it off, both from the same run, so the other load of the
moment falls on both sides. What remains with every trigger off (``none``) is the insert
itself: the row, its indexes, the foreign keys and the commit.

    python benchmarks/changefeed/insert_cost.py [--inserts 2000] [--rounds 3]

A trigger that cannot be off without the insert failing (a rule that fills a column) is
reported as such, not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from capture import prepare, run_round  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from realtime_messaging.store.embedded import EmbeddedPostgres  # noqa: E402

#: The triggers an insert fires (not those of UPDATE, DELETE or TRUNCATE only): the message's,
#: and those of the delivery-status row that a message's own trigger inserts.
TRIGGERS = """
SELECT t.tgrelid::regclass::text AS table_name, t.tgname FROM pg_trigger AS t
WHERE t.tgrelid IN ('public.customer_messages'::regclass,
                    'public.message_delivery_status'::regclass)
  AND NOT t.tgisinternal AND (t.tgtype::integer & 4) <> 0
ORDER BY t.tgrelid <> 'public.customer_messages'::regclass, t.tgname
"""


async def switch(conn: asyncpg.Connection, action: str, qualified: str) -> None:
    """``ALTER TABLE … ENABLE|DISABLE TRIGGER`` for a ``table:trigger`` name."""
    table, name = qualified.split(":")
    await conn.execute(f"ALTER TABLE {table} {action} TRIGGER {name}")


async def measure(url: str, args: argparse.Namespace) -> dict[str, float | None]:
    writer = await asyncpg.connect(url, server_settings={"synchronous_commit": "off", "jit": "off"})
    admin = await asyncpg.connect(url)
    try:
        pid = await writer.fetchval("SELECT pg_backend_pid()")
        pairs = [
            (r["id"], r["customer_id"])
            for r in await admin.fetch("SELECT id, customer_id FROM public.conversations")
        ]
        triggers = [f"{r['table_name']}:{r['tgname']}" for r in await admin.fetch(TRIGGERS)]
        rng = random.Random(1)
        usable: list[str] = []
        for name in triggers:
            await switch(admin, "DISABLE", name)
            try:
                await run_round(writer, pid, pairs, 50, rng)
                usable.append(name)
            except asyncpg.PostgresError as exc:
                print(f"  {name}: cannot be off ({exc.__class__.__name__}: {exc})")
            finally:
                await switch(admin, "ENABLE", name)
        modes = ["all", *usable, "none"]
        samples: dict[str, list[float]] = {mode: [] for mode in modes}
        await run_round(writer, pid, pairs, 500, rng)  # warm plans and caches
        for _ in range(args.rounds):
            for mode in modes:
                off = usable if mode == "none" else [] if mode == "all" else [mode]
                for name in off:
                    await switch(admin, "DISABLE", name)
                await run_round(writer, pid, pairs, 100, rng)
                cpu = await run_round(writer, pid, pairs, args.inserts, rng)
                samples[mode].append(1e6 * cpu / args.inserts)
                for name in off:
                    await switch(admin, "ENABLE", name)
    finally:
        await writer.close()
        await admin.close()
    return {mode: statistics.median(v) for mode, v in samples.items()}


async def amain(args: argparse.Namespace) -> dict[str, float | None]:
    with tempfile.TemporaryDirectory(prefix="rtm-insert-cost-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        try:
            await prepare(server.url(), None, [Path(p) for p in args.sql], args.conversations)
            return await measure(server.url(), args)
        finally:
            server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="Each trigger's share of an insert's CPU.")
    parser.add_argument("--inserts", type=int, default=2000, help="inserts per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every mode")
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--sql", action="append", default=[], help="SQL file applied after")
    args = parser.parse_args()
    result = asyncio.run(amain(args))
    everything = result["all"]
    assert everything is not None
    print(
        f"PostgreSQL CPU per insert (writer backend, median of {args.rounds} rounds of "
        f"{args.inserts}):"
    )
    print(f"  {'every trigger on':<34} {everything:8.1f} µs")
    for mode, us in result.items():
        if mode in ("all", "none") or us is None:
            continue
        print(f"  {mode + ' (its share)':<34} {everything - us:8.1f} µs")
    none = result["none"]
    assert none is not None
    print(f"  {'every trigger off (the insert)':<34} {none:8.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
