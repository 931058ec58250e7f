"""Phoenix presence: tracked metas, ``presence_state`` and ``presence_diff`` payloads.

Reference section 5: every meta carries a unique ``phx_ref`` (realtime-py pops it without a
default); a re-track with a different payload is a leave of the old meta plus a join of the new
one carrying ``phx_ref_prev``; an identical re-track is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from realtime_messaging.protocol.presence import (
    Diff,
    PresenceRegistry,
    State,
    presence_scope,
    scope_topic,
)

ROOM = "realtime:room1"


def refs(prefix: str = "X") -> Callable[[], str]:
    """A phx_ref factory: X1, X2, ..."""
    counter = count(1)
    return lambda: f"{prefix}{next(counter)}"


def registry() -> PresenceRegistry:
    return PresenceRegistry(refs())


# -- track ----------------------------------------------------------------------------------


def test_first_track_is_a_join_of_the_payload_plus_phx_ref() -> None:
    presence = registry()
    diff = presence.track(ROOM, "channel-a", "user-1", {"name": "Alice"})
    assert diff == Diff(ROOM, {"user-1": {"metas": [{"name": "Alice", "phx_ref": "X1"}]}}, {})
    assert diff.payload() == {
        "joins": {"user-1": {"metas": [{"name": "Alice", "phx_ref": "X1"}]}},
        "leaves": {},
    }


def test_tracked_presence_is_in_the_state_grouped_by_key() -> None:
    presence = registry()
    presence.track(ROOM, "channel-a", "user-1", {"name": "Alice"})
    assert presence.state(ROOM) == {"user-1": {"metas": [{"phx_ref": "X1", "name": "Alice"}]}}
    assert presence.tracked(ROOM, "channel-a")
    assert not presence.tracked(ROOM, "channel-b")
    assert not presence.tracked("realtime:other", "channel-a")


def test_two_channels_with_the_same_key_share_one_entry_with_two_metas() -> None:
    presence = registry()
    presence.track(ROOM, "tab-1", "user-1", {"device": "laptop"})
    presence.track(ROOM, "tab-2", "user-1", {"device": "phone"})
    presence.track(ROOM, "tab-3", "user-2", {"device": "tablet"})
    assert presence.state(ROOM) == {
        "user-1": {
            "metas": [
                {"device": "laptop", "phx_ref": "X1"},
                {"device": "phone", "phx_ref": "X2"},
            ]
        },
        "user-2": {"metas": [{"device": "tablet", "phx_ref": "X3"}]},
    }


def test_retrack_with_a_different_payload_is_a_leave_and_a_join_with_phx_ref_prev() -> None:
    presence = registry()
    presence.track(ROOM, "channel-a", "k", {"name": "A"})
    diff = presence.track(ROOM, "channel-a", "k", {"name": "A2"})
    assert diff is not None
    assert diff.payload() == {
        "joins": {"k": {"metas": [{"phx_ref": "X2", "phx_ref_prev": "X1", "name": "A2"}]}},
        "leaves": {"k": {"metas": [{"phx_ref": "X1", "name": "A"}]}},
    }
    assert presence.state(ROOM) == {
        "k": {"metas": [{"phx_ref": "X2", "phx_ref_prev": "X1", "name": "A2"}]}
    }


def test_identical_retrack_is_a_no_op() -> None:
    presence = registry()
    presence.track(ROOM, "channel-a", "k", {"name": "A", "tags": [1, 2]})
    assert presence.track(ROOM, "channel-a", "k", {"name": "A", "tags": [1, 2]}) is None
    assert presence.state(ROOM) == {
        "k": {"metas": [{"phx_ref": "X1", "name": "A", "tags": [1, 2]}]}
    }


def test_retrack_that_changes_a_value_type_is_not_identical() -> None:
    # JSON true and 1 are different values, and the real server (comparing Elixir maps) sees
    # a change; only Python says True == 1.
    presence = registry()
    presence.track(ROOM, "channel-a", "k", {"online": 1})
    diff = presence.track(ROOM, "channel-a", "k", {"online": True})
    assert diff is not None
    assert diff.joins == {"k": {"metas": [{"online": True, "phx_ref": "X2", "phx_ref_prev": "X1"}]}}
    assert presence.state(ROOM) == {
        "k": {"metas": [{"online": True, "phx_ref": "X2", "phx_ref_prev": "X1"}]}
    }


def test_retrack_under_a_new_key_leaves_the_old_key() -> None:
    presence = registry()
    presence.track(ROOM, "channel-a", "old", {"n": 1})
    diff = presence.track(ROOM, "channel-a", "new", {"n": 1})
    assert diff == Diff(
        ROOM,
        {"new": {"metas": [{"n": 1, "phx_ref": "X2", "phx_ref_prev": "X1"}]}},
        {"old": {"metas": [{"n": 1, "phx_ref": "X1"}]}},
    )
    assert list(presence.state(ROOM)) == ["new"]


def test_retrack_does_not_change_the_meta_sent_earlier() -> None:
    presence = registry()
    first = presence.track(ROOM, "channel-a", "k", {"name": "A"})
    presence.track(ROOM, "channel-a", "k", {"name": "B"})
    assert first is not None
    assert first.joins == {"k": {"metas": [{"name": "A", "phx_ref": "X1"}]}}


# -- phx_ref on every meta ------------------------------------------------------------------


def test_empty_payload_gets_a_meta_with_only_phx_ref() -> None:
    presence = registry()
    diff = presence.track(ROOM, "channel-a", "k", {})
    assert diff is not None
    assert diff.joins == {"k": {"metas": [{"phx_ref": "X1"}]}}


def test_non_object_payload_gets_a_meta_with_only_phx_ref() -> None:
    presence = registry()
    diff = presence.track(ROOM, "channel-a", "k", None)
    assert diff is not None
    assert diff.joins == {"k": {"metas": [{"phx_ref": "X1"}]}}


def test_client_cannot_choose_its_phx_ref() -> None:
    presence = registry()
    presence.track(ROOM, "channel-a", "k", {"phx_ref": "X1"})
    presence.track(ROOM, "channel-b", "k", {"phx_ref": "X1"})
    metas = presence.state(ROOM)["k"]["metas"]
    assert [m["phx_ref"] for m in metas] == ["X1", "X2"]


def test_state_and_diffs_are_json() -> None:
    presence = registry()
    diff = presence.track(ROOM, "channel-a", "k", {"name": "Alice", "at": 1.5, "tags": ["x"]})
    assert diff is not None
    assert orjson.loads(orjson.dumps(diff.payload())) == diff.payload()
    assert orjson.loads(orjson.dumps(presence.state(ROOM))) == presence.state(ROOM)


# -- untrack --------------------------------------------------------------------------------


def test_untrack_is_a_leave_of_the_tracked_meta() -> None:
    presence = registry()
    presence.track(ROOM, "channel-a", "k", {"name": "A"})
    diff = presence.untrack(ROOM, "channel-a")
    assert diff == Diff(ROOM, {}, {"k": {"metas": [{"name": "A", "phx_ref": "X1"}]}})
    assert diff.payload() == {
        "joins": {},
        "leaves": {"k": {"metas": [{"name": "A", "phx_ref": "X1"}]}},
    }
    assert presence.state(ROOM) == {}
    assert not presence.tracked(ROOM, "channel-a")


def test_untrack_of_one_channel_keeps_the_others() -> None:
    presence = registry()
    presence.track(ROOM, "tab-1", "user-1", {"device": "laptop"})
    presence.track(ROOM, "tab-2", "user-1", {"device": "phone"})
    presence.untrack(ROOM, "tab-1")
    assert presence.state(ROOM) == {"user-1": {"metas": [{"device": "phone", "phx_ref": "X2"}]}}


def test_untrack_without_a_presence_is_nothing() -> None:
    presence = registry()
    assert presence.untrack(ROOM, "channel-a") is None
    presence.track(ROOM, "channel-b", "k", {})
    assert presence.untrack(ROOM, "channel-a") is None
    assert presence.untrack(ROOM, "channel-b") is not None
    assert presence.untrack(ROOM, "channel-b") is None


def test_track_after_untrack_is_a_fresh_join() -> None:
    presence = registry()
    presence.track(ROOM, "channel-a", "k", {"n": 1})
    presence.untrack(ROOM, "channel-a")
    diff = presence.track(ROOM, "channel-a", "k", {"n": 1})
    assert diff == Diff(ROOM, {"k": {"metas": [{"n": 1, "phx_ref": "X2"}]}}, {})


# -- topics ---------------------------------------------------------------------------------


def test_state_of_a_topic_nobody_tracks_is_empty() -> None:
    assert registry().state(ROOM) == {}


def test_topics_are_independent() -> None:
    presence = registry()
    presence.track(ROOM, "channel-a", "k", {"room": 1})
    diff = presence.track("realtime:room2", "channel-a", "k", {"room": 2})
    assert diff is not None
    assert diff.topic == "realtime:room2"
    assert diff.leaves == {}
    assert presence.state(ROOM) == {"k": {"metas": [{"room": 1, "phx_ref": "X1"}]}}
    assert presence.state("realtime:room2") == {"k": {"metas": [{"room": 2, "phx_ref": "X2"}]}}


# -- property: the diffs a client receives rebuild the server's state ----------------------


def apply_diff(state: dict[str, list[dict[str, Any]]], diff: Diff) -> None:
    """Phoenix ``syncDiff``: remove left metas by phx_ref, then add joined metas."""
    for key, entry in diff.leaves.items():
        gone = {m["phx_ref"] for m in entry["metas"]}
        state[key] = [m for m in state.get(key, []) if m["phx_ref"] not in gone]
        if not state[key]:
            del state[key]
    for key, entry in diff.joins.items():
        state.setdefault(key, []).extend(entry["metas"])


def as_lists(state: State) -> dict[str, list[dict[str, Any]]]:
    return {key: entry["metas"] for key, entry in state.items()}


def by_ref(state: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {key: sorted(metas, key=lambda m: m["phx_ref"]) for key, metas in state.items()}


operations = st.lists(
    st.tuples(
        st.integers(0, 3),  # owner (channel)
        st.sampled_from(["track", "untrack"]),
        st.dictionaries(st.sampled_from("abc"), st.integers(0, 2), max_size=2),
    ),
    max_size=25,
)


@given(operations)
def test_diffs_applied_in_order_rebuild_the_state(
    ops: list[tuple[int, str, dict[str, int]]],
) -> None:
    presence = registry()
    client: dict[str, list[dict[str, Any]]] = {}
    model: dict[int, dict[str, int]] = {}
    for owner, action, payload in ops:
        key = f"user-{owner % 2}"
        if action == "track":
            diff = presence.track(ROOM, owner, key, payload)
            assert (diff is None) == (model.get(owner) == payload)
            model[owner] = payload
        else:
            diff = presence.untrack(ROOM, owner)
            assert (diff is None) == (owner not in model)
            model.pop(owner, None)
        if diff is not None:
            apply_diff(client, diff)
        state = presence.state(ROOM)
        assert by_ref(client) == by_ref(as_lists(state))
        metas = [m for entry in state.values() for m in entry["metas"]]
        refs_seen = [m["phx_ref"] for m in metas]
        assert len(refs_seen) == len(set(refs_seen)) == len(model)
        stripped = sorted(
            (sorted((k, v) for k, v in m.items() if not k.startswith("phx_")) for m in metas),
        )
        assert stripped == sorted(sorted(p.items()) for p in model.values())


@given(st.text(min_size=1).map(lambda t: "realtime:" + t), st.booleans())
def test_a_scope_gives_back_its_topic_and_kind(topic: str, private: bool) -> None:
    assert scope_topic(presence_scope(topic, private)) == (topic, private)


def test_the_private_and_public_presences_of_a_topic_are_apart() -> None:
    presence = registry()
    presence.track(presence_scope(ROOM, True), "owner-1", "insider", {})
    presence.track(presence_scope(ROOM, False), "owner-2", "outsider", {})
    assert list(presence.state(presence_scope(ROOM, True))) == ["insider"]
    assert list(presence.state(presence_scope(ROOM, False))) == ["outsider"]
    assert presence_scope(ROOM, False) == ROOM  # public presence keeps the topic's own name
