"""Parsed filters are kept: the rejoins of a reconnect storm send the same few filters again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import asyncpg

from realtime_messaging.domain.identity import Identity, Kind
from realtime_messaging.protocol.join import PostgresBinding
from realtime_messaging.server import pgchanges
from realtime_messaging.server.pgchanges import ChangeRouter, load_tables


def _binding(text: str) -> PostgresBinding:
    raw = {"event": "*", "schema": "public", "table": "customer_messages", "filter": text}
    return PostgresBinding("*", "public", "customer_messages", text, raw, 1)


def _filters_of(router: ChangeRouter, subscriber: Any) -> list[Any]:
    return [entry.filter for _, entry, _ in router._entries[id(subscriber)]]


async def test_joins_with_one_filter_share_one_parse_and_bad_ones_are_not_kept(
    pool: asyncpg.Pool,
) -> None:
    router = ChangeRouter(await load_tables(pool))
    staff = Identity(Kind.SERVICE)
    text = "conversation_id=eq.6f1d1c9e-0000-4000-8000-000000000001"
    first, second = SimpleNamespace(topic="a"), SimpleNamespace(topic="b")
    assert router.subscribe(first, [_binding(text)], staff) is None  # type: ignore[arg-type]
    assert router.subscribe(second, [_binding(text)], staff) is None  # type: ignore[arg-type]
    (a,), (b,) = _filters_of(router, first), _filters_of(router, second)
    assert a is b and a is not None
    bad = "no_such_column=eq.1"
    assert router.subscribe(first, [_binding(bad)], staff) is not None  # type: ignore[arg-type]
    assert ("customer_messages", bad) not in router._filters


async def test_the_kept_filters_are_bounded(pool: asyncpg.Pool, monkeypatch: Any) -> None:
    monkeypatch.setattr(pgchanges, "FILTER_CACHE", 3)
    router = ChangeRouter(await load_tables(pool))
    staff = Identity(Kind.SERVICE)
    for i in range(5):
        text = f"conversation_id=eq.6f1d1c9e-0000-4000-8000-00000000000{i}"
        assert router.subscribe(SimpleNamespace(topic="t"), [_binding(text)], staff) is None  # type: ignore[arg-type]
    assert [t for _, t in router._filters] == [
        f"conversation_id=eq.6f1d1c9e-0000-4000-8000-00000000000{i}" for i in (2, 3, 4)
    ]
