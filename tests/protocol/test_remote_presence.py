"""The replica of other processes' presences: diffs move it, syncs replace a part, deaths
leave, and what clients must be told is exactly the difference."""

from __future__ import annotations

from typing import Any

from realtime_messaging.protocol.presence import RemotePresence, well_formed


def meta(ref: str, **fields: Any) -> dict[str, Any]:
    return {"phx_ref": ref, **fields}


def test_diffs_from_a_process_move_its_part_on() -> None:
    remote = RemotePresence()
    remote.apply("n1", "t", {"a": {"metas": [meta("1", x=1)]}}, {})
    remote.apply("n2", "t", {"b": {"metas": [meta("2")]}}, {})
    # A re-track: the new meta joins, the old one leaves, in one diff.
    remote.apply(
        "n1",
        "t",
        {"a": {"metas": [meta("3", x=2, phx_ref_prev="1")]}},
        {"a": {"metas": [meta("1", x=1)]}},
    )
    state = remote.add_to("t", {"mine": {"metas": [meta("0")]}})
    assert state == {
        "mine": {"metas": [meta("0")]},
        "a": {"metas": [meta("3", x=2, phx_ref_prev="1")]},
        "b": {"metas": [meta("2")]},
    }
    remote.apply("n2", "t", {}, {"b": {"metas": [meta("2")]}})
    assert remote.nodes() == {"n1"}


def test_a_sync_replaces_a_part_and_says_what_changed() -> None:
    remote = RemotePresence()
    remote.apply("n1", "t", {"a": {"metas": [meta("1")]}, "b": {"metas": [meta("2")]}}, {})
    diff = remote.replace("n1", "t", {"b": {"metas": [meta("2")]}, "c": {"metas": [meta("4")]}})
    assert diff is not None
    assert diff.joins == {"c": {"metas": [meta("4")]}}
    assert diff.leaves == {"a": {"metas": [meta("1")]}}
    assert (
        remote.replace("n1", "t", {"b": {"metas": [meta("2")]}, "c": {"metas": [meta("4")]}})
        is None
    )
    # An empty part empties the process's share of the topic.
    diff = remote.replace("n1", "t", {})
    assert diff is not None and diff.joins == {} and sorted(diff.leaves) == ["b", "c"]
    assert remote.add_to("t", {}) == {}


def test_a_dead_process_leaves_every_topic_it_was_in() -> None:
    remote = RemotePresence()
    remote.apply("dead", "t1", {"a": {"metas": [meta("1")]}}, {})
    remote.apply("dead", "t2", {"a": {"metas": [meta("2")]}, "b": {"metas": [meta("3")]}}, {})
    remote.apply("alive", "t1", {"c": {"metas": [meta("4")]}}, {})
    diffs = {diff.topic: diff for diff in remote.drop_node("dead")}
    assert sorted(diffs) == ["t1", "t2"]
    assert diffs["t1"].leaves == {"a": {"metas": [meta("1")]}}
    assert sorted(diffs["t2"].leaves) == ["a", "b"]
    assert remote.add_to("t1", {}) == {"c": {"metas": [meta("4")]}}
    assert remote.drop_node("dead") == []


def test_what_another_process_sends_is_checked_before_it_is_kept() -> None:
    assert well_formed({"a": {"metas": [meta("1")]}}) is not None
    assert well_formed({}) == {}
    for bad in (
        None,
        [],
        {"a": []},
        {"a": {"metas": {}}},
        {"a": {"metas": [{"x": 1}]}},
        {"a": {"metas": [{"phx_ref": 1}]}},
        {1: {"metas": []}},
    ):
        assert well_formed(bad) is None, bad
