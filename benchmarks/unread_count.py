"""Benchmark get_unread_message_count() on a support-sized data set, against the naive query.

Builds 1,000,000 messages in 10,000 conversations with 50 staff users (by default) in a scratch
database, with receipts the way a support desk produces them: the assigned agent has read all but
the newest few customer messages of each conversation, another agent has read some, and customers
have read all but the newest few staff messages. Then it times the function as each kind of
caller would call it (inside ``as_caller``, so row-level security applies) and, as the baseline,
the naive anti-join that the counters replace. Targets: median under 10 ms for a staff user and
under 2 ms for a customer. It also times GET /api/unread's list per conversation for a staff user,
from the counters of migration 0012 and by the anti-join it replaced (no target), and checks that
the counters' answers equal the anti-joins' for sampled readers.

    python benchmarks/unread_count.py                       # embedded PostgreSQL in a temp dir
    python benchmarks/unread_count.py --database-url postgresql://postgres@localhost/postgres

``--database-url`` names a server (any database on it, as a role that may create databases);
the benchmark creates a scratch database there and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from realtime_messaging.server.api.messaging import staff_unread_sql
from realtime_messaging.store.caller import Caller, as_caller
from realtime_messaging.store.embedded import EmbeddedPostgres
from realtime_messaging.store.migrate import migrate

TARGET_MS = {"staff": 10.0, "customer": 2.0}

NAIVE_STAFF = """
SELECT count(*) FROM customer_messages AS m
WHERE m.sender_type = 'customer'
  AND NOT EXISTS (SELECT 1 FROM message_read_receipts AS r
                  WHERE r.message_id = m.id AND r.read_by_user_id = $1)
"""
NAIVE_CUSTOMER = """
SELECT count(*) FROM customer_messages AS m
JOIN conversations AS c ON c.id = m.conversation_id
WHERE c.customer_id = $1 AND m.sender_type = 'staff'
  AND NOT EXISTS (SELECT 1 FROM message_read_receipts AS r
                  WHERE r.message_id = m.id AND r.read_by_customer_id = $1)
"""
# GET /api/unread's per-conversation list for a staff user before migration 0012.
NAIVE_STAFF_BY_CONVERSATION = """
SELECT m.conversation_id, count(*) AS unread FROM customer_messages AS m
WHERE m.sender_type = 'customer'
  AND NOT EXISTS (SELECT 1 FROM message_read_receipts AS r
                  WHERE r.message_id = m.id AND r.read_by_user_id = $1)
