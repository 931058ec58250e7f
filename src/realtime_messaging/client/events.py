"""Typed, frozen events built from the change feed's rows (the documented event interfaces)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

ChangeType = Literal["INSERT", "UPDATE", "DELETE"]


@dataclass(frozen=True, slots=True)
class MessageEvent:
    id: str
    conversation_id: str
    content: str
    sender_type: Literal["customer", "staff"]
    sender_id: str
    created_at: str
    attachments: tuple[Any, ...] = ()
    client_message_id: str | None = None
    #: The change feed position of this change (``data.position``).
    position: int | None = None
    #: When the sender last edited it, and when it was deleted (a tombstone: empty content and
    #: attachments, same id and place); None when not.
    edited_at: str | None = None
    deleted_at: str | None = None
    #: ``INSERT`` for a new message, ``UPDATE`` for an edit or a delete of one already sent.
    change: ChangeType = "INSERT"

    @property
    def edited(self) -> bool:
        """The content is not what was first sent."""
        return self.edited_at is not None

    @property
    def deleted(self) -> bool:
        """Deleted: show a "message deleted" placeholder in its place."""
        return self.deleted_at is not None


@dataclass(frozen=True, slots=True)
class ReadReceiptEvent:
    id: str
    message_id: str
    read_at: str
    read_by_user_id: str | None = None
    read_by_customer_id: str | None = None
    conversation_id: str | None = None
    position: int | None = None


@dataclass(frozen=True, slots=True)
class TypingIndicatorEvent:
    id: str
    conversation_id: str
    is_typing: bool
    started_at: str
    expires_at: str
    user_id: str | None = None
    customer_id: str | None = None
    #: ``INSERT``, ``UPDATE`` or ``DELETE`` (a deleted indicator is never typing).
    change: ChangeType = "INSERT"
    position: int | None = None


@dataclass(frozen=True, slots=True)
class DeliveryStatusEvent:
    id: str
    message_id: str
    status: Literal["sent", "delivered", "read", "failed"]
    recipient_type: Literal["customer", "staff"]
    recipient_id: str
    delivered_at: str | None = None
    read_at: str | None = None
    failed_reason: str | None = None
    conversation_id: str | None = None
    change: ChangeType = "INSERT"
    position: int | None = None


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    id: str
    status: Literal["online", "away", "offline"]
    last_seen_at: str
    user_id: str | None = None
    customer_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    change: ChangeType = "INSERT"
    position: int | None = None


ConversationStatus = Literal["open", "pending", "resolved", "closed"]


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """A conversation's row as the change feed carries it: what a conversation list shows."""

    id: str
    customer_id: str
    status: ConversationStatus
    created_at: str
    updated_at: str
    subject: str | None = None
    #: The staff user it is assigned to; None: unassigned.
    assigned_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationEvent:
    """A conversation created (``INSERT``), changed (``UPDATE``: status, assignee, subject) or
    deleted (``DELETE``, with its last row), wherever the change was made.

    The staff and customer messages topics carry them (``on_conversation``), so a list and its
    counts can follow without polling; ``previous`` is the row before an ``UPDATE``.
    """

    type: ChangeType
    conversation: ConversationRow
    previous: ConversationRow | None = None
    position: int | None = None


Event = (
    MessageEvent
    | ReadReceiptEvent
    | TypingIndicatorEvent
    | DeliveryStatusEvent
    | PresenceEvent
    | ConversationEvent
)


@dataclass(frozen=True, slots=True)
class RejoinEvent:
    """A subscription joined again after a reconnect (or a channel crash), and changes flow.

    Not sent for the first join. ``complete`` is True when every change since the last position
    the subscription saw was replayed before this event (they reached the other handlers
    first); False when some are lost (older than the server's retention, docs/changes.md
    "Resuming"): reload what the UI shows, as after ``HistoryLostError``. ``topic`` is the
    channel (``conversation:<id>``, ``staff:<id>:messages``…), ``conversation_id`` set on a
    conversation's or its presence's channel; ``position`` is where the subscription carries
    on live from.
    """

    topic: str
    complete: bool
    conversation_id: str | None = None
    position: int | None = None


def typing_key(event: TypingIndicatorEvent) -> str:
    """Whose typing in which conversation: one indicator at a time per participant."""
    return f"{event.conversation_id}:{event.user_id or event.customer_id or event.id}"


