"""Who may join which topic (DESIGN 4.3).

| topic                             | who may join                |
|-----------------------------------|-----------------------------|
| ``customer:<customer_id>:messages`` | that customer; staff      |
| ``staff:<user_id>:messages``        | that staff user           |
| ``conversation:<conversation_id>``  | its customer; staff       |
| ``presence:<conversation_id>``      | its customer; staff       |
| anything else                       | anyone, even the anon key |

The service role may join every well-formed topic; a reserved topic whose id is not a UUID
is malformed and nobody may join it, so a typo never turns a private topic into a public one.
"""

from __future__ import annotations

import uuid
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime_messaging.domain.identity import (
    Identity,
    Kind,
    Topic,
    TopicKind,
    may_join,
    needs_conversation_owner,
    parse_topic,
)

ALICE = UUID("6f1c2a1e-8e0a-4a57-9a7e-1f4b0f9c0a01")  # a customer
BOB = UUID("0b8e6f5a-2d3c-4e1f-8a9b-7c6d5e4f3a02")  # another customer
SAM = UUID("3c2b1a09-8f7e-4d6c-b5a4-93827160f503")  # a staff user
TESS = UUID("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c04")  # another staff user
CONVERSATION = UUID("d4c3b2a1-0f9e-4d8c-a7b6-c5d4e3f2a105")  # owned by ALICE

ANON = Identity(Kind.ANON)
AUTHENTICATED = Identity(Kind.AUTHENTICATED, user_id=UUID(int=7))
SERVICE = Identity(Kind.SERVICE)
STAFF_SAM = Identity(Kind.STAFF, user_id=SAM)
STAFF_TESS = Identity(Kind.STAFF, user_id=TESS)
CUSTOMER_ALICE = Identity(Kind.CUSTOMER, customer_id=ALICE)
CUSTOMER_BOB = Identity(Kind.CUSTOMER, customer_id=BOB)

EVERYONE = {
    "anon": ANON,
    "authenticated": AUTHENTICATED,
    "service": SERVICE,
    "staff Sam": STAFF_SAM,
    "staff Tess": STAFF_TESS,
    "customer Alice": CUSTOMER_ALICE,
    "customer Bob": CUSTOMER_BOB,
}


def allowed(topic_name: str, owner: UUID | None = None) -> set[str]:
    """The names of everyone who may join ``topic_name``."""
    topic = parse_topic(topic_name)
    return {name for name, who in EVERYONE.items() if may_join(who, topic, owner)}


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"customer:{ALICE}:messages", Topic(TopicKind.CUSTOMER, ALICE)),
        (f"staff:{SAM}:messages", Topic(TopicKind.STAFF, SAM)),
        (f"conversation:{CONVERSATION}", Topic(TopicKind.CONVERSATION, CONVERSATION)),
        (f"presence:{CONVERSATION}", Topic(TopicKind.PRESENCE, CONVERSATION)),
        ("room1", Topic(TopicKind.PUBLIC)),
        ("lobby:chat", Topic(TopicKind.PUBLIC)),
        ("customers", Topic(TopicKind.PUBLIC)),
        ("conversations:list", Topic(TopicKind.PUBLIC)),
        (f"messages:{ALICE}", Topic(TopicKind.PUBLIC)),
    ],
)
def test_parse_topic(name: str, expected: Topic) -> None:
    assert parse_topic(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "customer",
        "customer:",
        "customer:not-a-uuid:messages",
        f"customer:{ALICE}",
        f"customer:{ALICE}:",
        f"customer:{ALICE}:typing",
        f"customer:{ALICE}:messages:extra",
        f"customer::{ALICE}:messages",
        "staff",
        "staff:sam:messages",
        f"staff:{SAM}",
        f"staff:{SAM}:messages:extra",
        "conversation",
        "conversation:",
        "conversation:42",
        f"conversation:{CONVERSATION}:extra",
        "presence",
        "presence:",
        f"presence:{str(CONVERSATION)[:-1]}",
        f"presence:{CONVERSATION}:x",
    ],
)
def test_reserved_topic_with_a_bad_id_or_shape_is_malformed(name: str) -> None:
    topic = parse_topic(name)
    assert topic.malformed
    assert topic.kind is not TopicKind.PUBLIC


@pytest.mark.parametrize(
    "text",
    [
        "+" + "0" * 31,  # int(text, 16) accepts a sign ...
        " " + "f" * 31,  # ... surrounding whitespace ...
        "0" * 31 + "\n",
        "0_" * 10 + "0" * 12,  # ... and digit separators; none of these is a UUID
        "-" * 4 + "0" * 32,
    ],
)
def test_reserved_topic_with_a_text_python_reads_as_a_number_is_malformed(text: str) -> None:
    for name in (f"customer:{text}:messages", f"conversation:{text}", f"presence:{text}"):
        assert parse_topic(name).malformed, name