GROUP BY m.conversation_id ORDER BY m.conversation_id
"""


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def step(label: str, coro: Awaitable[object]) -> None:
    """Run one generation step and say how long it took."""
    start = time.perf_counter()
    await coro
    print(f"  {label:<58} {time.perf_counter() - start:7.1f} s", flush=True)


async def generate(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    """Fill the database set-based, through the real triggers (so the counters are theirs)."""
    customers = max(1, args.conversations // 2)
    per_conversation = args.messages // args.conversations
    await step(
        f"{args.staff} staff users, {customers} customers",
        conn.execute(
            f"""
            INSERT INTO users (name, email)
            SELECT 'Agent ' || i, 'agent' || i || '@example.com'
            FROM generate_series(1, {args.staff:d}) AS i;
            INSERT INTO customers (name, email)
            SELECT 'Customer ' || i, 'customer' || i || '@example.com'
            FROM generate_series(1, {customers:d}) AS i;
            """
        ),
    )
    # Conversations: two per customer, nine in ten assigned to an agent (round robin).
    await step(
        f"{args.conversations} conversations",
        conn.execute(
            f"""
            WITH c AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM customers),
                 u AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM users)
            INSERT INTO conversations (customer_id, subject, assigned_user_id)
            SELECT c.id, 'Question ' || i, CASE WHEN i % 10 <> 0 THEN u.id END
            FROM generate_series(1, {args.conversations:d}) AS i
            JOIN c ON c.n = i % {customers:d}
            JOIN u ON u.n = i % {args.staff:d}
            """
        ),
    )
    # Messages, in slices so that each statement's transition table stays moderate. In each
    # conversation the sides alternate at random, one message a minute; staff messages come from
    # the assigned agent (or the first agent when unassigned).
    slices = 10
    per_slice = -(-args.conversations // slices)
    for s in range(slices):
        await step(
            f"messages, slice {s + 1}/{slices}",
            conn.execute(
                f"""
                WITH conv AS (
                    SELECT c.id, c.customer_id,
                           coalesce(c.assigned_user_id,
                                    (SELECT u.id FROM users u ORDER BY u.id LIMIT 1)) AS agent
                    FROM conversations c ORDER BY c.id OFFSET {s * per_slice:d} LIMIT {per_slice:d}
                ),
                draft AS (
                    -- random() is volatile, so this subquery is evaluated once per row.
                    SELECT conv.*, k,
                           CASE WHEN random() < 0.5 THEN 'customer' ELSE 'staff' END AS side
                    FROM conv CROSS JOIN generate_series(1, {per_conversation:d}) AS k
                )
                INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content,
                                               created_at)
                SELECT id, side,
                       CASE side WHEN 'customer' THEN customer_id ELSE agent END,
                       'message ' || k,
                       timestamptz '2025-01-01' + k * interval '1 minute'
                FROM draft
                """
            ),
        )
    # Receipts: what each reader has read, by recency within a conversation.
    await step(
        "receipts: assigned agents read all but their newest 3",
        conn.execute(
            """
            INSERT INTO message_read_receipts (message_id, read_by_user_id, read_at)
            SELECT m.id, c.assigned_user_id, m.created_at + interval '5 minutes'
            FROM (SELECT m.*, row_number() OVER (PARTITION BY m.conversation_id
                                                 ORDER BY m.created_at DESC) AS age
                  FROM customer_messages m WHERE m.sender_type = 'customer') AS m
            JOIN conversations c ON c.id = m.conversation_id
            WHERE c.assigned_user_id IS NOT NULL AND m.age > 3
            """
        ),
    )
    await step(
        "receipts: a second agent read 1 in 10 customer messages",
        conn.execute(
            """
            WITH u AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM users)
            INSERT INTO message_read_receipts (message_id, read_by_user_id)
            SELECT m.id, u.id
            FROM customer_messages m
            JOIN conversations c ON c.id = m.conversation_id
            JOIN u ON u.n = abs(hashtext(m.id::text)) % (SELECT count(*) FROM users)
            WHERE m.sender_type = 'customer' AND random() < 0.1
              AND u.id IS DISTINCT FROM c.assigned_user_id
            """
        ),
    )
    await step(
        "receipts: customers read all but their newest 2",
        conn.execute(
            """
            INSERT INTO message_read_receipts (message_id, read_by_customer_id, read_at)
            SELECT m.id, c.customer_id, m.created_at + interval '30 minutes'
            FROM (SELECT m.*, row_number() OVER (PARTITION BY m.conversation_id
                                                 ORDER BY m.created_at DESC) AS age
                  FROM customer_messages m WHERE m.sender_type = 'staff') AS m
            JOIN conversations c ON c.id = m.conversation_id
            WHERE m.age > 2
            """
        ),
    )
    await step("VACUUM ANALYZE", conn.execute("VACUUM ANALYZE"))


async def timed(conn: asyncpg.Connection, sql: str, *args: object) -> float:
    """Milliseconds of one call, as the client sees it."""
    start = time.perf_counter()
    await conn.fetch(sql, *args)  # every row, as the API reads them
    return (time.perf_counter() - start) * 1000


def summary(samples: list[float]) -> tuple[float, float]:
    """Median and 95th percentile."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