class TypingTransitions:
    """Typing changes as a UI wants them: one ``is_typing=True`` when a participant starts, one
    ``is_typing=False`` when they stop, per burst.

    The feed carries more: a refresh per few seconds while typing continues (``UPDATE``, still
    typing), the stop (``UPDATE``: the helper's, or the server's when the message is sent) and
    the row's deletion at expiry (``DELETE``). :meth:`accept` lets through only what changes
    whether the participant types.
    """

    __slots__ = ("_typing",)

    def __init__(self) -> None:
        self._typing: set[str] = set()

    def accept(self, event: TypingIndicatorEvent) -> bool:
        """Whether ``event`` changes whether its participant types (then it is remembered)."""
        key = typing_key(event)
        if event.is_typing:
            if key in self._typing:
                return False
            self._typing.add(key)
            return True
        if key not in self._typing:
            return False
        self._typing.discard(key)
        return True

    def clear(self) -> None:
        self._typing.clear()


def _opt(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    return None if value is None else str(value)


_STATUSES = ("open", "pending", "resolved", "closed")


def _conversation(row: dict[str, Any]) -> ConversationRow:
    status = row["status"]
    if status not in _STATUSES:
        raise ValueError(f"unexpected conversation status: {status!r}")
    return ConversationRow(
        id=str(row["id"]),
        customer_id=str(row["customer_id"]),
        status=status,
        created_at=str(row["created_at"]),
        updated_at=str(row["updated_at"]),
        subject=_opt(row, "subject"),
        assigned_user_id=_opt(row, "assigned_user_id"),
    )


def _previous(row: Any) -> ConversationRow | None:
    """The row before an update when the change carries a readable one (it is optional)."""
    if not isinstance(row, dict):
        return None
    try:
        return _conversation(row)
    except (KeyError, TypeError, ValueError):
        return None


def parse_timestamp(value: str) -> datetime:
    """Parse the feed's timestamps (ISO 8601, possibly without an offset, then UTC)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def event_from_change(data: dict[str, Any], *, now: datetime | None = None) -> Event | None:
    """The typed event for one ``postgres_changes`` ``data`` object, or None for other tables."""
    table = data.get("table")
    change: ChangeType = data.get("type", "INSERT")
    deleted = change == "DELETE"
    row: dict[str, Any] = (data.get("old_record") if deleted else data.get("record")) or {}
    position = data.get("position")
    if not isinstance(position, int):
        position = None
    if table == "customer_messages":
        if deleted:
            return None
        return MessageEvent(
            id=str(row["id"]),
            conversation_id=str(row["conversation_id"]),
            content=str(row.get("content", "")),
            sender_type=row["sender_type"],
            sender_id=str(row["sender_id"]),
            created_at=str(row["created_at"]),
            attachments=tuple(row.get("attachments") or ()),
            client_message_id=_opt(row, "client_message_id"),
            position=position,
            edited_at=_opt(row, "edited_at"),
            deleted_at=_opt(row, "deleted_at"),
            change=change,
        )
    if table == "message_read_receipts":
        if deleted:
            return None
        return ReadReceiptEvent(
            id=str(row["id"]),
            message_id=str(row["message_id"]),
            read_at=str(row["read_at"]),
            read_by_user_id=_opt(row, "read_by_user_id"),
            read_by_customer_id=_opt(row, "read_by_customer_id"),
            conversation_id=_opt(row, "conversation_id"),
            position=position,
        )
    if table == "message_typing_indicators":
        expires_at = str(row["expires_at"])
        typing = bool(row.get("is_typing")) and not deleted
        if typing:
            current = now or datetime.now(UTC)
            try:
                typing = parse_timestamp(expires_at) > current
            except ValueError:
                pass
        return TypingIndicatorEvent(
            id=str(row["id"]),
            conversation_id=str(row["conversation_id"]),
            is_typing=typing,
            started_at=str(row["started_at"]),
            expires_at=expires_at,
            user_id=_opt(row, "user_id"),
            customer_id=_opt(row, "customer_id"),
            change=change,
            position=position,
        )
    if table == "message_delivery_status":
        return DeliveryStatusEvent(
            id=str(row["id"]),
            message_id=str(row["message_id"]),
            status=row["status"],
            recipient_type=row["recipient_type"],
            recipient_id=str(row["recipient_id"]),
            delivered_at=_opt(row, "delivered_at"),
            read_at=_opt(row, "read_at"),
            failed_reason=_opt(row, "failed_reason"),
            conversation_id=_opt(row, "conversation_id"),
            change=change,
            position=position,
        )
    if table == "user_presence":
        return PresenceEvent(
            id=str(row["id"]),
            status="offline" if deleted else row["status"],
            last_seen_at=str(row["last_seen_at"]),
            user_id=_opt(row, "user_id"),
            customer_id=_opt(row, "customer_id"),
            metadata=dict(row.get("metadata") or {}),
            change=change,
            position=position,
        )
    if table == "conversations":
        return ConversationEvent(
            type=change,
            conversation=_conversation(row),
            previous=_previous(data.get("old_record")) if change == "UPDATE" else None,
            position=position,
        )
    return None
