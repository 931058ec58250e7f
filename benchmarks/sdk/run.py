#!/usr/bin/env python3
"""SDK benchmark: the design document's "Performance Metrics", measured through the Python SDK.

One ``rtm serve`` runs pinned to CPU 0 on a free loopback port, on the embedded PostgreSQL of a
temporary data directory (started by ``rtm db-url`` and kept running, so that the server can be
restarted without it, as with an external database) or on ``RTM_DATABASE_URL`` when that is set.
This process runs N ``RealtimeMessagingManager`` clients on uvloop, pinned to CPU 1:

* N - S customers (S staff users: 2 to 10 by default), each with one conversation, assigned to
  the staff users in turn, and subscribed to it (``subscribe_to_conversation``) with its portal
  token;
* with ``--agents-presence``, each customer also follows its agent's presence
  (``subscribe_to_staff_presence``), as the customer chat's list does: one more channel per
  customer, whose join (and rejoin) reads the customer's staff;
* S staff managers, each subscribed to ``staff:<id>:messages`` (every conversation's messages,
  receipts, typing and delivery status) and to the presence topic of one of its conversations
  (staff see every presence row there).

Set-up is plain SQL plus the admin API (staff JWTs from ``POST /api/admin/users/{id}/tokens``
with the service key), shared with the change-feed benchmark (``benchmarks/common.py``).

Phases, each at a fixed, open-loop rate, one after the other, on the same connections. Every
figure is measured in this process with one clock, from just before the SDK call to the moment
the recipient's handler runs (so it includes the HTTP request or socket push, the commit, the
change feed, the WebSocket and the SDK's own dispatch):

* idle: nothing sent, for the CPU that the connected clients cost by themselves;
* messages: ``send_message``, alternately by a customer (measured at its assigned staff
  manager's ``on_message``) and by that staff user (measured at the customer's). Every message
  must reach the customer's subscription and every staff subscription exactly once (lost,
  duplicated and misrouted deliveries are counted);
* typing: ``send_typing_indicator``, alternately by a customer and its staff user; measured at
  the other side's ``on_typing`` (every change with ``is_typing``, refreshes included: the
  benchmark lets every typing change through, not only the SDK's start and stop);
* presence: a customer's ``update_presence`` (away / online in turn); measured at its staff
  user's presence subscription (``on_presence`` with that customer and status);
* read receipts: each customer marks the staff messages of the first phase read
  (``mark_message_as_read``); measured at the sending staff user's ``on_read_receipt``;
* reconnect: the server process is stopped (SIGTERM) and started again on the same port while
  every client stays up; meanwhile a few staff messages are committed by SQL. Reconnect time is
  from the new process accepting TCP connections (probed every 5 ms) until every subscription
  has rejoined and its "Subscribed to PostgreSQL" has arrived. Then the messages committed
  during the outage must arrive exactly once (resume), and a short message phase checks that
  delivery works as before.

The per-participant rate limits of the server (typing 10 a minute per conversation, presence 6 a
minute) are respected by spreading the actions over the customers; a phase with too few
customers for its rate sends fewer actions, and says so. Each phase also reports the CPU used by
``rtm``, its PostgreSQL, this process and other processes, and the server's own account of the
phase from ``/metrics`` (API calls by route, changes by table, commit-to-socket delay). The
table at the end sets each metric beside the documented target and ours (20 times lower).

    python benchmarks/sdk/run.py [--clients 1000] [--quick] [--profile DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from statistics import fmean
from typing import Any

import aiohttp
import asyncpg
import psutil
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402  (benchmarks/common.py, put on the path above)
    CLIENT_CPU,
    NOISY_PCT,
    SERVER_CPU,
    EmbeddedDatabase,
    RtmServer,
    busy_pct,
    cpu_times,
    default_rtm_cmd,
    pin_processes,
    postgres_procs,
    postmaster_of,
    print_log_problems,
    proc_cpu,
    run_pinned,
    seed,
    start_py_spy,
    stop_py_spy,
    stop_started,
    summarize_profile,
    wait_quiet,
)

from realtime_messaging.client import (  # noqa: E402
    ApiError,
    ConnectionLostError,
    MessageEvent,
    PresenceEvent,
    ReadReceiptEvent,
    RealtimeError,
    RealtimeMessagingManager,
    Subscription,
    TypingIndicatorEvent,
)
from realtime_messaging.client import socket as sdk_socket  # noqa: E402
from realtime_messaging.client.events import TypingTransitions  # noqa: E402


class _EveryTypingChange(TypingTransitions):
    """Lets every typing change through, not only starts and stops (see ``_watch``)."""

    def accept(self, event: TypingIndicatorEvent) -> bool:
        return True


JWT_SECRET = "sdk-benchmark-secret-0123456789abcdef0123"  # throwaway, for a temp data dir
PREFIX = "sdk:"
CUSTOMER_TEXT = "Hi! My order 48213 has not moved since Friday. Could you check it?"
STAFF_TEXT = "Thanks for waiting: it left our warehouse this morning and arrives Monday."
#: Under the server's default limits: presence 6 a minute per participant, typing 10 a minute
#: per participant and conversation (each phase lasts well under a minute).
PRESENCE_PER_CUSTOMER = 5
TYPING_PER_PAIR = 9
LOAD_BUSY_PCT = 85  # above this the load generator's own queueing shows in the figures


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    metric: str
    stat: str  # which statistic of the phase is compared
    documented_ms: float  # the design document's "Expected Performance"
    ours_ms: float  # 20 times better


TARGETS = (
    Target("messages", "message delivery latency", "p95", 500.0, 25.0),
    Target("typing", "typing indicator delay", "p99", 200.0, 10.0),
    Target("presence", "presence update delay", "avg", 1000.0, 50.0),
    Target("read receipts", "read receipt delay", "p95", 300.0, 15.0),
    Target("reconnect", "reconnect time", "max", 5000.0, 250.0),
)


@dataclass
class Plan:
    clients: int
    staff: int
    phase_s: float
    after_restart_s: float
    message_rate: float
    typing_rate: float
    presence_rate: float
    read_rate: float
    outage_messages: int
    batch: int
    drain_s: float
    seed: int

    @property
    def customers(self) -> int:
        return self.clients - self.staff


@dataclass(eq=False)
class Customer:
    index: int
    customer_id: str
    conversation_id: str
    token: str
    agent: int  # index of the staff user the conversation is assigned to
    manager: RealtimeMessagingManager | None = None


@dataclass(eq=False)
class Agent:
    index: int
    user_id: str
    token: str
    presence_conversation: str
    manager: RealtimeMessagingManager | None = None


@dataclass
class Phase:
    """One phase's actions, measured delays, deliveries (messages) and CPU use."""

    name: str
    target_rate: float = 0.0
    actions: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lat_ns: list[int] = field(default_factory=list)
    #: messages: the delays by direction ("customer->staff", "staff->customer")
    lat_by: dict[str, list[int]] = field(default_factory=dict)
    waiting: int = 0  # measured events not seen yet (at the end: never seen)
    unmatched: int = 0  # events of the measured kind that no action was waiting for
    expected: int = 0  # messages: deliveries due (customer + every staff subscription)
    delivered: int = 0
    duplicated: int = 0
    misrouted: int = 0
    after_error: int = 0  # deliveries of messages whose send raised
    send_span_s: float = 0.0
    wall_s: float = 0.0
    drain_s: float = 0.0
    rtm_cpu_s: float = 0.0
    pg_cpu_s: float = 0.0
    load_cpu_s: float = 0.0
    cpu_busy: dict[int, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def outstanding(self) -> int:
        return self.waiting + max(0, self.expected - self.delivered)

    def stat(self, name: str) -> float | None:
        """``p50``/``p95``/``p99``/``max``/``avg`` of the measured delays, in ms."""
        lat = sorted(self.lat_ns)
        if not lat:
            return None
        if name == "avg":
            return round(fmean(lat) / 1e6, 2)
        q = 1.0 if name == "max" else float(name[1:]) / 100
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6, 2)

    def summary(self) -> dict[str, Any]:
        wall = self.wall_s or 1.0
        out: dict[str, Any] = {
            "phase": self.name,
            "target_rate": round(self.target_rate, 1),
            "actions": self.actions,
            "rate": round(self.actions / self.send_span_s, 1) if self.send_span_s else None,
            "errors": dict(self.errors),
            "measured": len(self.lat_ns),
            "not_seen": self.waiting,
            "unmatched": self.unmatched,
        }
        out.update({f"{s}_ms": self.stat(s) for s in ("p50", "p95", "p99", "avg", "max")})
        for direction, lat in sorted(self.lat_by.items()):
            lat = sorted(lat)
            out[f"{direction} p50/p95_ms"] = [
                round(lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6, 2) for q in (0.5, 0.95)
            ]
        if self.expected:
            out.update(
                expected=self.expected,
                delivered=self.delivered,
                lost=self.expected - self.delivered,
                duplicated=self.duplicated,
                misrouted=self.misrouted,
                after_error=self.after_error,
            )
        ours = 100 * (self.rtm_cpu_s + self.pg_cpu_s + self.load_cpu_s) / wall
        busy = sum(b["busy"] - b.get("irq", 0.0) for b in self.cpu_busy.values())
        out.update(
            drain_s=round(self.drain_s, 2),
            rtm_cpu_pct=round(100 * self.rtm_cpu_s / wall, 1),
            pg_cpu_pct=round(100 * self.pg_cpu_s / wall, 1),
            load_cpu_pct=round(100 * self.load_cpu_s / wall, 1),
            cpu_busy_pct=self.cpu_busy,
            # busy time of the two CPUs, outside interrupts, that was neither rtm, its
            # PostgreSQL nor this process: other processes on a shared machine
            other_cpu_pct=round(max(0.0, busy - ours), 1) if self.cpu_busy else 0.0,
            **self.extra,
        )
        return out


