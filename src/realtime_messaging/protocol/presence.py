"""Phoenix presence for one process: who is tracked on which topic, and the diffs to push.

A presence is keyed by the channel's ``presence.key``; each tracking channel contributes one
meta carrying a unique ``phx_ref``. Pure: refs come from a factory the caller supplies.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson

Meta = dict[str, Any]
State = dict[str, dict[str, list[Meta]]]


@dataclass(frozen=True, slots=True)
class Diff:
    """A ``presence_diff`` payload for one topic."""

    topic: str
    joins: State
    leaves: State

    def payload(self) -> dict[str, State]:
        return {"joins": self.joins, "leaves": self.leaves}


@dataclass(slots=True)
class _Entry:
    key: str
    meta: Meta
    payload: Any


@dataclass(slots=True)
class _Topic:
    by_owner: dict[Hashable, _Entry] = field(default_factory=dict)


class PresenceRegistry:
    """Tracked presences of every topic, by owner (one owner = one joined channel)."""

    def __init__(self, make_ref: Callable[[], str]) -> None:
        self._make_ref = make_ref
        self._topics: dict[str, _Topic] = {}

    def track(self, topic: str, owner: Hashable, key: str, payload: Any) -> Diff | None:
        """Track or re-track; ``None`` when nothing changed (identical payload)."""
        state = self._topics.setdefault(topic, _Topic())
        old = state.by_owner.get(owner)
        if old is not None and old.key == key and _same(old.payload, payload):
            return None
        meta: Meta = {**payload, "phx_ref": self._make_ref()} if isinstance(payload, dict) else {}
        if not meta:
            meta = {"phx_ref": self._make_ref()}
        leaves: State = {}
        if old is not None:
            meta["phx_ref_prev"] = old.meta["phx_ref"]
            leaves = {old.key: {"metas": [old.meta]}}
        state.by_owner[owner] = _Entry(key, meta, payload)
        return Diff(topic, {key: {"metas": [meta]}}, leaves)

    def untrack(self, topic: str, owner: Hashable) -> Diff | None:
        """Remove the owner's presence; ``None`` when it had none."""
        state = self._topics.get(topic)
        if state is None:
            return None
        old = state.by_owner.pop(owner, None)
        if not state.by_owner:
            del self._topics[topic]
        if old is None:
            return None
        return Diff(topic, {}, {old.key: {"metas": [old.meta]}})

    def state(self, topic: str) -> State:
        """The full ``presence_state`` of a topic: metas grouped by key."""
        result: State = {}
        topic_state = self._topics.get(topic)
        if topic_state is None:
            return result
        for entry in topic_state.by_owner.values():
            result.setdefault(entry.key, {"metas": []})["metas"].append(entry.meta)
        return result

    def tracked(self, topic: str, owner: Hashable) -> bool:
        topic_state = self._topics.get(topic)
        return topic_state is not None and owner in topic_state.by_owner


def _same(a: Any, b: Any) -> bool:
    """JSON equality, where ``1`` and ``true`` differ (Python's ``==`` says they are equal)."""
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        b, option=orjson.OPT_SORT_KEYS
    )
