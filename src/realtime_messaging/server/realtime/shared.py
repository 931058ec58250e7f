"""What every session of one process shares: the ports, the registries, the hub, and the
sessions themselves."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

import asyncpg

from ...broker import Broker
from ...config import Settings
from ...domain.identity import (
    Identity,
    Kind,
    TopicKind,
    may_join,
    needs_conversation_owner,
    parse_topic,
)
from ...protocol.connection import subtopic
from ...protocol.join import PostgresBinding
from ...protocol.presence import PresenceRegistry
from ...store.caller import Caller
from ...store.changefeed import Change, History, Missed, read_missed
from ...store.channel_access import ChannelAccess, channel_access
from ...store.customer_staff import staff_of_customers
from ..api.framework import caller_of
from ..api.ratelimit import RateLimiter
from ..auth import Authenticator
from ..batching import Coalesced
from ..cluster import ClusterPresence
from ..eager import in_task
from ..fanout import Turn
from ..liveness import LivenessTracker
from ..pgchanges import ChangeRouter
from .channel import Channel, Expiries


def policy_caller(identity: Identity) -> Caller:
    """Who the policies on ``realtime.messages`` see: a token that names no staff user or
    customer is still ``authenticated`` there, as on Supabase."""
    if identity.kind is Kind.AUTHENTICATED:
        return Caller("authenticated")
    return caller_of(identity)


#: The session type (the holders, the sessions).
S = TypeVar("S", bound=Hashable)


class TokenHolders(Generic[S]):
    """Portal-token hash -> what holds it (as apikey or in a channel), so that a token that
    ends is looked up by hash instead of by asking every session."""

    def __init__(self) -> None:
        self._by_hash: dict[str, set[S]] = {}

    def hold(self, holder: S, token_hash: str) -> None:
        self._by_hash.setdefault(token_hash, set()).add(holder)

    def release(self, holder: S, token_hashes: set[str]) -> None:
        for token_hash in token_hashes:
            held = self._by_hash.get(token_hash)
            if held is not None:
                held.discard(holder)
                if not held:
                    del self._by_hash[token_hash]

    def of(self, token_hash: str) -> list[S]:
        return list(self._by_hash.get(token_hash, ()))

    def in_use(self) -> list[str]:
        return list(self._by_hash)


class Shared(Generic[S]):
    """The ports and registries the sessions of one process act on, and the sessions.

    Generic in the session type so that it sits below the session, which acts on it.
    """

    def __init__(
        self,
        settings: Settings,
        auth: Authenticator,
        broker: Broker,
        router: ChangeRouter,
        pool: asyncpg.Pool,
        liveness: LivenessTracker,
        limiter: RateLimiter,
    ) -> None:
        self.settings = settings
        #: The event loop serving the sockets, kept: ``asyncio.get_running_loop()`` makes a
        #: system call each time, a few times per connect.
        self.loop = asyncio.get_running_loop()
        self.liveness = liveness
        self.limiter = limiter
        self.auth = auth
        self.broker = broker
        self.router = router
        self.pool = pool
        self.node_id = secrets.token_hex(4)
        self._ref_counter = itertools.count(1)
        self.presence = PresenceRegistry(self._make_ref)
        self.cluster = ClusterPresence(
            broker,
            self.presence,
            heartbeat_interval=settings.process_heartbeat_interval,
            dead_after=settings.process_dead_after,
        )
        self.hub = self.cluster.hub
        #: The sockets' outboxes written to in this turn of the event loop (flushed together).
        self.turn = Turn()
        #: Socket-side errors by kind, for the metrics.
        self.errors: Counter[str] = Counter()
        #: The last change position routed in this process (set by the composition root).
        self.feed_position: Callable[[], int] = lambda: 0
        #: What resuming channels missed, read for a reconnect storm's rejoins in batches.
        self.missed: Coalesced[Missed, tuple[History, list[Change]]] = Coalesced(self._read_missed)
        #: The staff each customer may see, read for their joins in batches.
        self.customer_staff: Coalesced[str, frozenset[str]] = Coalesced(self._read_staff)
        #: The channels to close when their tokens expire.
        self.expiries = Expiries()
        #: Participant id -> this process's channels on presence topics that stand for them.
        self.participant_channels: dict[str, set[Channel]] = {}
        self.sessions: set[S] = set()
        #: The sessions holding each portal token (as apikey or in a channel).
        self.portal_holders: TokenHolders[S] = TokenHolders()

    async def _read_missed(self, asks: list[Missed]) -> dict[Missed, tuple[History, list[Change]]]:
        async with self.pool.acquire() as conn:
            return await read_missed(conn, asks, replay_limit=self.settings.replay_limit)

    async def _read_staff(self, customers: list[str]) -> dict[str, frozenset[str]]:
        async with self.pool.acquire() as conn:
            return await staff_of_customers(conn, customers)

    async def staff_for(
        self, identity: Identity, bindings: Sequence[PostgresBinding]
    ) -> frozenset[str]:
        """The staff whose presence rows ``bindings`` may receive: for a customer's bindings
        that name staff (:meth:`ChangeRouter.asks_for_staff`), the staff of their conversations as of now;
        nothing otherwise (and no query)."""
        if not self.router.asks_for_staff(identity, bindings):
            return frozenset()
        return await self.customer_staff.get(str(identity.customer_id)) or frozenset()

    def _make_ref(self) -> str:
        return f"{self.node_id}{next(self._ref_counter):x}"

    async def may_join(self, identity: Identity, topic_name: str) -> bool:
        """The topic rules (DESIGN 4.3) for a full topic name (``realtime:`` prefix optional)."""
        topic = parse_topic(subtopic(topic_name))
        owner = None
        if needs_conversation_owner(topic):
            assert topic.subject is not None
            owner = await self.auth.conversation_owner(topic.subject)
        return may_join(identity, topic, owner)

    async def channel_access(self, identity: Identity, topic_name: str) -> ChannelAccess | None:
        """For a private channel on a topic that is not one of ours, what the policies on
        ``realtime.messages`` allow ``identity``; ``None`` for our own topics (their rules
        decide, :meth:`may_join`)."""
        name = subtopic(topic_name)
        if parse_topic(name).kind is not TopicKind.PUBLIC:
            return None
        return await in_task(self._channel_access(identity, name))

    async def _channel_access(self, identity: Identity, name: str) -> ChannelAccess | None:
        async with self.pool.acquire() as conn:
            return await channel_access(conn, policy_caller(identity), name)
