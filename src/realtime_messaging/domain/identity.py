"""Who a token says the caller is, and which topics that identity may join.

Pure: the caller resolves tokens and looks up conversation owners; these functions decide.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from uuid import UUID

# Only the canonical hyphenated spelling: uuid.UUID() also takes signs, blanks and underscores.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Kind(enum.Enum):
    ANON = "anon"
    AUTHENTICATED = "authenticated"  # a valid JWT that names no staff user or customer
    STAFF = "staff"
    CUSTOMER = "customer"
    SERVICE = "service_role"


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified caller. ``expires_at`` is a Unix time; ``token_hash`` marks a portal token."""

    kind: Kind
    user_id: UUID | None = None
    customer_id: UUID | None = None
    expires_at: float | None = None
    token_hash: str | None = None

    @property
    def is_staff_like(self) -> bool:
        """Staff and the service role see every conversation."""
        return self.kind is Kind.STAFF or self.kind is Kind.SERVICE


class TopicKind(enum.Enum):
    CUSTOMER = "customer"
    STAFF = "staff"
    CONVERSATION = "conversation"
    PRESENCE = "presence"
    PUBLIC = "public"


@dataclass(frozen=True, slots=True)
class Topic:
    """A sub-topic (without ``realtime:``) parsed into what it is about."""

    kind: TopicKind
    subject: UUID | None = None
    malformed: bool = False


def _uuid(text: str) -> UUID | None:
    return uuid.UUID(text) if _UUID.fullmatch(text) else None


def parse_topic(name: str) -> Topic:
    """``customer:<id>:messages``, ``staff:<id>:messages``, ``conversation:<id>``,
    ``presence:<id>``; anything else is a public broadcast/presence channel.

    A reserved prefix with a bad UUID is *malformed*: nobody may join it, so that a typo can
    never turn a private topic into a public one.
    """
    parts = name.split(":")
    head = parts[0]
    if head in ("customer", "staff"):
        ok = len(parts) == 3 and parts[2] == "messages"
        subject = _uuid(parts[1]) if ok else None
        kind = TopicKind.CUSTOMER if head == "customer" else TopicKind.STAFF
        return Topic(kind, subject, malformed=subject is None)
    if head in ("conversation", "presence"):
        subject = _uuid(parts[1]) if len(parts) == 2 else None
        kind = TopicKind.CONVERSATION if head == "conversation" else TopicKind.PRESENCE
        return Topic(kind, subject, malformed=subject is None)
    return Topic(TopicKind.PUBLIC)


def needs_conversation_owner(topic: Topic) -> bool:
    """Whether :func:`may_join` needs the owner of ``topic.subject`` to decide."""
    return topic.kind in (TopicKind.CONVERSATION, TopicKind.PRESENCE) and not topic.malformed


def may_join(identity: Identity, topic: Topic, conversation_owner: UUID | None = None) -> bool:
    """DESIGN 4.3: who may join which topic. ``conversation_owner`` is the customer owning the
    conversation named by a conversation/presence topic (``None`` when it does not exist)."""
    if topic.malformed:
        return False
    if topic.kind is TopicKind.PUBLIC:
        return True
    if identity.kind is Kind.SERVICE:
        return True
    if topic.kind is TopicKind.STAFF:
        return identity.kind is Kind.STAFF and identity.user_id == topic.subject
    if topic.kind is TopicKind.CUSTOMER:
        if identity.kind is Kind.STAFF:
            return True
        return identity.kind is Kind.CUSTOMER and identity.customer_id == topic.subject
    # conversation / presence
    if conversation_owner is None:
        return False
    if identity.kind is Kind.STAFF:
        return True
    return identity.kind is Kind.CUSTOMER and identity.customer_id == conversation_owner