@dataclass
class Marks:
    wall: float
    rtm: float
    pg: float
    load: float
    cpus: list[Any]
    server: dict[str, float]  # the server's /metrics counters


def server_counters(text: str) -> dict[str, float]:
    """The counters of ``/metrics`` this benchmark reports: requests and server time by route,
    changes by table, and the feed's delay from a change's commit to the subscribers' sockets."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name.startswith("rtm_http_request_duration_seconds_"):
                route = f"{labels['method']} {labels['route']} {labels['status']}"
                kind = name.rsplit("_", 1)[1]
                if kind in ("count", "sum"):
                    out[f"{kind} {route}"] = sample.value
            elif name == "rtm_changes_total":
                out[f"changes {labels['table']}"] = sample.value
            elif name in ("rtm_change_delivery_seconds_count", "rtm_change_delivery_seconds_sum"):
                out[name] = sample.value
            elif name == "rtm_change_delivery_seconds_bucket" and labels["le"] == "0.01":
                out["feed within 10 ms"] = sample.value
    return out


def server_work(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the server did between two :func:`server_counters`: API calls by route (count, mean
    ms in the server), changes by table, mean feed delay (commit -> sockets) in ms and the
    share of changes whose delay was over 10 ms (a latency row's bound: where its tail is)."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}
    api = {
        k.removeprefix("count "): {
            "n": int(n),
            "mean_ms": round(1e3 * delta.get("sum " + k.removeprefix("count "), 0.0) / n, 2),
        }
        for k, n in sorted(delta.items(), key=lambda kv: -kv[1])
        if k.startswith("count ")
    }
    changes = {k.removeprefix("changes "): int(v) for k, v in delta.items() if k[:8] == "changes "}
    n = delta.get("rtm_change_delivery_seconds_count", 0.0)
    feed = delta.get("rtm_change_delivery_seconds_sum", 0.0)
    within = delta.get("feed within 10 ms", 0.0)
    return {
        "api": api,
        "changes": changes,
        "feed_mean_ms": round(1e3 * feed / n, 2) if n else None,
        "feed_over_10ms_pct": round(100 * (n - within) / n, 2) if n else None,
    }


class Bench:
    """The clients, the actions of each phase, and what the handlers saw."""

    def __init__(
        self,
        plan: Plan,
        args: argparse.Namespace,
        workdir: Path,
        pin: bool,
        database_url: str,
        embedded: Path | None,
    ) -> None:
        self.plan = plan
        self.args = args
        self.workdir = workdir
        self.pin = pin
        self.database_url = database_url
        self.embedded = embedded  # the embedded database's data dir, for its CPU use
        self.rng = random.Random(plan.seed)
        self.me = psutil.Process()
        self.servers: list[RtmServer] = []
        self.customers: list[Customer] = []
        self.agents: list[Agent] = []
        self.customer_of: dict[str, int] = {}
        self.managers: list[RealtimeMessagingManager] = []
        self.subscriptions: list[Subscription] = []
        #: monotonic_ns of each subscription's last "Subscribed to PostgreSQL"
        self.subscribed_ns: list[int] = []
        # messages, by sequence number
        self.msg_sent_ns: list[int] = []
        self.msg_customer: list[int] = []
        self.msg_pending: list[int] = []  # bits of the subscriptions still to get it; -1: failed
        self.msg_measured: list[int] = []  # the bit whose delivery is timed (0: none)
        self.msg_phase: list[Phase] = []
        self.full_mask = 0
        self.staff_messages: list[tuple[str, int]] = []  # (message id, customer index)
        # pending typing / presence / read receipts: the send times of each awaited event
        self.typing: dict[tuple[int, str], deque[int]] = {}
        self.presence: dict[int, deque[tuple[str, int]]] = {}
        self.reads: dict[str, int] = {}
        self.phase: Phase | None = None
        self.phases: list[Phase] = []
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.stray = 0
        self.http: aiohttp.ClientSession | None = None  # for /metrics

    @property
    def server(self) -> RtmServer:
        return self.servers[-1]

    # -- set-up ---------------------------------------------------------------------------

    def new_server(self) -> RtmServer:
        port = self.servers[-1].port if self.servers else None
        server = RtmServer(
            self.workdir,
            SERVER_CPU if self.pin else None,
            self.args.rtm_cmd or default_rtm_cmd(),
            JWT_SECRET,
            port=port,
            database_url=self.database_url,
            name=f"rtm-{len(self.servers) + 1}",
            extra_env=dict(self.args.server_env),
        )
        self.servers.append(server)
        return server

    async def create_data(self) -> dict[str, Any]:
        plan = self.plan
        started = time.monotonic()
        seeded = await seed(
            self.database_url,
            self.server.http,
            self.server.service_key,
            customers=plan.customers,
            staff=plan.staff,
            assign=True,
        )
        for j, (user, token) in enumerate(zip(seeded.staff_ids, seeded.staff_tokens, strict=True)):
            first = seeded.conversation_ids[j]  # conversation j is assigned to staff user j
            self.agents.append(Agent(j, str(user), token, str(first)))
        for k, (cust, conv) in enumerate(
            zip(seeded.customer_ids, seeded.conversation_ids, strict=True)
        ):
            customer = Customer(
                k, str(cust), str(conv), seeded.portal_tokens[k], seeded.assigned[k]
            )
            self.customers.append(customer)
            self.customer_of[customer.customer_id] = k
        self.full_mask = (2 << plan.staff) - 1  # bit 0: the customer; bit 1 + j: staff user j
        return {"setup_s": round(time.monotonic() - started, 2)}

    def _manager(self, token: str) -> RealtimeMessagingManager:
        options: dict[str, Any] = {"on_error": self._error_handler("manager")}
        if self.args.reconnect_base is not None:
            options["reconnect_base"] = self.args.reconnect_base
        if self.args.reconnect_max is not None:
            options["reconnect_max"] = self.args.reconnect_max
        manager = RealtimeMessagingManager(
            self.server.http, self.server.anon_key, access_token=token, **options
        )
        self.managers.append(manager)
        return manager

    def _watch(self, subscription: Subscription) -> None:
        """Record when each (re)join's "Subscribed to PostgreSQL" arrives, and hand on every
        typing change.

        The SDK has no callback for a channel's (re)subscription, so this wraps the channel's
        handler of ``system`` messages. The SDK reports typing as one start and one stop per
        burst; the typing phase measures every request (refreshes of a typist who is already
        typing included), so its subscriptions see every change the feed carries.
        """
        subscription._typing = _EveryTypingChange()
        channel = subscription.channel
        assert channel is not None
        index = len(self.subscriptions)
        self.subscriptions.append(subscription)
        self.subscribed_ns.append(time.monotonic_ns())
        original = channel.accept_system

        def accept_system(payload: Any) -> None:
            original(payload)
            if (
                isinstance(payload, dict)
                and payload.get("extension") == "postgres_changes"
                and payload.get("status") == "ok"
            ):
                self.subscribed_ns[index] = time.monotonic_ns()

        channel.accept_system = accept_system  # type: ignore[method-assign]

    async def _connect_customer(self, c: Customer) -> None:
        c.manager = self._manager(c.token)
        bit = 1
        sub = await c.manager.subscribe_to_conversation(
            c.conversation_id,
            on_message=lambda e: self.on_message(bit, c.index, e),
            on_typing=lambda e: self.on_customer_typing(c, e),
            on_error=self._error_handler("customer"),
        )
        self._watch(sub)
        if self.args.agents_presence:
            agents = await c.manager.subscribe_to_staff_presence(
                [self.agents[c.agent].user_id], on_error=self._error_handler("agents presence")
            )
            self._watch(agents)

    async def _connect_agent(self, a: Agent) -> None:
        a.manager = self._manager(a.token)
        bit = 2 << a.index
        messages = await a.manager.subscribe_to_staff_messages(
            a.user_id,
            on_message=lambda e: self.on_message(bit, -1, e),
            on_typing=lambda e: self.on_agent_typing(a, e),
            on_read_receipt=lambda e: self.on_read_receipt(a, e),
            on_error=self._error_handler("staff"),
        )
        self._watch(messages)
        presence = await a.manager.subscribe_to_presence(
            a.presence_conversation,
            on_presence=lambda e: self.on_presence(a, e),
            on_error=self._error_handler("staff presence"),
        )
        self._watch(presence)

    async def connect_all(self) -> dict[str, Any]:
        started = time.monotonic()
        jobs: list[Callable[[], Awaitable[None]]] = [
            *(partial(self._connect_agent, a) for a in self.agents),
            *(partial(self._connect_customer, c) for c in self.customers),
        ]
        took: list[float] = []

        async def timed(job: Callable[[], Awaitable[None]]) -> None:
            t0 = time.monotonic()
            await job()
            took.append(time.monotonic() - t0)

        for at in range(0, len(jobs), self.plan.batch):
            await asyncio.gather(*(timed(job) for job in jobs[at : at + self.plan.batch]))
        took.sort()
        return {
            "connect_s": round(time.monotonic() - started, 2),
            "subscriptions": len(self.subscriptions),
            "subscribe_p50_ms": round(1e3 * took[len(took) // 2], 1),
            "subscribe_max_ms": round(1e3 * took[-1], 1),
        }

    async def close(self) -> None:
        """Close every manager (leaves, pending acks, HTTP sessions), at most 30 s in all."""
        if self.http is not None:
            await self.http.close()
        jobs = [m.close() for m in self.managers]
        try:
            await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), 30)
        except TimeoutError:
            print("closing the clients took over 30 s; stopping anyway", flush=True)

    # -- handlers -------------------------------------------------------------------------

    def _error_handler(self, where: str) -> Callable[[Exception], None]:
        def handle(error: Exception) -> None:
            kind = type(error).__name__
            if isinstance(error, ApiError):
                kind += f" {error.status} {error.code}"
            self.errors[f"{where}: {kind}"] += 1
            if not isinstance(error, ConnectionLostError) and len(self.error_samples) < 10:
                self.error_samples.append(f"{where}: {error!r}"[:300])

        return handle

    def on_message(self, bit: int, customer: int, event: MessageEvent) -> None:
        now = time.monotonic_ns()
        content = event.content
        if not content.startswith(PREFIX):
            self.stray += 1
            return
        seq = int(content[len(PREFIX) : content.index(" ")])
        phase = self.msg_phase[seq]
        if customer >= 0 and self.msg_customer[seq] != customer:
            phase.misrouted += 1
            return
        mask = self.msg_pending[seq]
        if mask < 0:
            phase.after_error += 1
            return
        if not mask & bit:
            phase.duplicated += 1
            return
        self.msg_pending[seq] = mask ^ bit
        phase.delivered += 1
        if bit == self.msg_measured[seq]:
            phase.lat_ns.append(now - self.msg_sent_ns[seq])
            direction = "staff->customer" if bit == 1 else "customer->staff"
            phase.lat_by.setdefault(direction, []).append(now - self.msg_sent_ns[seq])

    def _matched(self, sent: int | None, now: int) -> None:
        phase = self.phase
        if phase is None:
            return
        if sent is None:
            phase.unmatched += 1
            return
        phase.waiting -= 1
        phase.lat_ns.append(now - sent)

    def on_agent_typing(self, agent: Agent, event: TypingIndicatorEvent) -> None:
        """A customer typing, seen by the staff user their conversation is assigned to."""
        now = time.monotonic_ns()
        if not event.is_typing or event.customer_id is None:
            return
        k = self.customer_of.get(event.customer_id)
        if k is None or self.customers[k].agent != agent.index:
            return
        waiting = self.typing.get((k, "customer"))
        self._matched(waiting.popleft() if waiting else None, now)

    def on_customer_typing(self, customer: Customer, event: TypingIndicatorEvent) -> None:
        """The assigned staff user typing, seen by the customer."""
        now = time.monotonic_ns()
        if not event.is_typing or event.user_id is None:
            return
        waiting = self.typing.get((customer.index, "staff"))
        self._matched(waiting.popleft() if waiting else None, now)

    def on_presence(self, agent: Agent, event: PresenceEvent) -> None:
        """A customer's presence change, seen by the staff user of their conversation."""
        now = time.monotonic_ns()
        if event.customer_id is None:
            return
        k = self.customer_of.get(event.customer_id)
        if k is None or self.customers[k].agent != agent.index:
            return
        waiting = self.presence.get(k)
        if not waiting or self.phase is None or self.phase.name != "presence":
            return  # the server's own presence changes (connections opening and closing)
        for i, (status, sent) in enumerate(waiting):
            if status == event.status:
                del waiting[i]
                self._matched(sent, now)
                return
        self.phase.unmatched += 1

    def on_read_receipt(self, agent: Agent, event: ReadReceiptEvent) -> None:
        """A customer's receipt for a message of this staff user."""
        now = time.monotonic_ns()
        k = self.customer_of.get(event.read_by_customer_id or "")
        if k is None or self.customers[k].agent != agent.index:
            return
        self._matched(self.reads.pop(event.message_id, None), now)

    # -- phases ---------------------------------------------------------------------------

    async def _scrape(self) -> dict[str, float]:
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self.http.get(f"{self.server.http}/metrics") as resp:
                return server_counters(await resp.text())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return {}

    async def _marks(self) -> Marks:
        counters = await self._scrape()
        rtm = 0.0
        if self.server.proc is not None:
            try:
                rtm = proc_cpu(psutil.Process(self.server.proc.pid))
            except psutil.Error:
                pass
        pg = 0.0
        if self.embedded is not None:
            pg = sum(proc_cpu(p) for p in postgres_procs(postmaster_of(self.embedded)))
        return Marks(time.monotonic(), rtm, pg, proc_cpu(self.me), cpu_times(), counters)

    async def _paced(
        self, phase: Phase, count: int, rate: float, act: Callable[[int], Awaitable[None]]
    ) -> None:
        """``act(k)`` for k < ``count`` at ``rate`` a second, open loop (late calls catch up)."""
        phase.target_rate = rate
        tasks = []
        t0 = time.monotonic()
        last = t0
        for k in range(count):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            last = time.monotonic()
            phase.actions += 1
            tasks.append(asyncio.create_task(self._guarded(phase, act, k)))
        phase.send_span_s = max(last - t0, 1.0 / rate)
        await asyncio.gather(*tasks)

    @staticmethod
    async def _guarded(phase: Phase, act: Callable[[int], Awaitable[None]], k: int) -> None:
        try:
            await act(k)
        except ApiError as exc:
            phase.errors[f"ApiError {exc.status} {exc.code}"] += 1
        except (RealtimeError, OSError, TimeoutError, asyncpg.PostgresError) as exc:
            phase.errors[type(exc).__name__] += 1
        except Exception as exc:  # an SDK bug must show up, not end the run
            phase.errors[f"unexpected {type(exc).__name__}: {exc}"[:120]] += 1

    async def _run(
        self,
        name: str,
        count: int,
        rate: float,
        act: Callable[[int], Awaitable[None]],
        hold: float = 0.0,
    ) -> Phase:
        """One phase: pace the actions (or ``hold`` still), wait for what they cause, account
        CPU and the server's work, and py-spy the server with ``--profile``."""
        phase = Phase(name)
        self.phases.append(phase)
        self.phase = phase
        spy = None
        if self.args.profile is not None and self.server.proc is not None:
            out = self.args.profile / f"{name.replace(' ', '-')}.txt"
            spy = start_py_spy(self.server.proc.pid, out, duration=120, threads=False)
        start = await self._marks()
        if count:
            await self._paced(phase, count, rate, act)
        await asyncio.sleep(hold)
        await self._drain(phase)
        end = await self._marks()
        await stop_py_spy(spy)
        phase.extra["server"] = server_work(start.server, end.server)
        phase.wall_s = end.wall - start.wall
        phase.rtm_cpu_s = end.rtm - start.rtm
        phase.pg_cpu_s = end.pg - start.pg
        phase.load_cpu_s = end.load - start.load
        phase.cpu_busy = busy_pct(start.cpus, end.cpus, {"irq": ("irq", "softirq")})
        return phase

    async def _drain(self, phase: Phase) -> None:
        """Wait for what is still on its way; stop after ``drain_s``, or 5 s with no progress."""
        started = time.monotonic()
        last_progress, last_left = started, phase.outstanding()
        while phase.outstanding() > 0:
            await asyncio.sleep(0.005)
            now, left = time.monotonic(), phase.outstanding()
            if left != last_left:
                last_progress, last_left = now, left
            if now - last_progress > 5.0 or now - started > self.plan.drain_s:
                break
        phase.drain_s = time.monotonic() - started

    async def idle(self, duration: float) -> Phase:
        """No actions: what 1,000 idle clients cost (heartbeats, the server's timers)."""

        async def nothing(k: int) -> None:
            return None

        return await self._run("idle", 0, 1.0, nothing, hold=duration)

    def _order(self) -> list[int]:
        order = list(range(len(self.customers)))
        self.rng.shuffle(order)
        return order

    def _new_message(self, phase: Phase, customer: int, measured: int) -> int:
        seq = len(self.msg_sent_ns)
        self.msg_sent_ns.append(time.monotonic_ns())
        self.msg_customer.append(customer)
        self.msg_pending.append(self.full_mask)
        self.msg_measured.append(measured)
        self.msg_phase.append(phase)
        phase.expected += self.full_mask.bit_count()
        return seq

    def _failed(self, phase: Phase, seq: int) -> None:
        """A send that raised: whatever of it still arrives is counted apart, not as lost."""
        mask = self.msg_pending[seq]
        phase.expected -= mask.bit_count()
        self.msg_pending[seq] = -1

    async def messages(self, name: str, duration: float, *, keep: bool) -> Phase:
        """Customer -> staff and staff -> customer in turn; ``keep`` the staff messages' ids."""
        order = self._order()
        customers = len(order)

        async def send(k: int) -> None:
            phase = self.phase
            c = self.customers[order[k % customers]]
            by_staff = (k % customers + k // customers) % 2 == 1
            if by_staff:
                manager, measured, text = self.agents[c.agent].manager, 1, STAFF_TEXT
            else:
                manager, measured, text = c.manager, 2 << c.agent, CUSTOMER_TEXT
            assert manager is not None and phase is not None
            seq = self._new_message(phase, c.index, measured)
            try:
                data = await manager.send_message(c.conversation_id, f"{PREFIX}{seq} {text}")
            except BaseException:
                self._failed(phase, seq)
                raise
            if keep and by_staff and isinstance(data, dict):
                self.staff_messages.append((str(data["id"]), c.index))

        rate = self.plan.message_rate
        return await self._run(name, int(rate * duration), rate, send)

    async def typing_phase(self) -> Phase:
        order = self._order()
        customers = len(order)
        rate = self.plan.typing_rate
        count = min(int(rate * self.plan.phase_s), 2 * TYPING_PER_PAIR * customers)

        async def act(k: int) -> None:
            c = self.customers[order[k % customers]]
            side = "staff" if (k % customers + k // customers) % 2 else "customer"
            manager = self.agents[c.agent].manager if side == "staff" else c.manager
            assert manager is not None and self.phase is not None
            waiting = self.typing.setdefault((c.index, side), deque())
            sent = time.monotonic_ns()
            waiting.append(sent)
            self.phase.waiting += 1
            try:
                await manager.send_typing_indicator(c.conversation_id, is_typing=True)
            except BaseException:
                if sent in waiting:
                    waiting.remove(sent)
                    self.phase.waiting -= 1
                raise

        return await self._run("typing", count, self._rate(rate, count), act)

    async def presence_phase(self) -> Phase:
        order = self._order()
        customers = len(order)
        rate = self.plan.presence_rate
        count = min(int(rate * self.plan.phase_s), PRESENCE_PER_CUSTOMER * customers)

        async def act(k: int) -> None:
            c = self.customers[order[k % customers]]
            status = "away" if (k // customers) % 2 == 0 else "online"
            assert c.manager is not None and self.phase is not None
            waiting = self.presence.setdefault(c.index, deque())
            entry = (status, time.monotonic_ns())
            waiting.append(entry)
            self.phase.waiting += 1
            try:
                await c.manager.update_presence(None, c.customer_id, status)
            except BaseException:
                if entry in waiting:
                    waiting.remove(entry)
                    self.phase.waiting -= 1
                raise

        return await self._run("presence", count, self._rate(rate, count), act)

    async def read_phase(self) -> Phase:
        """Each customer reads the staff messages sent to it in the first message phase."""
        todo = list(self.staff_messages)
        self.rng.shuffle(todo)
        rate = self.plan.read_rate

        async def act(k: int) -> None:
            message_id, customer = todo[k]
            manager = self.customers[customer].manager
            assert manager is not None and self.phase is not None
            self.reads[message_id] = time.monotonic_ns()
            self.phase.waiting += 1
            try:
                await manager.mark_message_as_read(message_id)
            except BaseException:
                if self.reads.pop(message_id, None) is not None:
                    self.phase.waiting -= 1
                raise

        return await self._run("read receipts", len(todo), rate, act)

    def _rate(self, rate: float, count: int) -> float:
        """The planned rate, lowered so that ``count`` actions still fill the phase."""
        return min(rate, max(1.0, count / self.plan.phase_s))

    async def restart(self) -> Phase:
        """Stop the server, commit messages while it is down, start it on the same port, and
        time until every subscription is back."""
        phase = Phase("reconnect")
        self.phases.append(phase)
        self.phase = phase
        sockets0 = [m.socket.connections for m in self.managers]
        attempts = _Attempts()
        t_term = time.monotonic_ns()
        old = self.server
        await asyncio.to_thread(old.stop)
        t_down = time.monotonic_ns()
        await self._commit_while_down(phase)
        new = self.new_server()
        spy_load: subprocess.Popen[bytes] | None = None
        pg_procs = self._pg_procs()
        cpu_at_accept: list[dict[int, float]] = []

        def snapshot() -> None:
            nonlocal spy_load
            cpu_at_accept.append(self._window_cpu(new, pg_procs))
            if self.args.profile is not None:
                # The load generator too, from now: its SDK clients reconnect on the other CPU.
                spy_load = _py_spy_fast(os.getpid(), self.args.profile / "reconnect-load.txt")

        accepting = asyncio.create_task(_accepting(new.port, snapshot))
        starting = asyncio.create_task(asyncio.to_thread(new.start, 120.0))
        spy = None
        if self.args.profile is not None:
            # Attached while the new process loads (before it accepts): the rejoin storm.
            while new.proc is None and not starting.done():
                await asyncio.sleep(0.001)
            if new.proc is not None:
                spy = _py_spy_fast(new.proc.pid, self.args.profile / "reconnect.txt")
        serving = asyncio.create_task(_serving(new.http))
        await starting
        t_accept = await asyncio.wait_for(accepting, 30)
        t_serving = await asyncio.wait_for(serving, 30)
        if self.pin and self.args.pg_cpu != "server" and self.embedded is not None:
            self.pin_postgres()
        deadline = time.monotonic() + 60.0
        all_sockets_ns = 0
        while time.monotonic() < deadline:
            now = time.monotonic_ns()
            if not all_sockets_ns and all(
                m.socket.connections > n for m, n in zip(self.managers, sockets0, strict=True)
            ):
                all_sockets_ns = now
            if all_sockets_ns and min(self.subscribed_ns) > t_term:
                break
            await asyncio.sleep(0.005)
        cpu_at_end = self._window_cpu(new, self._pg_procs())
        attempts.stop()
        await stop_py_spy(spy)
        await stop_py_spy(spy_load)
        back = sorted(t - t_accept for t in self.subscribed_ns if t > t_term)
        phase.lat_ns = [back[-1]] if back else []
        phase.waiting = sum(1 for t in self.subscribed_ns if t <= t_term)  # never came back

        def ms(ns: int) -> float:
            return round(ns / 1e6, 1)

        phase.extra = {
            "stop_ms": ms(t_down - t_term),
            "down_ms": ms(t_accept - t_down),
            "serving_ms": ms(t_serving - t_accept),
            "all_sockets_connected_ms": ms(all_sockets_ns - t_accept) if all_sockets_ns else None,
            "resubscribed_p50_ms": ms(back[len(back) // 2]) if back else None,
            "resubscribed_max_ms": ms(back[-1]) if back else None,
            "from_sigterm_to_all_back_ms": ms(back[-1] + t_accept - t_term) if back else None,
            "subscriptions": len(self.subscribed_ns),
            "reconnects": sum(m.socket.connections for m in self.managers) - sum(sockets0),
            "sdk_attempts": attempts.summary(t_down, t_accept),
            "window_cpu_ms": _cpu_between(cpu_at_accept[0], cpu_at_end),
            "every_25ms": attempts.timeline(t_accept, back),
        }
        await self._drain(phase)  # the messages committed during the outage
        return phase

    def _pg_procs(self) -> list[psutil.Process]:
        return postgres_procs(postmaster_of(self.embedded)) if self.embedded else []

    def _window_cpu(self, server: RtmServer, pg: list[psutil.Process]) -> dict[int, float]:
        """CPU seconds so far by process id: the server (key 0), this load generator (key 1)
        and each PostgreSQL process, for the CPU spent inside the reconnect window."""
        cpu = {1: proc_cpu(self.me)}
        if server.proc is not None:
            cpu[0] = proc_cpu(psutil.Process(server.proc.pid))
        for proc in pg:
            cpu[proc.pid] = proc_cpu(proc)
        return cpu

    async def _commit_while_down(self, phase: Phase) -> None:
        """Staff messages committed by SQL while no server runs: they arrive on resume."""
        n = min(self.plan.outage_messages, len(self.customers))
        if not n:
            return
        picked = self.rng.sample(range(len(self.customers)), n)
        seqs = [self._new_message(phase, k, 0) for k in picked]
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute(
                "INSERT INTO public.customer_messages "
                "(conversation_id, sender_type, sender_id, content) "
                "SELECT conv, 'staff', agent, body "
                "FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS t(conv, agent, body)",
                [self.customers[k].conversation_id for k in picked],
                [self.agents[self.customers[k].agent].user_id for k in picked],
                [f"{PREFIX}{seq} {STAFF_TEXT}" for seq in seqs],
            )
        finally:
            await conn.close()
        phase.actions = n

    async def delivery_states(self) -> dict[str, Any]:
        """The delivery status rows of this run's messages, which the SDK's automatic
        acknowledgements should have turned 'delivered' (or the receipts 'read'); the messages
        still 'sent', by phase."""
        await asyncio.sleep(1.0)  # acknowledgements go out 50 ms after a burst
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetch(
                "SELECT d.status, m.content FROM public.message_delivery_status d "
                "JOIN public.customer_messages m ON m.id = d.message_id "
                "WHERE m.content LIKE $1 AND m.conversation_id = ANY($2::uuid[])",
                PREFIX + "%",
                [
                    c.conversation_id for c in self.customers
                ],  # this run's (a database may be reused)
            )
        finally:
            await conn.close()
        states = Counter(r["status"] for r in rows)
        unacked: Counter[str] = Counter()
        for r in rows:
            if r["status"] == "sent":
                content = r["content"]
                seq = int(content[len(PREFIX) : content.index(" ")])
                unacked[self.msg_phase[seq].name] += 1
        return {"states": dict(states), "still_sent_by_phase": dict(unacked)}

    def pin_postgres(self) -> None:
        cpus = {CLIENT_CPU} if self.args.pg_cpu == "load" else {SERVER_CPU, CLIENT_CPU}
        assert self.embedded is not None
        pin_processes(postgres_procs(postmaster_of(self.embedded)), cpus)


def _py_spy_fast(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy at 1,000 Hz: the rejoin storm lasts a fraction of a second."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "-p", str(pid), "-d", "60", "-r", "1000", "-f", "raw", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class _Attempts:
    """The SDK's connection attempts during the reconnect phase, timed by wrapping the
    ``connect`` its sockets call: when the clients tried, and how long after the new server
    accepted each one's first attempt came (a backoff waited out) and succeeded."""

    def __init__(self) -> None:
        self.tries: list[tuple[int, int, int, bool]] = []  # (client, start, end, opened)
        self.errors: Counter[str] = Counter()
        # The socket module's global, looked up at every attempt (not re-exported: vars()).
        self._connect = vars(sdk_socket)["connect"]
        vars(sdk_socket)["connect"] = self._wrapped

    def _wrapped(self, *args: Any, **kwargs: Any) -> Any:
        inner = self._connect(*args, **kwargs)
        client = id(asyncio.current_task())
        tries, errors = self.tries, self.errors

        async def timed() -> Any:
            start = time.monotonic_ns()
            try:
                ws = await inner
            except BaseException as exc:
                tries.append((client, start, time.monotonic_ns(), False))
                errors[type(exc).__name__] += 1
                raise
            tries.append((client, start, time.monotonic_ns(), True))
            return ws

        return timed()

    def stop(self) -> None:
        vars(sdk_socket)["connect"] = self._connect

    def timeline(self, t_accept: int, subscribed: list[int]) -> dict[str, list[int]]:
        """At each 25 ms after the new process accepted: how many clients had started an
        attempt since (one whose attempt was on its way already is not counted), how many had
        their socket open, and how many subscriptions were back: where the window's time goes."""
        first: dict[int, int] = {}
        opened: dict[int, int] = {}
        for client, start, end, ok in self.tries:
            if start >= t_accept:
                first[client] = min(first.get(client, start), start)
            if ok:
                opened[client] = min(opened.get(client, end), end)
        step = 25_000_000
        last = max(subscribed, default=0)
        ticks = range(step, last + 2 * step, step)

        def upto(times: list[int]) -> list[int]:
            return [sum(1 for t in times if t <= tick) for tick in ticks]

        return {
            "tried": upto([t - t_accept for t in first.values()]),
            "open": upto([t - t_accept for t in opened.values()]),
            "subscribed": upto(subscribed),
        }

    def summary(self, t_down: int, t_accept: int) -> dict[str, Any]:
        def ms(ns: int) -> float:
            return round(ns / 1e6, 1)

        def p(values: list[int], q: float) -> float | None:
            return ms(sorted(values)[int(q * (len(values) - 1))]) if values else None

        clients = {c for c, *_ in self.tries}
        first_after: dict[int, int] = {}
        opened: dict[int, int] = {}
        for client, start, end, ok in sorted(self.tries, key=lambda t: t[1]):
            if start >= t_accept:
                first_after.setdefault(client, start - t_accept)
            if ok:
                opened.setdefault(client, end - t_accept)
        failed_while_down = [t for t in self.tries if not t[3] and t[1] < t_accept]
        gaps: list[int] = []  # spacing of one client's attempts while the port refused
        last: dict[int, int] = {}
        for client, start, _, _ in sorted(self.tries, key=lambda t: t[1]):
            if start < t_accept and client in last:
                gaps.append(start - last[client])
            last[client] = start
        return {
            "clients": len(clients),
            "attempts": len(self.tries),
            "failed_before_accept": len(failed_while_down),
            "failed_p50_max_ms_before_accept": (
                p([t_accept - t[1] for t in failed_while_down], 0.5),
                p([t_accept - t[1] for t in failed_while_down], 1.0),
            ),
            "failures_took_p50_max_ms": (
                p([t[2] - t[1] for t in failed_while_down], 0.5),
                p([t[2] - t[1] for t in failed_while_down], 1.0),
            ),
            "errors": dict(self.errors),
            "retry_gap_p50_max_ms": (p(gaps, 0.5), p(gaps, 1.0)),
            "first_try_after_accept_p50_max_ms": (
                p(list(first_after.values()), 0.5),
                p(list(first_after.values()), 1.0),
            ),
            "opened_p50_max_ms": (p(list(opened.values()), 0.5), p(list(opened.values()), 1.0)),
        }


async def _serving(base: str) -> int:
    """monotonic_ns when ``base``'s ``/healthz`` first answers (probed every 5 ms): the new
    process listens before it has loaded its application, and queues connections meanwhile."""
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return time.monotonic_ns()
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.005)


def _cpu_between(start: dict[int, float], end: dict[int, float]) -> dict[str, float]:
    """CPU ms of the server, the load generator and PostgreSQL between two snapshots
    (a PostgreSQL process that started in between counts whole)."""

    def ms(key: int) -> float:
        return round(1000 * (end.get(key, 0.0) - start.get(key, 0.0)), 1)

    pg = sum(ms(key) for key in end if key not in (0, 1))
    return {"rtm": ms(0), "load": ms(1), "pg": round(pg, 1)}


async def _accepting(port: int, snapshot: Callable[[], None]) -> int:
    """monotonic_ns when 127.0.0.1:``port`` first accepts a TCP connection (probed every 5 ms);
    ``snapshot`` runs right then."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.005)
            continue
        at = time.monotonic_ns()
        snapshot()
        writer.close()
        return at


# -- the run ------------------------------------------------------------------------------


def _line(s: dict[str, Any]) -> str:
    text = (
        f"{s['phase']}: {s['actions']} actions at {s['rate']}/s (target {s['target_rate']}/s), "
        f"p50/p95/p99/avg/max {s['p50_ms']}/{s['p95_ms']}/{s['p99_ms']}/{s['avg_ms']}/"
        f"{s['max_ms']} ms over {s['measured']}, not seen {s['not_seen']}"
    )
    for key in ("customer->staff p50/p95_ms", "staff->customer p50/p95_ms"):
        if key in s:
            text += f", {key.replace('_ms', ' ms')} {'/'.join(map(str, s[key]))}"
    if "expected" in s:
        text += (
            f", deliveries {s['delivered']}/{s['expected']} (lost {s['lost']}, dup "
            f"{s['duplicated']}, misrouted {s['misrouted']})"
        )
    if s["errors"]:
        text += f", errors {s['errors']}"
    return text + (
        f", CPU rtm/pg/load {s['rtm_cpu_pct']}/{s['pg_cpu_pct']}/{s['load_cpu_pct']}%, "
        f"busy {s['cpu_busy_pct']}, other load {s['other_cpu_pct']}%"
    )


async def bench(args: argparse.Namespace, plan: Plan, workdir: Path, pin: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"clients": plan.clients, "staff": plan.staff}
    external = os.environ.get("RTM_DATABASE_URL")
    embedded: Path | None = None
    if external:
        database_url = external
    else:
        embedded = workdir / "rtm-data"
        db = EmbeddedDatabase(
            embedded, SERVER_CPU if pin else None, args.rtm_cmd or default_rtm_cmd()
        )
        try:
            database_url = await asyncio.to_thread(db.start)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            result["error"] = f"embedded database: {exc}"
            print(f"ERROR {result['error']}", flush=True)
            return result
    b = Bench(plan, args, workdir, pin, database_url, embedded)
    try:
        print(f"starting rtm serve ({'external' if external else 'embedded'} database)", flush=True)
        server = b.new_server()
        started = time.monotonic()
        await asyncio.to_thread(server.start, 120.0)
        result["startup_s"] = round(time.monotonic() - started, 1)
        if pin and args.pg_cpu != "server" and embedded is not None:
            b.pin_postgres()
        result["setup"] = await b.create_data()
        print(
            f"connecting {plan.customers} customers + {plan.staff} staff managers "
            f"({result['setup']['setup_s']} s set-up)",
            flush=True,
        )
        result["connect"] = await b.connect_all()
        print(f"connected: {result['connect']}", flush=True)
        # 1,000 managers' objects would make this process's full collections long enough to
        # count as latency (one application has one manager): keep them out of the phases.
        gc.collect()
        gc.freeze()
        gc.disable()
        await asyncio.sleep(1.0)
        phases = []
        runs: list[Callable[[], Awaitable[Phase]]] = [
            partial(b.idle, min(plan.phase_s, 5.0)),
            partial(b.messages, "messages", plan.phase_s, keep=True),
            b.typing_phase,
            b.presence_phase,
            b.read_phase,
            b.restart,
            partial(b.messages, "messages after restart", plan.after_restart_s, keep=False),
        ]
        for run in runs:
            phase = await run()
            summary = phase.summary()
            phases.append(summary)
            print(_line(summary), flush=True)
            work = summary.get("server")
            if phase.name == "reconnect":
                print(f"  reconnect: {phase.extra}", flush=True)
            elif work is not None:
                api = ", ".join(
                    f"{r} x{v['n']} ({v['mean_ms']} ms)" for r, v in work["api"].items()
                )
                print(
                    f"  server: API {api or 'none'}; changes {work['changes']}; "
                    f"feed commit->sockets mean {work['feed_mean_ms']} ms, "
                    f"over 10 ms {work['feed_over_10ms_pct']} %",
                    flush=True,
                )
            gc.collect()
        result["phases"] = phases
        result["delivery_status"] = await b.delivery_states()
        print(f"delivery status rows of this run's messages: {result['delivery_status']}")
        result["client_errors"] = dict(b.errors)
        result["client_error_samples"] = b.error_samples
        result["stray_messages"] = b.stray
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"ERROR {result['error']}", flush=True)
    finally:
        gc.enable()
        await b.close()
        for server in b.servers:
            await asyncio.to_thread(server.stop)
        problems = [f"{s.name}: {line}" for s in b.servers for line in s.problems()]
        result["server_log_problems"] = problems[:20]
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            for s in b.servers:
                for path in (s.out, s.err):
                    if path.exists():
                        shutil.copy(path, args.logs / path.name)
    return result


def figures(r: dict[str, Any]) -> list[tuple[Target, float | None]]:
    by_name = {p["phase"]: p for p in r["phases"]}
    out = []
    for t in TARGETS:
        phase = by_name.get(t.key, {})
        key = "max_ms" if t.key == "reconnect" else f"{t.stat}_ms"
        out.append((t, phase.get(key)))
    return out


def losses(r: dict[str, Any]) -> tuple[int, int, int]:
    """Lost, duplicated and misrouted message deliveries over every phase."""
    lost = sum(p.get("lost", 0) for p in r["phases"])
    dup = sum(p.get("duplicated", 0) for p in r["phases"])
    mis = sum(p.get("misrouted", 0) for p in r["phases"])
    return lost, dup, mis


def table(r: dict[str, Any]) -> str:
    lines = [
        "| metric | measured | documented target | our target (20x better) "
        "| pass/fail (documented / ours) |",
        "|---|---|---|---|---|",
    ]
    for t, value in figures(r):
        measured = f"{value} ms" if value is not None else "none"
        doc = "PASS" if value is not None and value < t.documented_ms else "FAIL"
        ours = "PASS" if value is not None and value < t.ours_ms else "FAIL"
        lines.append(
            f"| {t.metric} ({t.stat}) | {measured} | < {t.documented_ms:,.0f} ms "
            f"| < {t.ours_ms:,.0f} ms | {doc} / {ours} |"
        )
    lost, dup, mis = losses(r)
    ok = "PASS" if lost + dup + mis == 0 else "FAIL"
    lines.append(
        f"| messages lost / duplicated / misrouted | {lost} / {dup} / {mis} | 0 | 0 | {ok} / {ok} |"
    )
    return "\n".join(lines)


def notes(r: dict[str, Any]) -> list[str]:
    out = []
    by_name = {p["phase"]: p for p in r["phases"]}
    for p in r["phases"]:
        if p["not_seen"]:
            out.append(f"NOTE {p['phase']}: {p['not_seen']} awaited events never arrived")
        if p["errors"]:
            out.append(f"NOTE {p['phase']}: failed calls {p['errors']}")
        if p["load_cpu_pct"] > LOAD_BUSY_PCT:
            out.append(
                f"NOTE {p['phase']}: the load generator was at {p['load_cpu_pct']:.0f}% CPU; "
                "its own queueing is part of these figures"
            )
        if p["phase"] != "reconnect" and p["rate"] and p["rate"] < 0.9 * p["target_rate"]:
            out.append(f"NOTE {p['phase']}: sent {p['rate']}/s of {p['target_rate']}/s")
        if p["other_cpu_pct"] > NOISY_PCT:
            out.append(
                f"WARNING {p['phase']}: ~{p['other_cpu_pct']:.0f}% of the two CPUs went to other "
                "processes: figures may be disturbed"
            )
    unacked = r.get("delivery_status", {}).get("still_sent_by_phase")
    if unacked:
        out.append(
            f"NOTE delivery acknowledgements: {sum(unacked.values())} deliveries that reached "
            f"their recipient are still 'sent' (by phase: {unacked})"
        )
    rc = by_name.get("reconnect")
    if rc:
        out.append(
            f"reconnect: old server stopped in {rc['stop_ms']} ms, new one accepting "
            f"{rc['down_ms']} ms later; every socket connected again after "
            f"{rc['all_sockets_connected_ms']} ms, every subscription after "
            f"{rc['resubscribed_max_ms']} ms (median {rc['resubscribed_p50_ms']} ms); "
            f"{rc['from_sigterm_to_all_back_ms']} ms from SIGTERM to all back; "
            f"{rc['actions']} messages committed during the outage: lost {rc.get('lost', 0)}, "
            f"duplicated {rc.get('duplicated', 0)}"
        )
    return out


async def amain(args: argparse.Namespace, plan: Plan, pin: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rtm-sdk-") as tmp:
        busy = await wait_quiet(args.quiet_wait)
        if busy > 10:
            print(f"  machine still busy ({busy:.0f}%); measuring anyway", flush=True)
        try:
            return await bench(args, plan, Path(tmp), pin)
        finally:
            await asyncio.to_thread(stop_started)


def main() -> int:
    parser = argparse.ArgumentParser(description="SDK benchmark of the documented metrics.")
    parser.add_argument(
        "--clients", type=int, default=None, help="SDK clients in all (default 1000; quick 100)"
    )
    parser.add_argument(
        "--staff", type=int, default=None, help="staff managers among them (default 2 to 10)"
    )
    parser.add_argument("--quick", action="store_true", help="100 clients, 3 s phases")
    parser.add_argument("--duration", type=float, default=None, help="seconds per phase (15)")
    parser.add_argument("--message-rate", type=float, default=100.0, help="messages/s")
    parser.add_argument("--typing-rate", type=float, default=100.0, help="typing calls/s")
    parser.add_argument("--presence-rate", type=float, default=50.0, help="presence calls/s")
    parser.add_argument("--read-rate", type=float, default=50.0, help="read receipts/s")
    parser.add_argument(
        "--outage-messages", type=int, default=20, help="committed while the server is down"
    )
    parser.add_argument("--batch", type=int, default=100, help="clients connecting at once")
    parser.add_argument(
        "--reconnect-base", type=float, default=None, help="SDK reconnect_base (its default)"
    )
    parser.add_argument(
        "--reconnect-max", type=float, default=None, help="SDK reconnect_max (its default)"
    )
    parser.add_argument(
        "--pg-cpu",
        choices=("server", "load", "all"),
        default="all",
        help="where the embedded PostgreSQL runs: both CPUs (default), CPU 0 with rtm, or CPU 1",
    )
    parser.add_argument(
        "--server-env",
        type=lambda s: tuple(s.split("=", 1)),
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of rtm serve (repeatable), e.g. RTM_RATE_TYPING=20/minute",
    )
    parser.add_argument(
        "--agents-presence",
        action="store_true",
        help="each customer also follows its agent's presence (the customer chat's list)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet-wait", type=float, default=None, help="wait for idle CPUs, s")
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the server in each phase (raw, here)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--logs", type=Path, default=None, help="copy the server logs here")
    parser.add_argument(
        "--rtm-cmd",
        type=lambda s: s.split(),
        default=None,
        help="command that runs the rtm CLI (default: rtm beside this python)",
    )
    parser.add_argument("--time-limit", type=float, default=None, help="abort after this many s")
    args = parser.parse_args()

    clients = args.clients or (100 if args.quick else 1000)
    staff = args.staff or min(10, max(2, clients // 100))
    if not 1 <= staff <= 60 or clients - staff < staff:
        parser.error("need 1 to 60 staff managers and at least as many customers")
    phase_s = args.duration or (3.0 if args.quick else 15.0)
    if args.quiet_wait is None:
        args.quiet_wait = 1.0 if args.quick else 5.0
    plan = Plan(
        clients=clients,
        staff=staff,
        phase_s=phase_s,
        after_restart_s=min(phase_s, 5.0),
        message_rate=args.message_rate,
        typing_rate=args.typing_rate,
        presence_rate=args.presence_rate,
        read_rate=args.read_rate,
        outage_messages=args.outage_messages,
        batch=args.batch,
        drain_s=10.0 if args.quick else 20.0,
        seed=args.seed,
    )
    outcome = run_pinned(
        plan,
        lambda pin: amain(args, plan, pin),
        fds=(2 * clients + 1000, 2 * clients + 200, f"{clients} clients"),
        pg_cpu=args.pg_cpu,
        time_limit=args.time_limit or (120.0 if args.quick else 420.0),
    )
    if isinstance(outcome, int):
        return outcome
    result = outcome
    print()
    if "phases" in result:
        print(table(result))
        print()
        print("\n".join(notes(result)))
    else:
        print(f"no figures: {result.get('error')}")
    if result.get("client_errors"):
        print(f"client errors (on_error): {result['client_errors']}")
    for sample in result.get("client_error_samples", []):
        print(f"    {sample}")
    if result.get("stray_messages"):
        print(f"messages not sent by this run: {result['stray_messages']}")
    print_log_problems(result.get("server_log_problems", []))
    if args.profile is not None:
        for path in sorted(args.profile.glob("*.txt")):
            print()
            print(summarize_profile(path, top=15))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if "error" in result:
        return 1
    return 1 if sum(losses(result)) else 0


if __name__ == "__main__":
    sys.exit(main())
