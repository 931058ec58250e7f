"""postgres_changes: route each change of the feed to the channels allowed and asking to see it.

Authorization is decided once per subscription, from the identity the channel joined with: staff
and the service role see every row, a customer sees rows whose change carries their id (the feed
stamps each change with the customer owning its conversation), anyone else sees nothing. A
customer's binding on ``user_presence`` that names staff (``user_id=eq.`` or ``in.``) also sees
the rows of those of them the customer may see, as read when the channel joined (staff rows carry
no customer: which customers may see one depends on their conversations). No query per event per
subscriber: a change costs a few dictionary look-ups plus one filter check per candidate
subscription, and its payload is encoded once.

Subscriptions are indexed per table: by ``column=eq.value`` filter, by customer for a customer's
unfiltered bindings, by staff id for a customer's bindings on staff presence, and the rest
(staff without an eq filter) in a list.

The feed also carries broadcasts from the database (``realtime.send``, migration
``0011_db_broadcast``): every joined channel is indexed by topic, and such a change goes to the
channels of its topic as a ``broadcast`` (public messages to every channel, private ones only to
private channels, whose join was authorized), in feed order with the changes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import asyncpg
import orjson

from ..domain.filters import Filter, FilterError, normalize, parse_filter
from ..domain.identity import Identity, Kind
from ..protocol.frames import Vsn, encode_push
from ..protocol.join import PostgresBinding
from ..store.changefeed import BROADCAST_TABLE, Change
from .fanout import Outbox, broadcast_payload, ws_frame

log = logging.getLogger(__name__)

#: The tables whose changes are published, all in schema public.
#: Parsed filters kept for joins to come (each at most the frame limit, in practice a few
#: dozen bytes: a user or conversation id).
FILTER_CACHE = 1024

TABLES = (
    "conversations",
    "customer_messages",
    "message_read_receipts",
    "message_typing_indicators",
    "user_presence",
    "message_delivery_status",
)

#: The table whose staff rows a customer may follow, and the column naming the staff user.
PRESENCE_TABLE = "user_presence"
STAFF_COLUMN = "user_id"


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: list[dict[str, str]]  # [{"name", "type"}] in column order, as the clients expect
    types: dict[str, str]


async def load_tables(pool: asyncpg.Pool) -> dict[str, Table]:
    rows = await pool.fetch(
        """
        SELECT c.relname AS table, a.attname AS name, t.typname AS type
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        WHERE n.nspname = 'public' AND c.relname = ANY($1::text[])
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum
        """,
        list(TABLES),
    )
    columns: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        columns[row["table"]].append({"name": row["name"], "type": row["type"]})
    return {
        name: Table(name, cols, {c["name"]: c["type"] for c in cols})
        for name, cols in columns.items()
    }


class Subscriber(Protocol):
    """A joined channel as the router sees it."""

    topic: str
    pg_position: int
    pg_buffer: list[tuple[Change, list[int]]] | None

    @property
    def vsn(self) -> Vsn: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def reads_private(self) -> bool:
        """Whether private broadcasts from the database reach it (a private channel)."""
        ...


@dataclass(eq=False, slots=True)
class _Entry:
    subscriber: Subscriber
    binding_id: int
    event: str
    filter: Filter | None
    customer: UUID | None  # None: sees every row
    #: Staff whose presence rows this customer's entry sees besides the customer's own rows.
    staff: frozenset[str] = frozenset()


@dataclass(slots=True)
class _TableIndex:
    eq: dict[tuple[str, Any], set[_Entry]] = field(default_factory=lambda: defaultdict(set))
    eq_columns: dict[str, int] = field(default_factory=dict)
    by_customer: dict[UUID, set[_Entry]] = field(default_factory=lambda: defaultdict(set))
    by_staff: dict[str, set[_Entry]] = field(default_factory=lambda: defaultdict(set))
    rest: set[_Entry] = field(default_factory=set)


def scope_of(identity: Identity) -> tuple[bool, UUID | None]:
    """(sees anything, restricted to this customer)."""
    if identity.kind is Kind.STAFF or identity.kind is Kind.SERVICE:
        return True, None
    if identity.kind is Kind.CUSTOMER:
        return True, identity.customer_id
    return False, None


def _named_staff(flt: Filter | None) -> frozenset[str] | None:
    """The staff a binding's filter on ``user_presence`` names (a positive ``eq`` or ``in`` on
    ``user_id``), or None when it names none: only such a binding follows staff rows."""
    named = flt.named(STAFF_COLUMN) if flt is not None else None
    return None if named is None else frozenset(str(value) for value in named)


class ChangeRouter:
    def __init__(self, tables: dict[str, Table]) -> None:
        self.tables = tables
        #: Parsed filters by text, with the column types they were parsed for (:meth:`_parsed`),
        #: the oldest dropped past the bound.
        self._filters: dict[str, tuple[Filter, tuple[tuple[str, str], ...]]] = {}
        self._index: dict[str, _TableIndex] = {name: _TableIndex() for name in tables}
        self._entries: dict[int, list[tuple[str, _Entry, tuple[str, Any] | None]]] = {}
        #: Every joined channel by full topic, for broadcasts from the database.
        self._topics: dict[str, dict[int, Subscriber]] = {}
        self.delivered = 0
        #: Changes that could not be routed at all (logged; their neighbours still were).
        self.undeliverable = 0
        #: Changes delivered without their large or unencodable values (``errors`` says so).
        self.degraded = 0

    # -- subscriptions ------------------------------------------------------------------

    def asks_for_staff(self, identity: Identity, bindings: Sequence[PostgresBinding]) -> bool:
        """Whether a customer's bindings name staff presence rows: the channel's join then
        reads which staff the customer may see (:meth:`subscribe`'s ``staff``). A filter that
        cannot be parsed names none (the subscription refuses it)."""
        if identity.kind is not Kind.CUSTOMER:
            return False
        for binding in bindings:
            if binding.table == PRESENCE_TABLE and binding.filter and PRESENCE_TABLE in self.tables:
                try:
                    flt = self._parsed(PRESENCE_TABLE, binding.filter)
                except FilterError:
                    continue
                if _named_staff(flt) is not None:
                    return True
        return False

    def subscribe(
        self,
        subscriber: Subscriber,
        bindings: Sequence[PostgresBinding],
        identity: Identity,
        staff: frozenset[str] = frozenset(),
    ) -> str | None:
        """Register the bindings; return an error message (nothing registered) when one is bad.

        ``staff``: the staff a customer may see (read at join when :meth:`asks_for_staff`);
        their presence rows reach the customer's bindings that name them."""
        visible, customer = scope_of(identity)
        planned: list[tuple[str, _Entry, tuple[str, Any] | None]] = []
        for binding in bindings:
            if binding.schema not in ("public", "*"):
                return f"unknown schema {binding.schema!r}"
            wildcard = binding.table in (None, "*")
            if not wildcard and binding.table not in self.tables:
                return f"unknown table {binding.schema}.{binding.table}"
            names = list(self.tables) if wildcard else [binding.table]
            flt: Filter | None = None
            key = None
            if binding.filter:
                if wildcard:
                    return "a filter needs a table"
                try:
                    flt = self._parsed(names[0], binding.filter)  # type: ignore[arg-type]
                except FilterError as exc:
                    return str(exc)
                key = flt.eq_key()
            if not visible:
                continue
            for name in names:
                assert name is not None
                entry = _Entry(subscriber, binding.id, binding.event, flt, customer)
                named = _named_staff(flt) if name == PRESENCE_TABLE else None
                if customer is not None and named is not None:
                    entry.staff = staff & named
                planned.append((name, entry, None if entry.staff else key))
        self.unsubscribe(subscriber)
        for name, entry, key in planned:
            index = self._index[name]
            if entry.staff:
                # Own rows are found by customer, the staff's by their ids.
                index.by_customer[entry.customer].add(entry)  # type: ignore[index]
                for user in entry.staff:
                    index.by_staff[user].add(entry)
            elif key is not None:
                index.eq[key].add(entry)
                index.eq_columns[key[0]] = index.eq_columns.get(key[0], 0) + 1
            elif entry.customer is not None:
                index.by_customer[entry.customer].add(entry)
            else:
                index.rest.add(entry)
        self._entries[id(subscriber)] = planned
        return None

    def _parsed(self, table: str, text: str) -> Filter:
        """``text`` parsed for ``table``, once per text: the rejoins of a reconnect storm send
        the same filters again, and the SDK sends one filter for several tables (parsing was
        the largest part of a rejoin's CPU, benchmarks/README.md "Reconnect"). A filter parsed
        for one table serves another whose columns it names have the same types; filters are
        immutable, so subscribers share them. Refused ones are not kept."""
        types = self.tables[table].types
        kept = self._filters.get(text)
        if kept is not None:
            parsed, used = kept
            if all(types.get(column) == pg_type for column, pg_type in used):
                return parsed
        parsed = parse_filter(text, types)
        if kept is None and len(self._filters) >= FILTER_CACHE:
            del self._filters[next(iter(self._filters))]  # the oldest
        self._filters[text] = (
            parsed,
            tuple((c.column, types.get(c.column, "")) for c in parsed.conditions),
        )
        return parsed

    def staff_of(self, subscriber: Subscriber) -> tuple[str, ...]:
        """The staff whose presence rows reach ``subscriber`` (what its replay reads besides
        its customer's changes)."""
        found: set[str] = set()
        for _, entry, _ in self._entries.get(id(subscriber), ()):
            found |= entry.staff
        return tuple(sorted(found))

    def unsubscribe(self, subscriber: Subscriber) -> None:
        for name, entry, key in self._entries.pop(id(subscriber), ()):
            index = self._index[name]
            for user in entry.staff:
                bucket = index.by_staff.get(user)
                if bucket is not None:
                    bucket.discard(entry)
                    if not bucket:
                        del index.by_staff[user]
            if key is not None:
                bucket = index.eq.get(key)
                if bucket is not None:
                    bucket.discard(entry)
                    if not bucket:
                        del index.eq[key]
                remaining = index.eq_columns[key[0]] - 1
                if remaining:
                    index.eq_columns[key[0]] = remaining
                else:
                    del index.eq_columns[key[0]]
            elif entry.customer is not None:
                bucket = index.by_customer.get(entry.customer)
                if bucket is not None:
                    bucket.discard(entry)
                    if not bucket:
                        del index.by_customer[entry.customer]
            else:
                index.rest.discard(entry)

    def join_topic(self, subscriber: Subscriber) -> None:
        """Broadcasts from the database to the subscriber's topic reach it from now on."""
        self._topics.setdefault(subscriber.topic, {})[id(subscriber)] = subscriber

    def leave_topic(self, subscriber: Subscriber) -> None:
        members = self._topics.get(subscriber.topic)
        if members is not None and members.get(id(subscriber)) is subscriber:
            del members[id(subscriber)]
            if not members:
                del self._topics[subscriber.topic]

    # -- routing ------------------------------------------------------------------------

    def route(self, changes: Iterable[Change]) -> None:
        """Hand each change to its subscribers. A change that fails is logged, counted and
        skipped alone: its neighbours are delivered and the feed goes on."""
        for change in changes:
            try:
                if change.table == BROADCAST_TABLE:
                    self._broadcast(change)
                    continue
                hits = self.match(change)
                if hits:
                    self._send(change, hits)
            except Exception:
                self.undeliverable += 1
                log.exception("change %s (%s) could not be delivered", change.pos, change.table)

    def ids_for(self, change: Change, subscriber: Subscriber) -> list[int]:
        """The binding ids of ``subscriber`` that ``change`` matches (a replay's question); a
        change that cannot be matched is logged and counted, and matches nothing."""
        try:
            return self.match(change, only=subscriber).get(subscriber, [])
        except Exception:
            self.undeliverable += 1
            log.exception("change %s (%s) could not be replayed", change.pos, change.table)
            return []

    def _broadcast(self, change: Change) -> None:
        record = change.record or {}
        members = self._topics.get("realtime:" + str(record.get("topic")))
        if not members:
            return
        encoder = BroadcastEncoder(change)
        for subscriber in list(members.values()):
            if not receives(change, subscriber):
                continue
            if subscriber.pg_buffer is not None:
                subscriber.pg_buffer.append((change, []))
            elif change.pos > subscriber.pg_position:
                subscriber.outbox.write(encoder.frame(subscriber.vsn, subscriber.topic))
                subscriber.pg_position = change.pos
                self.delivered += 1

    def frame(self, change: Change, subscriber: Subscriber, ids: list[int]) -> bytes:
        """The frame carrying ``change`` to ``subscriber`` (a replay's or a buffer's)."""
        if change.table == BROADCAST_TABLE:
            return BroadcastEncoder(change).frame(subscriber.vsn, subscriber.topic)
        return ChangeEncoder(change, self.tables[change.table]).frame(
            subscriber.vsn, subscriber.topic, ids
        )

    def match(self, change: Change, only: Subscriber | None = None) -> dict[Subscriber, list[int]]:
        """Which subscribers (or whether ``only``) see ``change``, with their matching binding ids."""
        index = self._index.get(change.table)
        if index is None:
            return {}
        row = change.record if change.record is not None else change.old_record
        if row is None:
            return {}
        table = self.tables[change.table]
        candidates: list[_Entry] = []
        for column in index.eq_columns:
            value = row.get(column)
            if value is None:
                continue
            try:
                key = (column, normalize(table.types[column], value))
            except (ValueError, TypeError):
                continue
            bucket = index.eq.get(key)
            if bucket:
                candidates.extend(bucket)
        owner = change.customer_id
        staff_row: str | None = None  # the staff user whose presence row this is
        if owner is not None:
            bucket = index.by_customer.get(owner)
            if bucket:
                candidates.extend(bucket)
        elif index.by_staff:
            user = row.get(STAFF_COLUMN)
            old = change.old_record
            # The old row too must be this staff user's: an update that moved a row between
            # people (only the owner can) would show the old one's values.
            if type(user) is str and (old is None or old.get(STAFF_COLUMN) == user):
                staff_row = user
                bucket = index.by_staff.get(user)
                if bucket:
                    candidates.extend(bucket)
        candidates.extend(index.rest)
        # Binding ids per subscriber, in first-match order (a dict: a set that keeps order).
        hits: dict[Subscriber, dict[int, None]] = {}
        op = change.op
        for entry in candidates:
            if only is not None and entry.subscriber is not only:
                continue
            if entry.event != "*" and entry.event != op:
                continue
            if (
                entry.customer is not None
                and entry.customer != owner
                and (staff_row is None or staff_row not in entry.staff)
            ):
                continue
            if entry.filter is not None and not entry.filter.matches(row):
                continue
            hits.setdefault(entry.subscriber, {})[entry.binding_id] = None
        return {subscriber: list(ids) for subscriber, ids in hits.items()}

    def _send(self, change: Change, hits: dict[Subscriber, list[int]]) -> None:
        encoder = ChangeEncoder(change, self.tables[change.table])
        if encoder.degraded:
            self.degraded += 1
            log.warning(
                "change %s (%s) delivered without its large or unencodable values",
                change.pos,
                change.table,
            )
        for subscriber, ids in hits.items():
            if subscriber.pg_buffer is not None:
                subscriber.pg_buffer.append((change, ids))
            elif change.pos > subscriber.pg_position:
                subscriber.outbox.write(encoder.frame(subscriber.vsn, subscriber.topic, ids))
                subscriber.pg_position = change.pos
                self.delivered += 1


def receives(change: Change, subscriber: Subscriber) -> bool:
    """Whether a broadcast from the database reaches a channel of its topic: a public one
    reaches every channel, a private one only private channels (their join was authorized)."""
    record = change.record or {}
    return not record.get("private") or subscriber.reads_private


class BroadcastEncoder:
    """A broadcast from the database as the clients expect one from ``realtime.send``:
    ``{"type": "broadcast", "event", "payload", "meta": {"id", "position"}}``, encoded once
    per wire format and topic."""

    def __init__(self, change: Change) -> None:
        record = change.record or {}
        meta = {"id": record.get("id"), "position": change.pos}
        self._body = broadcast_payload(str(record.get("event")), record.get("payload"), meta)
        self._frames: dict[tuple[Vsn, str], bytes] = {}

    def frame(self, vsn: Vsn, topic: str) -> bytes:
        frame = self._frames.get((vsn, topic))
        if frame is None:
            frame = self._frames[(vsn, topic)] = ws_frame(
                encode_push(vsn, topic, "broadcast", self._body)
            )
        return frame


#: A record larger than this, encoded, is delivered without its large values, as Supabase
#: Realtime does above its ``max_record_bytes`` (1 MB).
MAX_RECORD_BYTES = 1024 * 1024
#: What a degraded record keeps: values that encode in at most this many bytes (Supabase's rule).
SMALL_VALUE_BYTES = 64
#: The ``errors`` of a degraded change, as Supabase Realtime words it.
TOO_LARGE = ["Error 413: Payload Too Large"]


def _small_values(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The values of ``record`` that encode in at most :data:`SMALL_VALUE_BYTES` bytes."""
    if record is None:
        return None
    kept = {}
    for key, value in record.items():
        try:
            encoded = orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):
            continue
        if len(encoded) <= SMALL_VALUE_BYTES:
            kept[key] = value
    return kept


class ChangeEncoder:
    """Encodes a change's ``data`` once; frames differ only by topic, ids and wire format.

    A change whose record cannot be encoded (nested deeper than the encoder goes, written by
    plain SQL past the API's limits) or is larger than :data:`MAX_RECORD_BYTES` is delivered
    degraded, never dropped: only its small values, with ``errors`` saying why.
    """

    def __init__(self, change: Change, table: Table) -> None:
        self.degraded = bool(change.errors)
        try:
            self._data = self._encode(change, table, change.record, change.old_record)
        except (TypeError, orjson.JSONEncodeError):
            self._data = b""
        if not self._data or len(self._data) > MAX_RECORD_BYTES:
            self.degraded = True
            self._data = self._encode(
                change,
                table,
                _small_values(change.record),
                _small_values(change.old_record),
                TOO_LARGE,
            )
        self._frames: dict[tuple[Vsn, str, tuple[int, ...]], bytes] = {}

    def frame(self, vsn: Vsn, topic: str, ids: list[int]) -> bytes:
        key = (vsn, topic, tuple(ids))
        frame = self._frames.get(key)
        if frame is None:
            body = b'{"ids":' + orjson.dumps(ids) + b',"data":' + self._data + b"}"
            if vsn is Vsn.V2:
                text = b"[null,null," + orjson.dumps(topic) + b',"postgres_changes",' + body + b"]"
            else:
                text = (
                    b'{"topic":'
                    + orjson.dumps(topic)
                    + b',"event":"postgres_changes","payload":'
                    + body
                    + b',"ref":null}'
                )
            frame = self._frames[key] = ws_frame(text)
        return frame

    @staticmethod
    def _encode(
        change: Change,
        table: Table,
        record: dict[str, Any] | None,
        old_record: dict[str, Any] | None,
        errors: list[str] | None = None,
    ) -> bytes:
        data: dict[str, Any] = {
            "schema": "public",
            "table": change.table,
            "commit_timestamp": change.changed_at,
            "type": change.op,
            "columns": table.columns,
        }
        if record is not None:
            data["record"] = record
        if old_record is not None:
            data["old_record"] = old_record
        data["errors"] = errors or (list(change.errors) if change.errors else None)
        data["position"] = change.pos
        return orjson.dumps(data)
