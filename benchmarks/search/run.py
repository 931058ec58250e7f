"""Benchmark search and the filtered conversation list on the unread benchmark's data set.

Builds the data set of ``benchmarks/unread_count.py`` (1,000,000 messages in 10,000
conversations, 50 staff users, receipts as a support desk leaves them) with its own generator,
then gives the messages words: its generator writes "message <k>", which every search would
match. Each message gets 5 to 24 words drawn from a vocabulary of support words and a long tail
of rarer ones, with a Zipf-like frequency (word i about as often as 1/i), written with the
triggers off (the rewrite is data set-up, not traffic), then search's words rebuilt as after a
bulk load (``rtm.rebuild_message_search()``, migration 0018). Then it times the API's own queries (``search_sql``, ``list_sql``, ``counts_sql``), each
inside ``as_caller`` so row-level security applies, for random staff users and customers, and
prints the median and p95 per kind of query. Targets: search median under 50 ms, filtered
list median under 10 ms.

    python benchmarks/search/run.py                  # 1M messages, embedded PostgreSQL
    python benchmarks/search/run.py --messages 100000 --calls 100   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unread_count import generate, step, summary, timed, with_database  # noqa: E402

from realtime_messaging.server.api.queues import (  # noqa: E402
    ConversationQuery,
    counts_sql,
    list_sql,
)
from realtime_messaging.server.api.search import SearchQuery, search_sql  # noqa: E402
from realtime_messaging.store.caller import Caller, as_caller  # noqa: E402
from realtime_messaging.store.embedded import EmbeddedPostgres  # noqa: E402
from realtime_messaging.store.migrate import migrate  # noqa: E402

TARGET_MS = {"search": 50.0, "list": 10.0}

#: The head of the vocabulary: the words a support desk uses most, most frequent first.
SUPPORT_WORDS = (
    "the to i and a you my is it for of on in we this can please have order not with your "
    "be thanks help account refund payment invoice delivery password login error app "
    "shipping card subscription cancel update email address return package tracking number "
    "charged twice discount code price plan upgrade downgrade billing receipt broken damaged "
    "missing late arrived replacement exchange size colour warranty battery screen install "
    "sync notification settings profile verify reset locked blocked crash slow offline"
).split()
VOCABULARY = 20_000


async def add_words(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    """Replace each message's "message <k>" with 5 to 24 Zipf-distributed words."""
    await conn.execute("CREATE TEMP TABLE vocab (i integer PRIMARY KEY, w text NOT NULL)")
    words = SUPPORT_WORDS + [f"term{i}" for i in range(len(SUPPORT_WORDS), VOCABULARY)]
    await conn.copy_records_to_table("vocab", records=list(enumerate(words, start=1)))
    await conn.execute("ANALYZE vocab")
    await conn.execute("SET session_replication_role = replica")  # data set-up: no triggers
    conversations = [r["id"] for r in await conn.fetch("SELECT id FROM conversations ORDER BY id")]
    slices = 10
    size = -(-len(conversations) // slices)
    for s in range(slices):
        ids = conversations[s * size : (s + 1) * size]
        # exp(random() * ln N) is log-uniform on [1, N): P(i) about 1/i, Zipf's law.
        await step(
            f"words, slice {s + 1}/{slices}",
            conn.execute(
                f"""
                UPDATE customer_messages AS m SET content = (
                    SELECT string_agg(v.w, ' ' ORDER BY r.g)
                    FROM (SELECT g, least({VOCABULARY:d},
                                          floor(exp(random() * ln({VOCABULARY:d}))))::integer AS i
                          FROM generate_series(1, 5 + abs(hashtext(m.id::text)) % 20) AS g) AS r
                    JOIN vocab AS v ON v.i = r.i
                )
                WHERE m.conversation_id = ANY($1::uuid[])
                """,
                ids,
            ),
        )
    await conn.execute("RESET session_replication_role")
    # The triggers that keep search's words were off too: the repair a bulk load needs (0018).
    await step("search words", conn.fetchval("SELECT rtm.rebuild_message_search()"))
    # Some conversations closed or pending, as a desk's queue has them.
    await conn.execute(
        "UPDATE conversations SET status = CASE WHEN random() < 0.6 THEN 'closed' "
        "WHEN random() < 0.5 THEN 'pending' ELSE 'open' END"
    )
    await step("VACUUM ANALYZE", conn.execute("VACUUM ANALYZE"))


async def frequency(conn: asyncpg.Connection, word: str) -> int:
    found: int = await conn.fetchval(
        "SELECT count(*) FROM customer_messages "
        "WHERE to_tsvector('simple', content) @@ websearch_to_tsquery('simple', $1) "
        "AND deleted_at IS NULL",
        word,
    )
    return found


async def measure(conn: asyncpg.Connection, args: argparse.Namespace) -> bool:
    rng = random.Random(args.seed)
    staff = [r["id"] for r in await conn.fetch("SELECT id FROM users")]
    customers = [r["id"] for r in await conn.fetch("SELECT id FROM customers")]
    conversations = [r["id"] for r in await conn.fetch("SELECT id FROM conversations")]

    # Searches: what a desk looks for, from a word in half the messages to one in a thousand.
    searches: dict[str, tuple[str, str]] = {
        "staff, rare word": ("staff", "term15000"),
        "staff, frequent word": ("staff", "subscription"),
        "staff, two words": ("staff", "refund payment"),
        "staff, phrase": ("staff", '"charged twice"'),
        "staff, in a conversation": ("conversation", "the"),
        "customer, common word": ("customer", "the"),
        "staff, common word": ("staff", "the"),
    }
    print()
    for label, (_, text) in searches.items():
        print(f"  {label:<28} {text!r:<20} matches {await frequency(conn, text):>9,}")

    results: list[tuple[str, str, list[float]]] = []
    for label, (who, text) in searches.items():
        samples: list[float] = []
        calls = args.calls if not label.endswith("common word") else args.common_calls
        for _ in range(calls):
            conversation = None
            if who == "customer":
                caller = Caller.customer(rng.choice(customers))
            else:
                caller = Caller.staff(rng.choice(staff))
                if who == "conversation":
                    conversation = rng.choice(conversations)
            query = SearchQuery.model_validate(
                {"q": text, "conversationId": str(conversation) if conversation else None}
            )
            sql, params = search_sql(query)
            async with as_caller(conn, caller):
                samples.append(await timed(conn, sql, *params))
        results.append(("search", label, samples))

    lists: dict[str, dict[str, Any]] = {
        "staff, all": {},
        "staff, status=open": {"status": "open"},
        "staff, assignee=mine": {"assignee": "mine"},
        "staff, open & unassigned": {"status": "open", "assignee": "unassigned"},
        "staff, unread=true": {"unread": True},
        "staff, open & mine & unread": {"status": "open", "assignee": "mine", "unread": True},
        "customer, all": {},
        "customer, unread=true": {"unread": True},
    }
    for label, filters in lists.items():
        samples = []
        for _ in range(args.calls):
            if label.startswith("customer"):
                caller = Caller.customer(rng.choice(customers))
            else:
                caller = Caller.staff(rng.choice(staff))
            sql, params = list_sql(caller, ConversationQuery.model_validate(filters))
            async with as_caller(conn, caller):
                samples.append(await timed(conn, sql, *params))
        results.append(("list", label, samples))
    for label, kind in (("staff counts", "staff"), ("customer counts", "customer")):
        samples = []
        for _ in range(args.calls):
            if kind == "customer":
                caller = Caller.customer(rng.choice(customers))
            else:
                caller = Caller.staff(rng.choice(staff))
            sql, params = counts_sql(caller, "open")
            async with as_caller(conn, caller):
                samples.append(await timed(conn, sql, *params))
        results.append(("counts", label, samples))

    print()
    print(f"{'kind':<7} {'query':<30} {'calls':>6} {'median ms':>10} {'p95 ms':>9} {'target':>8}")
    ok = True
    for kind, label, samples in results:
        median, p95 = summary(samples)
        target = TARGET_MS.get(kind)
        if target is not None:
            ok &= median < target
        shown = f"< {target:g}" if target is not None else ""
        print(f"{kind:<7} {label:<30} {len(samples):>6} {median:>10.3f} {p95:>9.3f} {shown:>8}")
    return ok


async def run(server_url: str, args: argparse.Namespace) -> bool:
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
            await add_words(conn, args)
            print(f"  data set ready in {time.perf_counter() - start:.0f} s")
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
    parser.add_argument("--calls", type=int, default=200, help="timed calls per kind of query")
    parser.add_argument("--common-calls", type=int, default=20, help="for the common words")
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