async def measure(conn: asyncpg.Connection, args: argparse.Namespace) -> bool:
    """Time the function as its callers would, and the naive query beside it."""
    rng = random.Random(args.seed)
    staff = [r["id"] for r in await conn.fetch("SELECT id FROM users")]
    customers = [r["id"] for r in await conn.fetch("SELECT id FROM customers")]

    mismatches = 0
    for reader in rng.sample(staff, min(5, len(staff))):
        counted = await conn.fetchval("SELECT get_unread_message_count($1, NULL)", reader)
        mismatches += counted != await conn.fetchval(NAIVE_STAFF, reader)
        by_counters = await conn.fetch(staff_unread_sql(False), reader)
        mismatches += by_counters != await conn.fetch(NAIVE_STAFF_BY_CONVERSATION, reader)
    for reader in rng.sample(customers, min(50, len(customers))):
        counted = await conn.fetchval("SELECT get_unread_message_count(NULL, $1)", reader)
        mismatches += counted != await conn.fetchval(NAIVE_CUSTOMER, reader)

    results: dict[str, dict[str, list[float]]] = {"staff": {}, "customer": {}}
    for kind, readers, naive_sql, naive_calls in (
        ("staff", staff, NAIVE_STAFF, args.naive_staff_calls),
        ("customer", customers, NAIVE_CUSTOMER, args.calls),
    ):
        samples: list[float] = []
        for _ in range(args.calls):
            reader = rng.choice(readers)
            if kind == "staff":
                caller, params = Caller.staff(reader), (reader, None)
            else:
                caller, params = Caller.customer(reader), (None, reader)
            async with as_caller(conn, caller):
                samples.append(
                    await timed(conn, "SELECT get_unread_message_count($1, $2)", *params)
                )
        results[kind]["function, as the caller"] = samples
        results[kind]["naive anti-join (baseline)"] = [
            await timed(conn, naive_sql, rng.choice(readers)) for _ in range(naive_calls)
        ]

    # GET /api/unread's list per conversation (no target: it was the anti-join before 0012).
    samples = []
    for _ in range(args.calls):
        reader = rng.choice(staff)
        async with as_caller(conn, Caller.staff(reader)):
            samples.append(await timed(conn, staff_unread_sql(False), reader))
    results["staff"]["per conversation, counters"] = samples
    results["staff"]["per conversation, anti-join"] = [
        await timed(conn, NAIVE_STAFF_BY_CONVERSATION, rng.choice(staff))
        for _ in range(args.naive_staff_calls)
    ]

    print()
    print(f"{'reader':<9} {'query':<30} {'calls':>6} {'median ms':>10} {'p95 ms':>9} {'target':>8}")
    ok = mismatches == 0
    for kind, rows in results.items():
        for label, samples in rows.items():
            median, p95 = summary(samples)
            is_function = label.startswith("function")
            target = f"< {TARGET_MS[kind]:g}" if is_function else ""
            if is_function:
                ok &= median < TARGET_MS[kind]
            print(
                f"{kind:<9} {label:<30} {len(samples):>6} {median:>10.3f} {p95:>9.3f} {target:>8}"
            )
    print()
    print(f"counter vs naive mismatches on sampled readers: {mismatches}")
    return ok


async def run(server_url: str, args: argparse.Namespace) -> bool:
    """Create a scratch database on the server, fill it, measure, drop it."""
    name = f"rtm_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(with_database(server_url, name))
        try:
            await migrate(conn)
            version = await conn.fetchval("SHOW server_version")
            print(
                f"PostgreSQL {version}: {args.messages:,} messages, "
                f"{args.conversations:,} conversations, {args.staff} staff users"
            )
            start = time.perf_counter()
            await generate(conn, args)
            counts = await conn.fetchrow(
                """SELECT (SELECT count(*) FROM customer_messages) AS messages,
                          (SELECT count(*) FROM message_read_receipts) AS receipts,
                          (SELECT count(*) FROM message_delivery_status) AS delivery"""
            )
            print(
                f"  generated {counts['messages']:,} messages, {counts['receipts']:,} receipts, "
                f"{counts['delivery']:,} delivery rows in {time.perf_counter() - start:.0f} s"
            )
            return await measure(conn, args)
        finally:
            await conn.close()
    finally:
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a server to use (default: embedded, temporary)")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--staff", type=int, default=50)
    parser.add_argument("--calls", type=int, default=500, help="timed calls per kind of reader")
    parser.add_argument("--naive-staff-calls", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    if args.database_url:
        ok = asyncio.run(run(args.database_url, args))
    else:
        with tempfile.TemporaryDirectory(prefix="rtm-bench-") as tmp:
            server = EmbeddedPostgres(Path(tmp))
            try:
                ok = asyncio.run(run(server.url(), args))
            finally:
                server.close()
    print("targets met" if ok else "targets NOT met")


if __name__ == "__main__":
    main()