@given(st.text())
def test_parse_topic_never_raises(name: str) -> None:
    topic = parse_topic(name)
    assert topic.malformed is (topic.subject is None and topic.kind is not TopicKind.PUBLIC)


# -- who may join ---------------------------------------------------------------------------


def test_customer_topic_is_for_that_customer_staff_and_service() -> None:
    assert allowed(f"customer:{ALICE}:messages") == {
        "customer Alice",
        "staff Sam",
        "staff Tess",
        "service",
    }


def test_staff_topic_is_for_that_staff_user_and_service() -> None:
    assert allowed(f"staff:{SAM}:messages") == {"staff Sam", "service"}


@pytest.mark.parametrize("head", ["conversation", "presence"])
def test_conversation_topics_are_for_the_owning_customer_staff_and_service(head: str) -> None:
    assert allowed(f"{head}:{CONVERSATION}", owner=ALICE) == {
        "customer Alice",
        "staff Sam",
        "staff Tess",
        "service",
    }


@pytest.mark.parametrize("head", ["conversation", "presence"])
def test_conversation_that_does_not_exist_is_for_the_service_role_only(head: str) -> None:
    assert allowed(f"{head}:{CONVERSATION}", owner=None) == {"service"}


@pytest.mark.parametrize("name", ["room1", "lobby:chat", "support-queue", "a:b:c:d"])
def test_any_other_topic_is_public(name: str) -> None:
    assert allowed(name) == set(EVERYONE)


@pytest.mark.parametrize(
    "name",
    [
        "customer:not-a-uuid:messages",
        f"customer:{ALICE}:typing",
        "staff:sam:messages",
        "conversation:42",
        f"presence:{CONVERSATION}:x",
    ],
)
def test_malformed_reserved_topic_is_for_nobody(name: str) -> None:
    assert allowed(name, owner=ALICE) == set()


def test_customer_without_a_customer_id_joins_no_customer_topic() -> None:
    nobody = Identity(Kind.CUSTOMER)
    assert not may_join(nobody, parse_topic(f"customer:{ALICE}:messages"))
    assert not may_join(nobody, parse_topic(f"conversation:{CONVERSATION}"), ALICE)


def test_staff_without_a_user_id_joins_no_staff_topic() -> None:
    assert not may_join(Identity(Kind.STAFF), parse_topic(f"staff:{SAM}:messages"))


def test_a_customer_id_does_not_open_the_staff_topic_of_the_same_uuid() -> None:
    same_id_customer = Identity(Kind.CUSTOMER, customer_id=SAM, user_id=SAM)
    assert not may_join(same_id_customer, parse_topic(f"staff:{SAM}:messages"))


def test_an_authenticated_user_id_does_not_count_as_a_customer_id() -> None:
    user = Identity(Kind.AUTHENTICATED, user_id=ALICE)
    assert not may_join(user, parse_topic(f"customer:{ALICE}:messages"))
    assert not may_join(user, parse_topic(f"conversation:{CONVERSATION}"), ALICE)


@given(st.text())
def test_the_anon_key_joins_exactly_the_public_topics(name: str) -> None:
    topic = parse_topic(name)
    assert may_join(ANON, topic, ALICE) is (topic.kind is TopicKind.PUBLIC)


@given(st.uuids(), st.uuids())
def test_a_customer_joins_a_conversation_exactly_when_it_owns_it(
    customer: uuid.UUID, owner: uuid.UUID
) -> None:
    topic = parse_topic(f"conversation:{CONVERSATION}")
    who = Identity(Kind.CUSTOMER, customer_id=customer)
    assert may_join(who, topic, owner) is (customer == owner)
    assert may_join(who, topic, customer)


# -- what the caller must look up -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "needed"),
    [
        (f"conversation:{CONVERSATION}", True),
        (f"presence:{CONVERSATION}", True),
        ("conversation:42", False),
        ("presence:", False),
        (f"customer:{ALICE}:messages", False),
        (f"staff:{SAM}:messages", False),
        ("room1", False),
    ],
)
def test_only_well_formed_conversation_topics_need_the_owner(name: str, needed: bool) -> None:
    assert needs_conversation_owner(parse_topic(name)) is needed


@pytest.mark.parametrize(
    ("who", "staff_like"),
    [
        (STAFF_SAM, True),
        (SERVICE, True),
        (CUSTOMER_ALICE, False),
        (AUTHENTICATED, False),
        (ANON, False),
    ],
)
def test_staff_and_service_role_are_staff_like(who: Identity, staff_like: bool) -> None:
    assert who.is_staff_like is staff_like
