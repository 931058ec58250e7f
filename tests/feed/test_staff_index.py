"""The router's index of customers' bindings on staff presence rows: what a binding names and
the customer may see is indexed by staff id, and leaving takes it out again."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import asyncpg

from realtime_messaging.domain.identity import Identity, Kind
from realtime_messaging.protocol.join import PostgresBinding
from realtime_messaging.server.pgchanges import ChangeRouter, load_tables


def _binding(text: str | None, binding_id: int = 1) -> PostgresBinding:
    raw = {"event": "*", "schema": "public", "table": "user_presence", "filter": text}
    return PostgresBinding("*", "public", "user_presence", text, raw, binding_id)


async def test_named_staff_the_customer_may_see_are_indexed_until_the_channel_leaves(
    pool: asyncpg.Pool,
) -> None:
    router = ChangeRouter(await load_tables(pool))
    index = router._index["user_presence"]
    mine, theirs, unknown = (str(uuid.uuid4()) for _ in range(3))
    customer = Identity(Kind.CUSTOMER, customer_id=uuid.uuid4())
    many = [
        _binding(f"user_id=in.({mine},{theirs},{unknown})", 1),
        _binding(f"user_id=eq.{mine}", 2),
        _binding(None, 3),  # the customer's own row only, though the channel names staff
        _binding(f"user_id=neq.{unknown}", 4),  # names no one: follows no one
    ]
    asks = router.asks_for_staff
    assert asks(customer, many)
    assert not asks(customer, many[2:])
    assert not asks(customer, [_binding(f"customer_id=eq.{mine}"), _binding("status=eq.user_id")])
    assert not asks(customer, [_binding("user_id=eq.not-a-uuid")])  # refused at subscribe
    assert not asks(Identity(Kind.STAFF, user_id=uuid.uuid4()), many)

    sub = SimpleNamespace(topic="agents")
    assert router.subscribe(sub, many, customer, frozenset({mine, theirs})) is None  # type: ignore[arg-type]
    assert {user: len(entries) for user, entries in index.by_staff.items()} == {mine: 2, theirs: 1}
    granted = [bool(entry.staff) for _, entry, _ in router._entries[id(sub)]]
    assert granted == [True, True, False, False]
    assert router.staff_of(sub) == tuple(sorted((mine, theirs)))  # type: ignore[arg-type]
    assert not index.eq and not index.eq_columns  # the eq binding is found by staff id

    router.unsubscribe(sub)  # type: ignore[arg-type]
    assert not index.by_staff and not index.by_customer and not index.eq and not index.rest
    # Without a grant (no staff of theirs among those named) nothing is indexed by staff.
    assert router.subscribe(sub, many, customer, frozenset()) is None  # type: ignore[arg-type]
    assert not index.by_staff and router.staff_of(sub) == ()  # type: ignore[arg-type]
