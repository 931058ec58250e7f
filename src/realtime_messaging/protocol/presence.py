"""Phoenix presence for one process: who is tracked on which topic, and the diffs to push.

A presence is keyed by the channel's ``presence.key``; each tracking channel contributes one
meta carrying a unique ``phx_ref``. Pure: refs come from a factory the caller supplies. The
"topic" of a presence here is its scope (:func:`presence_scope`): a topic's private channels
share one presence and its public channels another.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson

Meta = dict[str, Any]
State = dict[str, dict[str, list[Meta]]]

#: The private channels of a topic have a presence of their own, apart from its public
#: channels' (as on Supabase, where a private channel is another topic): kept under this prefix,
#: which no client's topic can start with (a join's topic starts with ``realtime:``).
PRIVATE_SCOPE = "private:"


def presence_scope(topic: str, private: bool) -> str:
    """Where the presence of a channel on ``topic`` is kept: the topic itself for a public
    channel, the topic under :data:`PRIVATE_SCOPE` for a private one."""
    return PRIVATE_SCOPE + topic if private else topic


def scope_topic(scope: str) -> tuple[str, bool]:
    """The topic of a presence scope, and whether it is the private channels'."""
    if scope.startswith(PRIVATE_SCOPE):
        return scope[len(PRIVATE_SCOPE) :], True
    return scope, False


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


def _by_ref(state: State) -> dict[str, tuple[str, Meta]]:
    return {
        meta["phx_ref"]: (key, meta)
        for key, entry in state.items()
        for meta in entry["metas"]
        if isinstance(meta.get("phx_ref"), str)
    }


def _grouped(entries: dict[str, tuple[str, Meta]]) -> State:
    result: State = {}
    for key, meta in entries.values():
        result.setdefault(key, {"metas": []})["metas"].append(meta)
    return result


def well_formed(state: Any) -> State | None:
    """``state`` when it has the shape of a presence state (key -> {"metas": [meta...]}, each
    meta a map with a string ``phx_ref``), else ``None``: what another process sends is checked
    before it is kept."""
    if not isinstance(state, dict):
        return None
    for key, entry in state.items():
        if not isinstance(key, str) or not isinstance(entry, dict):
            return None
        metas = entry.get("metas")
        if not isinstance(metas, list):
            return None
        for meta in metas:
            if not isinstance(meta, dict) or not isinstance(meta.get("phx_ref"), str):
                return None
    return state


class RemotePresence:
    """The presences other processes track, by topic and by process (node).

    Each process owns its metas; this replica keeps what the others last said about theirs:
    a full state per (topic, node) from a sync, moved on by that node's diffs. Replacing a
    node's state or dropping a node yields the diff this process's clients must see. Pure.
    """

    def __init__(self) -> None:
        #: topic -> node -> phx_ref -> (key, meta)
        self._topics: dict[str, dict[str, dict[str, tuple[str, Meta]]]] = {}

    def apply(self, node: str, topic: str, joins: State, leaves: State) -> None:
        """Move a node's part of a topic on by one of its diffs."""
        entries = self._topics.setdefault(topic, {}).setdefault(node, {})
        for ref in _by_ref(leaves):
            entries.pop(ref, None)
        entries.update(_by_ref(joins))
        self._prune(topic, node)

    def replace(self, node: str, topic: str, state: State) -> Diff | None:
        """Set a node's whole part of a topic; the diff from what was known, if any."""
        nodes = self._topics.setdefault(topic, {})
        old = nodes.get(node, {})
        new = _by_ref(state)
        nodes[node] = new
        self._prune(topic, node)
        joins = {ref: entry for ref, entry in new.items() if ref not in old}
        leaves = {ref: entry for ref, entry in old.items() if ref not in new}
        if not joins and not leaves:
            return None
        return Diff(topic, _grouped(joins), _grouped(leaves))

    def drop_node(self, node: str) -> list[Diff]:
        """Forget a process that died: the leaves of every meta it had."""
        diffs = []
        for topic in list(self._topics):
            entries = self._topics[topic].pop(node, None)
            if not self._topics[topic]:
                del self._topics[topic]
            if entries:
                diffs.append(Diff(topic, {}, _grouped(entries)))
        return diffs

    def drop_topic(self, topic: str) -> None:
        """Forget a topic this process no longer follows."""
        self._topics.pop(topic, None)

    def nodes(self) -> set[str]:
        """Every process with a meta known here."""
        return {node for nodes in self._topics.values() for node in nodes}

    def add_to(self, topic: str, state: State) -> State:
        """``state`` (this process's own) with every other process's metas of ``topic``."""
        for entries in self._topics.get(topic, {}).values():
            for key, meta in entries.values():
                state.setdefault(key, {"metas": []})["metas"].append(meta)
        return state

    def _prune(self, topic: str, node: str) -> None:
        nodes = self._topics[topic]
        if not nodes[node]:
            del nodes[node]
            if not nodes:
                del self._topics[topic]
