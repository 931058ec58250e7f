"""Phoenix presence across processes: every process shows the metas tracked on all of them.

Each process owns the metas of its own channels (:class:`PresenceRegistry`) and keeps a replica
of the others' (:class:`RemotePresence`) for the topics it has members of. The replica moves
on three kinds of traffic, all carried by the broker:

- **Diffs.** The ``presence_diff`` a process publishes on a topic reaches every process with
  members of it; the others apply it to their replica before their clients see it.
- **Syncs.** The first presence-enabled join of a topic in a process asks every process for its
  metas of that topic (``presence_sync`` to all, ``presence_part`` back to the asker) and waits
  for the answers (bounded) before it pushes ``presence_state``, so the state on join holds every
  process's metas. A process's answer comes after the diffs it published earlier, on the same
  ordered connection, so replacing that process's part with it never loses a diff.
- **Heartbeats.** Every process says it is alive every ``heartbeat_interval`` seconds. One not
  heard for ``dead_after`` seconds (while the broker is up here: an outage is not a death) is
  dead: its metas leave, and each process tells its own clients. A heartbeat carries an epoch
  that a process bumps when some of its publications may have been lost (its broker reconnected
  or dropped some): the others then ask it for its part again. A process that reconnects asks
  everyone for everything it follows. So after a Redis restart every process converges within a
  heartbeat or two, without restarting anything.

Joins (sync replies) and leaves (dead processes, replaced parts) computed here are delivered to
this process's clients only: every process computes its own.

Presence is kept by scope (:func:`~realtime_messaging.protocol.presence.presence_scope`): the
private channels of a topic share one and its public channels another, so the replica, syncs and
parts are by scope, and a diff reaches only the channels of its own (``Envelope.private``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

from ..broker import Broker, Envelope
from ..protocol.presence import (
    Diff,
    PresenceRegistry,
    RemotePresence,
    State,
    presence_scope,
    scope_topic,
    well_formed,
)
from .fanout import Hub

log = logging.getLogger(__name__)


def diff_envelope(diff: Diff) -> Envelope:
    """A presence diff as the clients get it: on its topic, to the channels of its scope only
    (the private ones of a private scope, the public ones of a public scope)."""
    topic, private = scope_topic(diff.topic)
    return Envelope(topic, "presence_diff", diff.payload(), private=private)


#: Control events between processes.
HEARTBEAT = "heartbeat"
SYNC = "presence_sync"
PART = "presence_part"


@dataclass(slots=True)
class _Peer:
    """Another process, as heard here."""

    last_seen: float
    epoch: int


@dataclass(slots=True)
class _Request:
    """A sync sent and the processes whose answer it waits for."""

    topics: list[str]
    waiting: set[str]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ClusterPresence:
    """The broker's sink and the hub's topic watcher: keeps the replica, answers syncs.

    Timings come from the settings (``heartbeat_interval``, ``dead_after``); ``answer_within``
    bounds how long a join waits for other processes; ``settle`` is how long after a
    (re)connect the heartbeats of the others are awaited before a sync counts on them.
    """

    def __init__(
        self,
        broker: Broker,
        registry: PresenceRegistry,
        *,
        heartbeat_interval: float,
        dead_after: float,
        answer_within: float = 1.0,
        settle: float = 0.25,
    ) -> None:
        self.broker = broker
        self.registry = registry
        self.hub = Hub(self)
        self.remote = RemotePresence()
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after
        self._answer_within = answer_within
        self._settle = settle
        self._peers: dict[str, _Peer] = {}
        self._epoch = 0
        self._dropped = 0
        #: Topics whose replica is complete (synced, then kept by diffs) while followed here.
        self._synced: set[str] = set()
        #: Topics a join is syncing: followed though the hub has no member of them yet.
        self._syncing: dict[str, int] = {}
        self._requests: dict[int, _Request] = {}
        self._ids = itertools.count(1)
        self._batch: dict[str, asyncio.Future[None]] = {}
        self._settled = asyncio.Event()
        self._settled.set()
        self._task: asyncio.Task[None] | None = None
        self.reaped = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self)
        self._task = asyncio.create_task(self._beat(), name="rtm-cluster-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for request in self._requests.values():
            if not request.done.done():
                request.done.set_result(None)
        await self.broker.stop()

    @property
    def peers(self) -> int:
        """Other processes heard from and not declared dead."""
        return len(self._peers)

    # -- what the session asks ---------------------------------------------------------------

    def state(self, scope: str) -> State:
        """The ``presence_state`` of a presence scope (:func:`presence_scope`): this process's
        metas and every other's."""
        return self.remote.add_to(scope, self.registry.state(scope))

    async def ready(self, topic: str, *, presence: str | None) -> None:
        """Return once publications on ``topic`` from every process reach this one and, for a
        presence-enabled join (``presence``: its scope), once the replica holds every process's
        metas of that scope (bounded)."""
        scope = presence
        if scope is None or scope in self._synced:
            await self.broker.ready(topic)
            return
        self._syncing[scope] = self._syncing.get(scope, 0) + 1
        try:
            await self.broker.ready(topic)
            if scope in self._synced:
                return
            if self.broker.status().up:
                await self._sync(scope)
            self._synced.add(scope)
        finally:
            left = self._syncing[scope] - 1
            if left:
                self._syncing[scope] = left
            else:
                del self._syncing[scope]
                # The join adds its channel to the hub as soon as this returns (no await in
                # between); one that gave up instead leaves nothing followed behind.
                asyncio.get_running_loop().call_soon(self._unless_followed, scope)

    # -- Sink --------------------------------------------------------------------------------

    def deliver(self, envelope: Envelope) -> None:
        if envelope.origin is not None and envelope.event == "presence_diff":
            self._apply_diff(envelope)
        self.hub.deliver(envelope)

    def control(self, envelope: Envelope) -> None:
        node = envelope.origin
        if node is None or node == self.broker.node:
            return
        payload = envelope.payload if isinstance(envelope.payload, dict) else {}
        peer = self._heard(node, payload)
        if envelope.event == SYNC:
            self._answer(node, payload)
        elif envelope.event == PART:
            self._take_part(node, payload)
        elif envelope.event == HEARTBEAT and peer is not None and payload.get("hello"):
            # A process that just (re)connected: say who we are at once, so that its joins
            # know to wait for us.
            self.broker.send(self._heartbeat(), node)

    def connected(self) -> None:
        """Delivery between processes (re)started: anything may have been missed meanwhile."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._settled.clear()
        loop.call_later(self._settle, self._settled.set)
        self._epoch += 1
        for peer in self._peers.values():
            peer.last_seen = now  # not heard during the outage is not dead
        self.broker.send(self._heartbeat(hello=True))
        if self._synced:
            loop.call_later(self._settle, self._resync, None)

    # -- TopicWatcher ------------------------------------------------------------------------

    def topic_added(self, topic: str) -> None:
        self.broker.topic_added(topic)

    def topic_removed(self, topic: str) -> None:
        for scope in (topic, presence_scope(topic, True)):
            if scope not in self._syncing:
                self._forget(scope)
        self.broker.topic_removed(topic)

    # -- replica (by presence scope) -----------------------------------------------------------

    def _unless_followed(self, scope: str) -> None:
        if scope not in self._syncing and not self.hub.members(scope_topic(scope)[0]):
            self._forget(scope)

    def _forget(self, scope: str) -> None:
        self._synced.discard(scope)
        self.remote.drop_topic(scope)

    def _follows(self, scope: str) -> bool:
        return scope in self._synced or scope in self._syncing

    def _apply_diff(self, envelope: Envelope) -> None:
        payload = envelope.payload
        scope = presence_scope(envelope.topic, envelope.private is True)
        if not isinstance(payload, dict) or not self._follows(scope):
            return
        joins, leaves = well_formed(payload.get("joins")), well_formed(payload.get("leaves"))
        if joins is None or leaves is None:
            return
        assert envelope.origin is not None
        self.remote.apply(envelope.origin, scope, joins, leaves)

    def _take_part(self, node: str, payload: dict[str, Any]) -> None:
        """Another process's answer to a sync: its whole part of each topic asked for."""
        parts = payload.get("parts")
        if isinstance(parts, dict):
            for topic, state in parts.items():
                checked = well_formed(state)
                if checked is None or not self._follows(topic):
                    continue
                diff = self.remote.replace(node, topic, checked)
                if diff is not None and topic in self._synced:
                    self._tell_clients(diff)
        request_id = payload.get("id")
        request = self._requests.get(request_id) if isinstance(request_id, int) else None
        if request is not None:
            request.waiting.discard(node)
            if not request.waiting and not request.done.done():
                request.done.set_result(None)

    def _answer(self, node: str, payload: dict[str, Any]) -> None:
        topics = payload.get("topics")
        if not isinstance(topics, list):
            return
        parts = {topic: self.registry.state(topic) for topic in topics if isinstance(topic, str)}
        self.broker.send(Envelope("", PART, {"id": payload.get("id"), "parts": parts}), node)

    def _tell_clients(self, diff: Diff) -> None:
        """A diff only this process computed (every process computes its own): local only."""
        self.hub.deliver(diff_envelope(diff))

    # -- syncs -------------------------------------------------------------------------------

    def _expected(self) -> set[str]:
        return set(self._peers)

    async def _sync(self, topic: str) -> None:
        """Ask every process for its part of ``topic`` (joins of one turn share one request)."""
        loop = asyncio.get_running_loop()
        # Just (re)connected: the others' answers to our hello say who is alive.
        await self._settled.wait()
        future = self._batch.get(topic)
        if future is None:
            if not self._batch:
                loop.call_soon(self._flush)
            future = self._batch[topic] = loop.create_future()
        # asyncio.wait, not asyncio.timeout: a join runs this before it has a task (eager.py);
        # and it leaves the future, which other joins share, alone.
        done, _ = await asyncio.wait([future], timeout=self._answer_within)
        if not done:
            log.warning("presence of %s: not every process answered in time", topic)

    def _flush(self) -> None:
        batch, self._batch = self._batch, {}
        request = self._request(list(batch), None)
        if request is None:
            for future in batch.values():
                future.set_result(None)
            return

        def finished(done: asyncio.Future[None]) -> None:
            for future in batch.values():
                if not future.done():
                    future.set_result(None)

        request.done.add_done_callback(finished)

    def _request(self, topics: list[str], node: str | None) -> _Request | None:
        """Send a sync for ``topics`` to every process (or one); None when nobody is asked."""
        waiting = {node} if node is not None else self._expected()
        if not waiting or not topics:
            return None
        request_id = next(self._ids)
        request = _Request(topics, waiting)
        self._requests[request_id] = request
        loop = asyncio.get_running_loop()
        handle = loop.call_later(self._answer_within * 2, self._expire, request_id)
        request.done.add_done_callback(lambda _: self._end(request_id, handle))
        self.broker.send(Envelope("", SYNC, {"id": request_id, "topics": topics}), node)
        return request

    def _expire(self, request_id: int) -> None:
        request = self._requests.get(request_id)
        if request is not None and not request.done.done():
            request.done.set_result(None)

    def _end(self, request_id: int, handle: asyncio.TimerHandle) -> None:
        handle.cancel()
        self._requests.pop(request_id, None)

    def _resync(self, node: str | None) -> None:
        """Ask again for every followed topic: after a reconnect (everyone) or when a process
        says it may have lost publications, or is new to us (that one)."""
        topics = sorted(self._synced)
        if topics:
            self._request(topics, node)

    # -- heartbeats and deaths ---------------------------------------------------------------

    def _heartbeat(self, *, hello: bool = False) -> Envelope:
        payload: dict[str, Any] = {"epoch": self._epoch}
        if hello:
            payload["hello"] = True
        return Envelope("", HEARTBEAT, payload)

    def _heard(self, node: str, payload: dict[str, Any]) -> _Peer | None:
        """Note that ``node`` is alive; ask it for its parts when it is new or may have lost
        some of its publications. Returns the peer when it was new or changed epoch."""
        now = asyncio.get_running_loop().time()
        epoch = payload.get("epoch")
        peer = self._peers.get(node)
        if peer is None:
            peer = self._peers[node] = _Peer(now, epoch if isinstance(epoch, int) else 0)
            self._resync(node)
            return peer
        peer.last_seen = now
        if isinstance(epoch, int) and epoch != peer.epoch:
            peer.epoch = epoch
            self._resync(node)
            return peer
        return None

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            status = self.broker.status()
            if status.dropped != self._dropped:
                self._dropped = status.dropped
                self._epoch += 1  # some publications never left: others must ask again
            if not status.up:
                continue
            self.broker.send(self._heartbeat())
            now = loop.time()
            for node, peer in list(self._peers.items()):
                if now - peer.last_seen > self._dead_after:
                    self._reap(node)

    def _reap(self, node: str) -> None:
        del self._peers[node]
        diffs = self.remote.drop_node(node)
        self.reaped += 1
        log.warning(
            "process %s not heard for %g s: its presences left (%d topics)",
            node,
            self._dead_after,
            len(diffs),
        )
        for diff in diffs:
            self._tell_clients(diff)
        for request_id, request in list(self._requests.items()):
            request.waiting.discard(node)
            if not request.waiting:
                self._expire(request_id)
