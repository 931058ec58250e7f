"""Parsed filters are kept: the rejoins of a reconnect storm send the same filters again, and
the SDK sends one filter for several tables."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import asyncpg

from realtime_messaging.domain.identity import Identity, Kind
from realtime_messaging.protocol.join import PostgresBinding
from realtime_messaging.server import pgchanges
from realtime_messaging.server.pgchanges import ChangeRouter, load_tables

CONVERSATION = "conversation_id=eq.6f1d1c9e-0000-4000-8000-000000000001"


def _binding(table: str, text: str, binding_id: int = 1) -> PostgresBinding:
    raw = {"event": "*", "schema": "public", "table": table, "filter": text}
    return PostgresBinding("*", "public", table, text, raw, binding_id)


def _filters_of(router: ChangeRouter, subscriber: Any) -> list[Any]:
    return [entry.filter for _, entry, _ in router._entries[id(subscriber)]]


async def test_one_filter_is_parsed_once_for_joins_and_tables_alike(pool: asyncpg.Pool) -> None:
    router = ChangeRouter(await load_tables(pool))
    staff = Identity(Kind.SERVICE)
    first, second = SimpleNamespace(topic="a"), SimpleNamespace(topic="b")
    both = [
        _binding("customer_messages", CONVERSATION, 1),
        _binding("message_read_receipts", CONVERSATION, 2),
    ]
    assert router.subscribe(first, both, staff) is None  # type: ignore[arg-type]
    assert router.subscribe(second, both[:1], staff) is None  # type: ignore[arg-type]
    (a, b), (c,) = _filters_of(router, first), _filters_of(router, second)
    assert a is not None and a is b is c


async def test_a_kept_filter_is_still_refused_where_its_column_is_missing(
    pool: asyncpg.Pool,
) -> None:
    router = ChangeRouter(await load_tables(pool))
    staff = Identity(Kind.SERVICE)
    sub = SimpleNamespace(topic="a")
    assert router.subscribe(sub, [_binding("customer_messages", CONVERSATION)], staff) is None  # type: ignore[arg-type]
    refused = router.subscribe(sub, [_binding("conversations", CONVERSATION)], staff)  # type: ignore[arg-type]
    assert refused is not None and "conversation_id" in refused
    bad = "no_such_column=eq.1"
    assert router.subscribe(sub, [_binding("customer_messages", bad)], staff) is not None  # type: ignore[arg-type]
    assert bad not in router._filters


async def test_the_kept_filters_are_bounded(pool: asyncpg.Pool, monkeypatch: Any) -> None:
    monkeypatch.setattr(pgchanges, "FILTER_CACHE", 3)
    router = ChangeRouter(await load_tables(pool))
    staff = Identity(Kind.SERVICE)
    texts = [f"conversation_id=eq.6f1d1c9e-0000-4000-8000-00000000000{i}" for i in range(5)]
    for text in texts:
        sub = SimpleNamespace(topic="t")
        assert router.subscribe(sub, [_binding("customer_messages", text)], staff) is None  # type: ignore[arg-type]
    assert list(router._filters) == texts[2:]
