#!/usr/bin/env python3
"""Fan-out benchmark: realtime-messaging (``rtm serve``) against a bare picows broadcast server.

Each server runs alone, pinned to CPU 0; the load generator (this process, picows client +
uvloop) runs pinned to CPU 1. Traffic goes to 127.0.0.1 only. For each server:

* N clients connect in batches, in rooms of 2 to 5 members. realtime-messaging clients speak
  Phoenix vsn 2.0.0 (JSON arrays), authenticate with the anon key and join
  ``realtime:room-<k>`` with ``broadcast.self = false``; baseline clients connect to
  ``/ws?room=room-<k>``.
* idle RSS per connection = (server RSS with N idle connections - RSS at start) / N; for
  realtime-messaging only its Python process counts (the embedded PostgreSQL does not).
* ``fixed``: a fixed rate (default 5,000 msgs/s) to random rooms, sent by a random member;
  p50/p99 of delivery latency (receipt ``monotonic_ns`` - the sender's stamp).
* ``sat``: closed loop with a window of W messages not yet fully delivered; deliveries/s =
  deliveries / (first send -> last delivery), and server CPU% over the phase.
* ``half``: a fixed rate at half the saturated message rate; p50/p99.

Every message carries a sequence number; every phase checks that each member other than the
sender got it exactly once (lost / duplicated / misrouted deliveries).

``--multi`` runs the same workload against several server-side set-ups instead (``--configs``):
one process; one process on Redis; two ``rtm serve`` processes on one Redis with the clients
alternating between them (``spread``) or with each room's publisher on one and its other members
on the other (``cross``); ``rtm serve --workers 2`` on Redis (``workers2``) or on the PostgreSQL
broker (``workers2-pg``), when this ``rtm serve`` has ``--workers``. They share one embedded
PostgreSQL and one ``redis-server`` started here on a free loopback port, all pinned to the
server CPU. In every set-up each room's first member publishes, so the messages are the same.
Per phase it also reports the CPU of each process, of Redis and of PostgreSQL, CPU per delivery,
and the Redis commands per published message (``INFO commandstats`` before and after).

``--idle`` connects idle sockets in four steps up to the open-file limit and reports memory
per connection and the connect rate of each step; ``--connector lean`` makes them with the lean
client of ``lean.py`` (a prepared upgrade and join, many in flight, over 64 loopback source
addresses), which costs the generator less CPU per connection than either server spends, so that
the rate is the server's.

    python benchmarks/fanout/run.py [--clients 10000] [--quick] [--profile DIR] [--json FILE]
    python benchmarks/fanout/run.py --idle --connector lean
    python benchmarks/fanout/run.py --multi [--configs one,spread,cross] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import uvloop
from picows import WSListener, WSMsgType, WSTransport

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import (  # noqa: E402  (benchmarks/common.py, put on the path above)
    CLIENT_CPU,
    NOISY_PCT,
    SERVER_CPU,
    EmbeddedDatabase,
    RtmServer,
    ServerProcess,
    busy_pct,
    close_reason,
    connect_ws,
    cpu_times,
    default_rtm_cmd,
    disconnect_all,
    exit_on_sigterm,
    heartbeats,
    pct_ms,
    pin_load_process,
    postgres_procs,
    print_log_problems,
    proc_cpu,
    raise_fd_limit,
    start_py_spy,
    stop_py_spy,
    stop_started,
    wait_quiet,
)
from lean import lean_connect  # noqa: E402  (beside this file)

JWT_SECRET = "fanout-benchmark-secret-0123456789abcdef"  # a throwaway secret for a temp data dir
SPY: dict[str, Any] = {"duration": 300, "threads": True}  # py-spy: at most 5 min, by thread

#: A ~300-byte chat message, the same bytes in every published payload.
BODY = orjson.dumps(
    {
        "id": "5b0e6a52-4b8e-4f53-9a57-3c1f0c8d2e71",
        "conversation_id": "0f9d3c2a-7e1b-4c55-8a61-9b2d4e6f8a10",
        "sender_type": "customer",
        "content": (
            "Hi! I ordered the blue rain jacket last Tuesday (order 48213) and the tracking "
            "page has not moved since Friday. Could you check whether it shipped?"
        ),
        "created_at": "2025-11-26T10:15:42.123Z",
    }
)


@dataclass
class Plan:
    clients: int
    rate: float  # messages per second in the fixed-rate phase
    fixed_s: float
    sat_s: float
    half_s: float
    window: int
    batch: int
    idle_s: float
    drain_s: float
    seed: int
    #: the member that publishes in each room: random (None) or always this position
    sender: int | None = None
    #: --idle: connect in these cumulative steps, measure memory after each, no traffic
    idle_steps: tuple[int, ...] = ()
    #: the client that connects: picows's (every phase) or the lean one (--idle only)
    connector: str = "picows"


# -- servers ------------------------------------------------------------------------------


class RtmFanoutServer(RtmServer):
    """``rtm serve`` on its embedded PostgreSQL; clients join ``realtime:room-<k>``."""

    kind = "rtm"

    def url(self, room: int) -> str:
        return self.ws_url(self.anon_key)

    def client_url(self, client: Client) -> str:
        return self.url(client.room)


class BaselineServer(ServerProcess):
    """``baseline_server.py``: picows broadcast by ``/ws?room=room-<k>``, no protocol."""

    @property
    def kind(self) -> str:
        return self.name

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [sys.executable, str(HERE / "baseline_server.py"), "--port", str(self.port)]
        return cmd, dict(os.environ)

    def ready(self, output: str) -> bool:
        return re.search(r"ready (\d+)", output) is not None

    def url(self, room: int) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?room=room-{room}"

    def client_url(self, client: Client) -> str:
        return self.url(client.room)


Server = RtmFanoutServer | BaselineServer


def make_server(kind: str, workdir: Path, cpu: int | None, rtm_cmd: list[str]) -> Server:
    """Each server under test pinned to ``cpu`` (``SERVER_CPU``); stopped by pid."""
    if kind == "rtm":
        return RtmFanoutServer(workdir, cpu, rtm_cmd, JWT_SECRET)
    return BaselineServer(kind, workdir, cpu)


class Probe:
    """CPU time and RSS of a server: its own process, plus children unless excluded."""

    def __init__(self, pid: int, *, children: bool) -> None:
        self.proc = psutil.Process(pid)
        self.children = children

    def _procs(self) -> list[psutil.Process]:
        procs = [self.proc]
        if self.children:
            for child in self.proc.children(recursive=True):
                try:
                    if "postgres" not in child.name():
                        procs.append(child)
                except psutil.Error:
                    pass
        return procs

    def cpu(self) -> float:
        total = 0.0
        for proc in self._procs():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def threads(self) -> int:
        try:
            return int(self.proc.num_threads())
        except psutil.Error:
            return 0

    def rss(self) -> int:
        total = 0
        for proc in self._procs():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total


# -- load generator -----------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    start_seq: int
    end_seq: int = -1
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    duplicated: int = 0
    misrouted: int = 0
    self_delivered: int = 0
    first_send_ns: int = 0
    last_recv_ns: int = 0
    wall_s: float = 0.0
    srv_cpu_s: float = 0.0
    cli_cpu_s: float = 0.0
    disconnects: int = 0
    target_rate: float = 0.0
    cpu_busy: dict[int, dict[str, float]] = field(default_factory=dict)
    server_threads: int = 0
    lat: array[int] = field(default_factory=lambda: array("q"))

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.lat)
        span = (self.last_recv_ns - self.first_send_ns) / 1e9 if self.last_recv_ns else 0.0

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6, 3) if lat else None

        return {
            "phase": self.name,
            "target_msgs_per_s": round(self.target_rate, 1),
            "sent": self.sent,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.expected - self.delivered,
            "duplicated": self.duplicated,
            "misrouted": self.misrouted,
            "self_delivered": self.self_delivered,
            "disconnects": self.disconnects,
            "msgs_per_s": round(self.sent / span, 1) if span else 0.0,
            "deliveries_per_s": round(self.delivered / span, 1) if span else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] / 1e6, 3) if lat else None,
            "server_cpu_pct": round(100 * self.srv_cpu_s / self.wall_s, 1) if self.wall_s else 0,
            "client_cpu_pct": round(100 * self.cli_cpu_s / self.wall_s, 1) if self.wall_s else 0,
            "server_threads": self.server_threads,
            # whole-machine view of the two pinned CPUs: anything above the server's (CPU 0)
            # or the load generator's (CPU 1) own share is other load or hypervisor steal
            "cpu_busy_pct": self.cpu_busy,
            "server_cpu_us_per_delivery": (
                round(1e6 * self.srv_cpu_s / self.delivered, 2) if self.delivered else None
            ),
        }


@dataclass
class Marks:
    wall: float
    server: float
    client: float
    cpus: list[Any]


#: besides busy %, informational: on loopback the sender runs the receiver's TCP path in
#: softirq; here that time is charged to the sending process as well
CPU_PARTS = {"softirq": ("softirq",), "irq": ("irq",), "steal": ("steal",)}


class Client(WSListener):
    """One subscriber socket; also publishes for its room."""

    def __init__(self, gen: LoadGen, index: int, room: int, pos: int) -> None:
        self.gen = gen
        self.index = index
        self.room = room
        self.pos = pos
        self.transport: WSTransport | None = None
        self.joined: asyncio.Future[None] | None = None
        self.last_sent = 0.0
        if gen.rtm:
            self.prefix = (
                b'["1",null,"realtime:room-%d","broadcast",'
                b'{"type":"broadcast","event":"m","payload":{"t":' % room
            )
            self.suffix = b"}}]"
        else:
            self.prefix = b'room-%d|{"t":' % room
            self.suffix = b"}"

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        data = frame.get_payload_as_bytes()
        i = data.find(b'"t":')
        if i >= 0:
            self.gen.on_delivery(self, data, i)
        else:
            self.gen.on_control(self, data)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.gen.on_disconnect(self, transport)


class LoadGen:
    def __init__(self, plan: Plan, server: Server | Cluster, probe: Probe | ClusterProbe) -> None:
        self.plan = plan
        self.server = server
        self.probe = probe
        self.rtm = not isinstance(server, BaselineServer)
        self.me = psutil.Process()
        self.rng = random.Random(plan.seed)
        # rooms of 2..5 members, the same partition for both servers (same seed)
        self.rooms: list[list[Client]] = []
        self.clients: list[Client] = []
        left = plan.clients
        while left > 0:
            size = min(left, self.rng.randint(2, 5))
            if left - size == 1:  # never leave a room of one
                size += 1 if size < 5 else -1
            room = len(self.rooms)
            members = []
            for pos in range(size):
                client = Client(self, len(self.clients), room, pos)
                members.append(client)
                self.clients.append(client)
            self.rooms.append(members)
            left -= size
        # per message: bits of the members still to receive it, its room, its sender
        self.pending: list[int] = []
        self.room_of: list[int] = []
        self.sender_of: list[int] = []
        self.phases: list[Phase] = []
        self.phase: Phase | None = None
        self.outstanding = 0
        self.closed_loop_until = 0
        self.closing = False
        self.disconnects = 0
        self.close_codes: Counter[str] = Counter()
        self.control: Counter[str] = Counter()
        self.control_samples: list[str] = []
        self.connect_errors: Counter[str] = Counter()
        self.join_s: list[float] = []
        self.upgrade_s: list[float] = []
        self.slow_batches: set[int] = set()
        self.stray = 0

    # -- connections ----------------------------------------------------------------------

    join_payload = (
        b'["1","1","realtime:room-%d","phx_join",{"config":{"broadcast":{"self":false}}}]'
    )

    async def connect_all(self, start: int = 0, stop: int | None = None) -> dict[str, Any]:
        """Connect (and for rtm join) clients ``start:stop``, ``plan.batch`` at a time: in
        batches one after the other (picows), or (lean) that many in flight, each finished one
        making room for the next, so that no connection waits for the slowest of a batch."""
        started = time.monotonic()
        cpu0 = self._my_cpu()
        clients = self.clients[start:stop]
        self.join_s, self.upgrade_s, self.slow_batches = [], [], set()
        if self.plan.connector == "lean":
            window = asyncio.Semaphore(self.plan.batch)

            async def one(client: Client, k: int) -> None:
                async with window:
                    await self._connect(client, k // self.plan.batch)

            await asyncio.gather(*(one(c, k) for k, c in enumerate(clients)))
        else:
            for at in range(0, len(clients), self.plan.batch):
                batch = clients[at : at + self.plan.batch]
                await asyncio.gather(*(self._connect(c, at // self.plan.batch) for c in batch))
        took = time.monotonic() - started
        client_cpu = self._my_cpu() - cpu0

        out: dict[str, Any] = {
            "connect_s": round(took, 2),
            "connects_per_s": round(len(clients) / took, 1),
            # the load generator's own CPU: near 100 % means the rate is the client's
            "client_cpu_pct": round(100 * client_cpu / took, 1),
            # connect + upgrade + (rtm) join reply, per client
            "join_p50_ms": pct_ms(self.join_s, 0.5),
            "join_p99_ms": pct_ms(self.join_s, 0.99),
            "join_max_ms": pct_ms(self.join_s, 1.0),
            # the TCP connect + WebSocket upgrade alone
            "upgrade_p50_ms": pct_ms(self.upgrade_s, 0.5),
            "upgrade_p99_ms": pct_ms(self.upgrade_s, 0.99),
            "upgrade_max_ms": pct_ms(self.upgrade_s, 1.0),
            "slow_upgrades_over_1s": sum(1 for t in self.upgrade_s if t > 1.0),
            "slow_joins_over_1s": sum(1 for t in self.join_s if t > 1.0),
            "batches_with_slow_joins": sorted(self.slow_batches)[:20],
            "connect_errors": dict(self.connect_errors),
        }
        return out

    async def _connect(self, client: Client, batch: int) -> None:
        if self.plan.connector == "lean":
            await self._connect_lean(client, batch)
            return
        started = time.monotonic()
        url = self.server.client_url(client)
        await connect_ws(client, url, self.connect_errors, f"client {client.index}", 2048)
        self.upgrade_s.append(time.monotonic() - started)
        if self.rtm:
            client.joined = asyncio.get_running_loop().create_future()
            assert client.transport is not None
            client.transport.send(WSMsgType.TEXT, self.join_payload % client.room)
            client.last_sent = time.monotonic()
            try:
                await asyncio.wait_for(client.joined, 60)
            except TimeoutError as exc:
                raise RuntimeError(f"client {client.index}: no join reply in 60 s") from exc
        took = time.monotonic() - started
        self.join_s.append(took)
        if took > 1.0:
            self.slow_batches.add(batch)

    async def _connect_lean(self, client: Client, batch: int) -> None:
        """Connect (and join) an idle socket with the lean client (lean.py)."""
        started = time.monotonic()
        join = self.join_payload % client.room if self.rtm else None
        try:
            sock = await lean_connect(self.server.client_url(client), join, client.index)
        except Exception as exc:
            self.connect_errors[type(exc).__name__] += 1
            raise RuntimeError(f"client {client.index} cannot connect: {exc!r}") from exc
        client.transport = sock  # type: ignore[assignment]  # heartbeats and disconnects only
        client.last_sent = time.monotonic()
        self.upgrade_s.append(sock.upgraded_at - started)
        took = client.last_sent - started
        self.join_s.append(took)
        if took > 1.0:
            self.slow_batches.add(batch)

    async def heartbeats(self) -> None:
        """Phoenix heartbeat from every client at least every 25 s (rtm closes idle sockets)."""
        if not self.rtm:
            return
        await heartbeats(self.clients)

    def close_all(self) -> None:
        self.closing = True
        disconnect_all(self.clients)

    # -- frames ---------------------------------------------------------------------------

    def on_control(self, client: Client, data: bytes) -> None:
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.control["undecodable"] += 1
            return
        if self.rtm and isinstance(msg, list) and len(msg) == 5:
            _, ref, topic, event, payload = msg
            status = payload.get("status") if isinstance(payload, dict) else None
            if event == "phx_reply" and ref == "1" and client.joined is not None:
                if status == "ok":
                    if not client.joined.done():
                        client.joined.set_result(None)
                    return
                if not client.joined.done():
                    client.joined.set_exception(RuntimeError(f"join refused: {payload}"))
            if event == "phx_reply" and ref == "hb" and status == "ok":
                self.control["heartbeat ok"] += 1
                return
            key = f"{event} {status or ''}".strip()
        else:
            key = "unexpected"
        self.control[key] += 1
        if len(self.control_samples) < 10:
            self.control_samples.append(data[:300].decode(errors="replace"))

    def on_delivery(self, client: Client, data: bytes, i: int) -> None:
        now = time.monotonic_ns()
        j = data.find(b",", i)
        sent_ns = int(data[i + 4 : j])
        k = data.find(b'"seq":', j)
        seq = int(data[k + 6 : data.find(b",", k)])
        phase = self.phase
        if phase is None or seq < phase.start_seq:
            phase = self._phase_of(seq)
            if phase is None:
                self.stray += 1
                return
        if self.room_of[seq] != client.room:
            phase.misrouted += 1
            return
        if self.sender_of[seq] == client.pos:
            phase.self_delivered += 1
            return
        bit = 1 << client.pos
        mask = self.pending[seq]
        if not mask & bit:
            phase.duplicated += 1
            return
        mask ^= bit
        self.pending[seq] = mask
        phase.delivered += 1
        phase.last_recv_ns = now
        phase.lat.append(now - sent_ns)
        if not mask:
            self.outstanding -= 1
            if now < self.closed_loop_until:
                self.publish()

    def _phase_of(self, seq: int) -> Phase | None:
        for phase in self.phases:
            if phase.start_seq <= seq and (phase.end_seq < 0 or seq < phase.end_seq):
                return phase
        return None

    def on_disconnect(self, client: Client, transport: WSTransport) -> None:
        if self.closing:
            return
        self.disconnects += 1
        if self.phase is not None:
            self.phase.disconnects += 1
        self.close_codes[close_reason(transport)] += 1
        if client.joined is not None and not client.joined.done():
            client.joined.set_exception(RuntimeError("disconnected before the join reply"))

    def publish(self) -> None:
        phase = self.phase
        assert phase is not None
        rng = self.rng
        room = rng.randrange(len(self.rooms))
        members = self.rooms[room]
        pos = rng.randrange(len(members)) if self.plan.sender is None else self.plan.sender
        sender = members[pos]
        seq = len(self.pending)
        self.pending.append(((1 << len(members)) - 1) & ~(1 << pos))
        self.room_of.append(room)
        self.sender_of.append(pos)
        self.outstanding += 1
        phase.sent += 1
        phase.expected += len(members) - 1
        now = time.monotonic_ns()
        if not phase.first_send_ns:
            phase.first_send_ns = now
        data = b"".join((sender.prefix, b'%d,"seq":%d,"body":' % (now, seq), BODY, sender.suffix))
        assert sender.transport is not None
        sender.transport.send(WSMsgType.TEXT, data)
        sender.last_sent = now / 1e9

    # -- phases ---------------------------------------------------------------------------

    def _begin(self, name: str) -> tuple[Phase, Marks]:
        phase = Phase(name, len(self.pending))
        self.phases.append(phase)
        self.phase = phase
        return phase, self._marks()

    def _marks(self) -> Marks:
        return Marks(time.monotonic(), self.probe.cpu(), self._my_cpu(), cpu_times())

    async def _end(self, phase: Phase, start: Marks) -> dict[str, Any]:
        self.closed_loop_until = 0
        phase.end_seq = len(self.pending)
        deadline = time.monotonic() + self.plan.drain_s
        while self.outstanding > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        end = self._marks()
        phase.wall_s = end.wall - start.wall
        phase.srv_cpu_s = end.server - start.server
        phase.cli_cpu_s = end.client - start.client
        phase.cpu_busy = busy_pct(start.cpus, end.cpus, CPU_PARTS)
        phase.server_threads = self.probe.threads()
        # whatever is still outstanding now counts as lost; forget it for later phases
        self.outstanding = 0
        return phase.summary()

    def _my_cpu(self) -> float:
        return proc_cpu(self.me)

    async def fixed_rate(self, name: str, rate: float, duration: float) -> dict[str, Any]:
        phase, marks = self._begin(name)
        phase.target_rate = rate
        started = time.monotonic()
        sent = 0
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= duration:
                break
            for _ in range(int(elapsed * rate) - sent):
                self.publish()
                sent += 1
            await asyncio.sleep(0.001)
        return await self._end(phase, marks)

    async def saturate(self, name: str, window: int, duration: float) -> dict[str, Any]:
        phase, marks = self._begin(name)
        self.closed_loop_until = time.monotonic_ns() + int(duration * 1e9)
        for _ in range(window):
            self.publish()
        await asyncio.sleep(duration)
        return await self._end(phase, marks)


# -- one server ---------------------------------------------------------------------------


async def bench_server(
    kind: str, plan: Plan, workdir: Path, pin: bool, rtm_cmd: list[str], profile: Path | None
) -> dict[str, Any]:
    server = make_server(kind, workdir, SERVER_CPU if pin else None, rtm_cmd)
    result: dict[str, Any] = {"server": kind, "clients": plan.clients}
    gen: LoadGen | None = None
    hb: asyncio.Task[None] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        print(f"[{kind}] starting", flush=True)
        started = time.monotonic()
        await asyncio.to_thread(server.start)
        assert server.proc is not None
        result["startup_s"] = round(time.monotonic() - started, 1)
        probe = Probe(server.proc.pid, children=kind != "rtm")
        await asyncio.sleep(1.0)
        rss0 = probe.rss()
        gen = LoadGen(plan, server, probe)
        hb = asyncio.create_task(gen.heartbeats())
        print(f"[{kind}] connecting {plan.clients} clients in {len(gen.rooms)} rooms", flush=True)
        if profile is not None:
            spy = start_py_spy(server.proc.pid, profile / f"{kind}-connect.txt", **SPY)
        cpu0 = probe.cpu()
        first = plan.idle_steps[0] if plan.idle_steps else None
        result["connect"] = await gen.connect_all(0, first)
        result["connect"]["server_cpu_ms_per_connect"] = round(
            1e3 * (probe.cpu() - cpu0) / (first or plan.clients), 3
        )
        await stop_py_spy(spy)
        spy = None
        print(f"[{kind}] connected: {result['connect']}", flush=True)
        if plan.idle_steps:
            result["idle_steps"] = await idle_steps(kind, gen, probe, plan, rss0)
            return result
        await asyncio.sleep(plan.idle_s)
        rss1 = probe.rss()
        result["rss_start_mb"] = round(rss0 / 2**20, 1)
        result["rss_idle_mb"] = round(rss1 / 2**20, 1)
        result["rss_per_conn_kb"] = round((rss1 - rss0) / plan.clients / 1024, 2)
        phases = []
        fixed = await gen.fixed_rate("fixed", plan.rate, plan.fixed_s)
        phases.append(fixed)
        print(f"[{kind}] {_line(fixed)}", flush=True)
        if profile is not None:
            spy = start_py_spy(server.proc.pid, profile / f"{kind}-sat.txt", **SPY)
        sat = await gen.saturate("sat", plan.window, plan.sat_s)
        phases.append(sat)
        print(f"[{kind}] {_line(sat)}", flush=True)
        await stop_py_spy(spy)
        spy = None
        half_rate = max(1.0, sat["msgs_per_s"] / 2)
        half = await gen.fixed_rate("half", half_rate, plan.half_s)
        phases.append(half)
        print(f"[{kind}] {_line(half)}", flush=True)
        result["phases"] = phases
        result["disconnects"] = gen.disconnects
        result["close_codes"] = dict(gen.close_codes)
        result["control_frames"] = dict(gen.control)
        result["control_samples"] = gen.control_samples
        result["stray_deliveries"] = gen.stray
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"[{kind}] ERROR {result['error']}", flush=True)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        if hb is not None:
            hb.cancel()
        if gen is not None:
            gen.close_all()
            await asyncio.sleep(0.5)
        await asyncio.to_thread(server.stop)
        result["server_log_problems"] = server.problems()[:20]
    return result


async def idle_steps(
    kind: str, gen: LoadGen, probe: Probe, plan: Plan, rss0: int
) -> list[dict[str, Any]]:
    """Idle connections in steps up to the whole count: after each step, the server's RSS per
    connection since start, the marginal cost of the step's connections, and how fast they
    came (a flat marginal cost is memory linear in the count)."""
    steps: list[dict[str, Any]] = []
    done = plan.idle_steps[0]
    await asyncio.sleep(plan.idle_s)
    rss = probe.rss()
    steps.append(_idle_step(done, rss, rss0, None, None))
    print(f"[{kind}] idle {steps[-1]}", flush=True)
    for count in plan.idle_steps[1:]:
        connect = await gen.connect_all(done, count)
        await asyncio.sleep(plan.idle_s)
        before, rss = rss, probe.rss()
        steps.append(_idle_step(count, rss, rss0, (rss - before) / (count - done), connect))
        done = count
        print(f"[{kind}] idle {steps[-1]}", flush=True)
    return steps


def _idle_step(
    count: int, rss: int, rss0: int, marginal: float | None, connect: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "connections": count,
        "rss_mb": round(rss / 2**20, 1),
        "kb_per_conn": round((rss - rss0) / count / 1024, 2),
        "marginal_kb_per_conn": None if marginal is None else round(marginal / 1024, 2),
        "connects_per_s": None if connect is None else connect["connects_per_s"],
        "join_p99_ms": None if connect is None else connect["join_p99_ms"],
        "connect_errors": None if connect is None else connect["connect_errors"],
    }


def idle_table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| server | connections | RSS MB | KB/conn since start | KB/conn of the step "
        "| connects/s of the step (join p99 ms) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for st in r.get("idle_steps", []):
            rate = "" if st["connects_per_s"] is None else f"{st['connects_per_s']:,.0f}"
            if st["join_p99_ms"] is not None:
                rate += f" ({st['join_p99_ms']})"
            marginal = st["marginal_kb_per_conn"]
            rows.append(
                f"| {r['server']} | {st['connections']:,} | {st['rss_mb']} | "
                f"{st['kb_per_conn']} | {'' if marginal is None else marginal} | {rate} |"
            )
        if "error" in r:
            rows.append(f"| {r['server']} | error: {r['error']} | | | | |")
    return "\n".join(rows)


def _line(s: dict[str, Any]) -> str:
    return (
        f"{s['phase']}: {s['sent']} msgs, {s['deliveries_per_s']:,.0f} deliveries/s, "
        f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, lost {s['lost']}, dup {s['duplicated']}, "
        f"srv/cli CPU {s['server_cpu_pct']}/{s['client_cpu_pct']}%"
    )


def summarize_profile(path: Path, top: int = 20) -> str:
    """Per-thread, self and inclusive sample shares from py-spy's raw (collapsed) output.

    Frames are grouped by function (line numbers dropped). py-spy leaves out idle samples, so
    the shares are of the time the server was running Python or native code.
    """
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        if frames and frames[0].startswith(("thread ", "process ")):
            head = [f for f in frames if f.startswith(("thread ", "process "))]
            frames = [f for f in frames if not f.startswith(("thread ", "process "))]
            entry = next((f for f in frames if "Thread" in f or "main" in f), "?")
            threads[f"{head[-1]} {entry.split(' ')[0]}"] += n
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    if not total:
        return f"{path.name}: no samples"
    out = [f"{path.name}: {total} samples"]
    if threads:
        out.append("  by thread:")
        out += [f"    {100 * n / total:5.1f}%  {t}" for t, n in threads.most_common(8)]
    out.append("  self:")
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out.append("  inclusive (realtime_messaging, aiohttp, limits):")
    keys = ("realtime_messaging", "aiohttp", "limits/")
    ours = [(f, n) for f, n in incl.most_common() if any(k in f for k in keys)]
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in ours[:top]]
    return "\n".join(out)


# -- several processes (--multi) ----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One server-side set-up of the multi-process mode (all of it pinned to ``SERVER_CPU``)."""

    name: str
    processes: int  # separate ``rtm serve`` processes
    redis: bool  # RTM_REDIS_URL set
    workers: int = 1  # ``rtm serve --workers N``
    #: which process each client connects to: ``all`` (the only one), ``alternate`` (by client
    #: index, so every room spans both), ``cross`` (each room's publisher on the first
    #: process, its other members on the second)
    placement: str = "all"
    broker: str | None = None  # RTM_BROKER
    text: str = ""


CONFIGS = {
    c.name: c
    for c in (
        Config("one", 1, False, text="1 process, in-process broker"),
        Config("one-redis", 1, True, text="1 process on Redis"),
        Config(
            "spread", 2, True, placement="alternate", text="2 processes on Redis, rooms span both"
        ),
        Config(
            "cross",
            2,
            True,
            placement="cross",
            text="2 processes on Redis, publisher on A, subscribers on B",
        ),
        Config("workers2", 1, True, workers=2, text="rtm serve --workers 2 on Redis"),
        Config(
            "workers2-pg",
            1,
            False,
            workers=2,
            broker="postgres",
            text="rtm serve --workers 2, PostgreSQL broker",
        ),
    )
}


class RedisProcess(ServerProcess):
    """A throwaway ``redis-server`` on a free loopback port, no persistence."""

    def __init__(self, binary: str, workdir: Path, cpu: int | None) -> None:
        super().__init__("redis", workdir, cpu)
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        cmd += ["--dir", str(self.workdir)]  # should it ever write a file, not in the cwd
        return cmd, dict(os.environ)

    def ready(self, output: str) -> bool:
        return "Ready to accept connections" in output


class ClusterMember(RtmFanoutServer):
    """One ``rtm serve`` of a :class:`Cluster`: the shared database, Redis or not, and
    nothing inherited from the caller's environment about brokers and workers."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        cpu: int | None,
        rtm_cmd: list[str],
        *,
        database_url: str,
        env: dict[str, str],
        workers: int,
    ) -> None:
        super().__init__(workdir, cpu, rtm_cmd, JWT_SECRET)
        self.name = name
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        self.database_url = database_url
        self.extra_env = env
        self.workers = workers

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd, env = super().command()
        for key in ("RTM_REDIS_URL", "RTM_BROKER", "RTM_WORKERS"):
            if key not in self.extra_env:
                env.pop(key, None)
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        return cmd, env


class Cluster:
    """The rtm processes of one :class:`Config`, on one database (and one Redis)."""

    def __init__(
        self,
        config: Config,
        workdir: Path,
        cpu: int | None,
        rtm_cmd: list[str],
        database_url: str,
        redis_url: str | None,
    ) -> None:
        self.config = config
        self.kind = config.name
        env: dict[str, str] = {}
        if config.redis:
            assert redis_url is not None
            env["RTM_REDIS_URL"] = redis_url
        if config.broker:
            env["RTM_BROKER"] = config.broker
        self.members = []
        for i in range(config.processes):
            name = "AB"[i] if config.processes > 1 else "rtm"
            member_dir = workdir / name
            member_dir.mkdir()
            self.members.append(
                ClusterMember(
                    name,
                    member_dir,
                    cpu,
                    rtm_cmd,
                    database_url=database_url,
                    env=env,
                    workers=config.workers,
                )
            )

    def start(self) -> None:
        for member in self.members:
            member.start()

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    @property
    def anon_key(self) -> str:
        return self.members[0].anon_key

    def member_of(self, client: Client) -> int:
        placement = self.config.placement
        if placement == "alternate":
            return client.index % 2
        if placement == "cross":
            return 0 if client.pos == 0 else 1
        return 0

    def client_url(self, client: Client) -> str:
        return self.members[self.member_of(client)].ws_url(self.anon_key)

    def problems(self) -> list[str]:
        return [f"{m.name}: {line}" for m in self.members for line in m.problems()]


class ClusterProbe:
    """CPU time and RSS of a cluster's rtm processes (``--workers`` children included), and
    the CPU time of Redis, each part on its own too."""

    def __init__(
        self, cluster: Cluster, redis_pid: int | None, postmaster: psutil.Process | None
    ) -> None:
        self.members = {}
        for m in cluster.members:
            assert m.proc is not None
            self.members[m.name] = Probe(m.proc.pid, children=True)
        self.redis = psutil.Process(redis_pid) if redis_pid is not None else None
        self.postmaster = postmaster

    def cpu(self) -> float:
        return sum(p.cpu() for p in self.members.values())

    def parts(self) -> dict[str, float]:
        out = {name: p.cpu() for name, p in self.members.items()}
        if self.redis is not None:
            out["redis"] = proc_cpu(self.redis)
        # approximate: the CPU of backends that exited during the interval is not counted
        out["pg"] = sum(proc_cpu(p) for p in postgres_procs(self.postmaster))
        return out

    def processes(self) -> int:
        return sum(len(p._procs()) for p in self.members.values())

    def threads(self) -> int:
        return sum(p.threads() for p in self.members.values())

    def rss(self) -> int:
        return sum(p.rss() for p in self.members.values())


def workers_supported(rtm_cmd: list[str]) -> bool:
    """Whether this ``rtm serve`` has ``--workers``."""
    try:
        done = subprocess.run(
            [*rtm_cmd, "serve", "--help"], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--workers" in done.stdout


class RedisStats:
    """``INFO commandstats`` of the benchmark's Redis, on a connection of its own."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis  # the [redis] extra, needed by rtm serve too

        self.client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    async def calls(self) -> dict[str, int]:
        info = await self.client.execute_command("INFO", "commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}

    async def close(self) -> None:
        await self.client.aclose()


async def bench_cluster(
    config: Config,
    plan: Plan,
    workdir: Path,
    pin: bool,
    rtm_cmd: list[str],
    database_url: str,
    redis: RedisProcess | None,
    stats: RedisStats | None,
    postmaster: psutil.Process | None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """The fan-out phases against one :class:`Config`; per phase also the CPU of each process,
    of Redis and of PostgreSQL, and the Redis commands it took. ``profile``: py-spy each rtm
    process at saturation (``--workers``: the workers)."""
    cpu = SERVER_CPU if pin else None
    cluster = Cluster(config, workdir, cpu, rtm_cmd, database_url, redis.url if redis else None)
    result: dict[str, Any] = {"server": config.name, "config": config.text, "clients": plan.clients}
    gen: LoadGen | None = None
    hb: asyncio.Task[None] | None = None
    uses_redis = config.redis and redis is not None and stats is not None
    try:
        print(f"[{config.name}] starting: {config.text}", flush=True)
        started = time.monotonic()
        await asyncio.to_thread(cluster.start)
        result["startup_s"] = round(time.monotonic() - started, 1)
        probe = ClusterProbe(
            cluster, redis.proc.pid if uses_redis and redis and redis.proc else None, postmaster
        )
        await asyncio.sleep(1.0)
        result["server_processes"] = probe.processes()
        rss0 = probe.rss()
        gen = LoadGen(plan, cluster, probe)
        result["placement"] = dict(
            Counter(cluster.members[cluster.member_of(c)].name for c in gen.clients)
        )
        hb = asyncio.create_task(gen.heartbeats())
        print(
            f"[{config.name}] connecting {plan.clients} clients in {len(gen.rooms)} rooms",
            flush=True,
        )
        cpu0 = probe.cpu()
        first = plan.idle_steps[0] if plan.idle_steps else None
        result["connect"] = await gen.connect_all(0, first)
        result["connect"]["server_cpu_ms_per_connect"] = round(
            1e3 * (probe.cpu() - cpu0) / (first or plan.clients), 3
        )
        await asyncio.sleep(plan.idle_s)
        rss1 = probe.rss()
        result["rss_per_conn_kb"] = round((rss1 - rss0) / plan.clients / 1024, 2)

        async def measured(run: Any) -> dict[str, Any]:
            parts0 = probe.parts()
            calls0 = await stats.calls() if uses_redis and stats else {}
            wall0 = time.monotonic()
            summary: dict[str, Any] = await run()
            summary["measured_wall_s"] = round(time.monotonic() - wall0, 3)
            parts1 = probe.parts()
            calls1 = await stats.calls() if uses_redis and stats else {}
            summary["cpu_s"] = {k: round(parts1[k] - parts0[k], 4) for k in parts1}
            if uses_redis:
                delta = {k: calls1.get(k, 0) - calls0.get(k, 0) for k in calls1}
                delta = {k: n for k, n in delta.items() if n and k != "info"}
                summary["redis_commands"] = delta
            print(f"[{config.name}] {_line(summary)}; {_cluster_line(summary)}", flush=True)
            return summary

        phases = [await measured(lambda: gen.fixed_rate("fixed", plan.rate, plan.fixed_s))]
        spies = []
        if profile is not None:
            for name, member in probe.members.items():
                procs = member._procs()
                for proc in procs[1:] if len(procs) > 1 else procs:
                    out = profile / f"{config.name}-{name}-{proc.pid}-sat.txt"
                    spies.append(start_py_spy(proc.pid, out, **SPY))
        sat = await measured(lambda: gen.saturate("sat", plan.window, plan.sat_s))
        for spy in spies:
            await stop_py_spy(spy)
        phases.append(sat)
        half_rate = max(1.0, sat["msgs_per_s"] / 2)
        phases.append(await measured(lambda: gen.fixed_rate("half", half_rate, plan.half_s)))
        result["phases"] = phases
        result["disconnects"] = gen.disconnects
        result["close_codes"] = dict(gen.close_codes)
        result["control_frames"] = dict(gen.control)
        result["control_samples"] = gen.control_samples
        result["stray_deliveries"] = gen.stray
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"[{config.name}] ERROR {result['error']}", flush=True)
    finally:
        if hb is not None:
            hb.cancel()
        if gen is not None:
            gen.close_all()
            await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.stop)
        result["server_log_problems"] = cluster.problems()[:20]
    return result


def _cluster_figures(p: dict[str, Any]) -> dict[str, Any]:
    """Per-delivery costs of one phase of a cluster run."""
    cpu = p.get("cpu_s", {})
    delivered, sent = p["delivered"], p["sent"]
    rtm = sum(v for k, v in cpu.items() if k not in ("redis", "pg"))
    out: dict[str, Any] = {
        "rtm_us": round(1e6 * rtm / delivered, 2) if delivered else None,
        "redis_us": round(1e6 * cpu["redis"] / delivered, 2)
        if delivered and "redis" in cpu
        else None,
        "pg_us": round(1e6 * cpu["pg"] / delivered, 2) if delivered and "pg" in cpu else None,
    }
    if delivered and {"A", "B"} <= set(cpu):
        out["A_us_per_msg"] = round(1e6 * cpu["A"] / sent, 2) if sent else None
        out["B_us_per_delivery"] = round(1e6 * cpu["B"] / delivered, 2)
    commands = p.get("redis_commands")
    if commands is not None and sent:
        out["redis_cmds_per_msg"] = round(sum(commands.values()) / sent, 3)
    return out


def _cluster_line(p: dict[str, Any]) -> str:
    f = _cluster_figures(p)
    cpu = ", ".join(f"{k} {v:.2f} s" for k, v in p.get("cpu_s", {}).items())
    text = f"CPU {cpu}; rtm {f['rtm_us']} µs/delivery"
    if f.get("redis_us") is not None:
        text += f", redis {f['redis_us']} µs/delivery"
    if "redis_cmds_per_msg" in f:
        text += f", {f['redis_cmds_per_msg']} Redis commands/msg {p['redis_commands']}"
    return text


def cluster_metrics(r: dict[str, Any]) -> dict[str, Any]:
    """:func:`metrics`, with the other load of CPU 0 net of all the server side pinned there
    (the rtm processes, Redis and PostgreSQL)."""
    m = metrics(r)
    worst = 0.0
    for p in r["phases"]:
        busy = p["cpu_busy_pct"].get(SERVER_CPU) or p["cpu_busy_pct"].get(str(SERVER_CPU)) or {}
        wall = p.get("measured_wall_s") or 0.0
        ours = 100 * sum(p.get("cpu_s", {}).values()) / wall if wall else 0.0
        worst = max(worst, float(busy.get("busy", 0.0)) - ours)
    m["other0"] = round(worst)
    return m


def cluster_table(results: list[dict[str, Any]]) -> str:
    head = (
        "| config | clients on | sat deliveries/s | rtm CPU µs/delivery @ sat (@ fixed) "
        "| vs one process @ sat (@ fixed) | Redis / PostgreSQL CPU µs/delivery @ sat "
        "| Redis commands/msg "
        "| p50 / p99 ms @ fixed (deliveries/s) | p50 / p99 ms @ half sat (msgs/s) "
        "| lost / dup | other load CPU0/CPU1 % |"
    )
    lines = [head, "|" + "---|" * 11]
    # each run is compared with the one-process figures of the same run (--repeat)
    bases: dict[Any, dict[str, Any]] = {}
    for r in results:
        if r["server"] == "one" and "phases" in r:
            bases[r.get("run")] = {p["phase"]: _cluster_figures(p) for p in r["phases"]}
    for r in results:
        base = bases.get(r.get("run"))
        if "phases" not in r:
            error = " ".join(str(r.get("error")).split())[-200:].replace("|", "/")
            lines.append(f"| {r['server']} | error: {error} |" + " |" * 9)
            continue
        m = cluster_metrics(r)
        ph = {p["phase"]: p for p in r["phases"]}
        sat, fixed = _cluster_figures(ph["sat"]), _cluster_figures(ph["fixed"])

        def ratio(figs: dict[str, Any], phase: str, base: dict[str, Any] | None = base) -> str:
            if base is None or not base[phase]["rtm_us"] or figs["rtm_us"] is None:
                return "-"
            return f"{figs['rtm_us'] / base[phase]['rtm_us']:.2f}x"

        placement = ", ".join(f"{k} {v}" for k, v in r.get("placement", {}).items())
        if r.get("server_processes", 1) > len(r.get("placement", {})):
            placement += f" ({r['server_processes']} processes)"
        redis_us = sat["redis_us"] if sat["redis_us"] is not None else "-"
        redis_us = f"{redis_us} / {sat['pg_us']}"
        cmds = sat.get("redis_cmds_per_msg", "-")
        name = r["server"] + (f" (run {r['run']})" if len(bases) > 1 else "")
        lines.append(
            f"| {name} | {placement} | {m['sat_dps']:,.0f} "
            f"| {sat['rtm_us']} ({fixed['rtm_us']}) "
            f"| {ratio(sat, 'sat')} ({ratio(fixed, 'fixed')}) | {redis_us} | {cmds} "
            f"| {m['fixed_p50']} / {m['fixed_p99']} ({m['fixed_dps']:,.0f}) "
            f"| {m['half_p50']} / {m['half_p99']} ({m['half_msgs']:,.0f}) "
            f"| {m['lost']} / {m['dup']} | {m['other0']}/{m['other1']} |"
        )
    return "\n".join(lines)


def cluster_verdict(results: list[dict[str, Any]]) -> str:
    by = {r["server"]: r for r in results if "phases" in r}
    lines = []
    one, cross = by.get("one"), by.get("cross")
    for phase in ("sat", "fixed"):
        if one and cross:
            a = _cluster_figures({p["phase"]: p for p in one["phases"]}[phase])["rtm_us"]
            b = _cluster_figures({p["phase"]: p for p in cross["phases"]}[phase])["rtm_us"]
            if a and b:
                ok = "PASS" if b / a <= 1.3 else "FAIL"
                lines.append(
                    f"rtm CPU per delivery, every subscriber on the other process, at {phase}: "
                    f"{b} µs against {a} µs on one process = {b / a:.2f}x (goal <= 1.3x): {ok}"
                )
                f = _cluster_figures({p["phase"]: p for p in cross["phases"]}[phase])
                lines.append(
                    f"  of which the publishing process A: {f.get('A_us_per_msg')} µs per "
                    f"message; the subscribers' process B: {f.get('B_us_per_delivery')} µs per "
                    "delivery"
                )
    for r in by.values():
        bad = sum(
            p["lost"] + p["duplicated"] + p["misrouted"] + p["self_delivered"] for p in r["phases"]
        )
        if bad:
            lines.append(f"{r['server']}: {bad} lost/duplicated/misrouted deliveries: FAIL")
        m = cluster_metrics(r)
        if max(m["other0"], m["other1"]) > NOISY_PCT:
            lines.append(
                f"WARNING: other processes used more than 10% of a pinned CPU during {r['server']}"
            )
        if m["sat_cli_cpu"] > 85:
            lines.append(
                f"NOTE: the load generator was at {m['sat_cli_cpu']:.0f}% CPU while saturating "
                f"{r['server']}: that figure is bounded by the client"
            )
    return "\n".join(lines)


async def amain_multi(args: argparse.Namespace, plan: Plan, pin: bool) -> list[dict[str, Any]]:
    """Each configuration of ``--configs`` in turn, on one database and (when one needs it) one
    Redis, both started here and pinned with the servers."""
    rtm_cmd = args.rtm_cmd or default_rtm_cmd()
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown --configs {unknown}; known: {', '.join(CONFIGS)}")
    configs = [CONFIGS[n] for n in names]
    if any(c.workers > 1 for c in configs) and not workers_supported(rtm_cmd):
        print("rtm serve has no --workers here: skipping the workers configurations", flush=True)
        configs = [c for c in configs if c.workers == 1]
    results = []
    cpu = SERVER_CPU if pin else None
    with tempfile.TemporaryDirectory(prefix="rtm-fanout-multi-") as tmp:
        db = EmbeddedDatabase(Path(tmp) / "db", cpu, rtm_cmd)
        database_url = await asyncio.to_thread(db.start)
        redis: RedisProcess | None = None
        stats: RedisStats | None = None
        if any(c.redis for c in configs):
            binary = shutil.which("redis-server")
            if binary is None:
                raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
            redis = RedisProcess(binary, Path(tmp), cpu)
            await asyncio.to_thread(redis.start)
            stats = RedisStats(redis.url)
            await stats.calls()  # connect (and its hello) before the first snapshot
        try:
            for run in range(args.repeat):
                for config in configs:
                    for attempt in range(args.retry_noisy + 1):
                        workdir = Path(tmp) / f"{config.name}-{run}-{attempt}"
                        workdir.mkdir()
                        busy = await wait_quiet(args.quiet_wait)
                        if busy > 10:
                            print(f"  machine still busy ({busy:.0f}%); measuring anyway")
                        result = await bench_cluster(
                            config,
                            plan,
                            workdir,
                            pin,
                            rtm_cmd,
                            database_url,
                            redis,
                            stats,
                            db.postmaster(),
                            args.profile if run == 0 and attempt == 0 else None,
                        )
                        if "phases" not in result:
                            break
                        m = cluster_metrics(result)
                        if max(m["other0"], m["other1"]) <= NOISY_PCT:
                            break
                        print(
                            f"[{config.name}] disturbed by other load ({m['other0']}/{m['other1']}%)"
                        )
                    result["run"] = run + 1
                    results.append(result)
        finally:
            if stats is not None:
                await stats.close()
    return results


# -- report -------------------------------------------------------------------------------


def metrics(r: dict[str, Any]) -> dict[str, Any]:
    """The figures of one server run that the table shows."""
    ph = {p["phase"]: p for p in r["phases"]}
    fixed, sat, half = ph["fixed"], ph["sat"], ph["half"]

    def other(p: dict[str, Any], cpu: int, own: float) -> float:
        busy = p["cpu_busy_pct"].get(cpu) or p["cpu_busy_pct"].get(str(cpu)) or {}
        return max(0.0, float(busy.get("busy", 0.0)) - own)

    return {
        "server": r["server"],
        "clients": r["clients"],
        "connect_s": r["connect"]["connect_s"],
        "join_p99_ms": r["connect"]["join_p99_ms"],
        "sat_dps": sat["deliveries_per_s"],
        "sat_srv_cpu": sat["server_cpu_pct"],
        "sat_cli_cpu": sat["client_cpu_pct"],
        "us_per_delivery": sat["server_cpu_us_per_delivery"],
        "fixed_dps": fixed["deliveries_per_s"],
        "fixed_p50": fixed["p50_ms"],
        "fixed_p99": fixed["p99_ms"],
        "half_msgs": half["msgs_per_s"],
        "half_p50": half["p50_ms"],
        "half_p99": half["p99_ms"],
        "rss_kb": r["rss_per_conn_kb"],
        "lost": sum(p["lost"] for p in r["phases"]),
        "dup": sum(p["duplicated"] + p["misrouted"] + p["self_delivered"] for p in r["phases"]),
        "disconnects": r["disconnects"],
        # other processes on the pinned CPUs (a shared machine); worst phase
        "other0": round(max(other(p, SERVER_CPU, p["server_cpu_pct"]) for p in r["phases"])),
        "other1": round(max(other(p, CLIENT_CPU, p["client_cpu_pct"]) for p in r["phases"])),
    }


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(rows[0])
    out["server"] = f"{rows[0]['server']} (median of {len(rows)})"
    for key, value in rows[0].items():
        if isinstance(value, int | float) and key != "clients":
            values = sorted(r[key] for r in rows if r[key] is not None)
            if values:
                mid = len(values) // 2
                m = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
                out[key] = int(m) if float(m).is_integer() else round(m, 3)
    return out


def table(results: list[dict[str, Any]]) -> tuple[str, dict[str, dict[str, Any]]]:
    head = (
        "| server | clients | connect s (join p99 ms) | sat deliveries/s | srv/cli CPU% at sat "
        "| srv CPU µs/delivery | p50 / p99 ms @ fixed rate (deliveries/s) "
        "| p50 / p99 ms @ half sat (msgs/s) | RSS/conn KB | lost / dup | disconnects "
        "| other load CPU0/CPU1 % |"
    )
    lines = [head, "|" + "---|" * 12]
    by_server: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if "phases" not in r:
            error = " ".join(str(r.get("error")).split())[-200:].replace("|", "/")
            lines.append(f"| {r['server']} | {r['clients']} | error: {error} |" + " |" * 9)
            continue
        by_server.setdefault(r["server"], []).append(metrics(r))
    summary = {}
    for server, rows in by_server.items():
        shown = list(rows)
        summary[server] = median_row(rows) if len(rows) > 1 else rows[0]
        if len(rows) > 1:
            shown.append(summary[server])
        for m in shown:
            lines.append(
                f"| {m['server']} | {m['clients']:,} | {m['connect_s']} ({m['join_p99_ms']}) "
                f"| {m['sat_dps']:,.0f} | {m['sat_srv_cpu']:.0f}/{m['sat_cli_cpu']:.0f} "
                f"| {m['us_per_delivery']} "
                f"| {m['fixed_p50']} / {m['fixed_p99']} ({m['fixed_dps']:,.0f}) "
                f"| {m['half_p50']} / {m['half_p99']} ({m['half_msgs']:,.0f}) "
                f"| {m['rss_kb']} | {m['lost']} / {m['dup']} | {m['disconnects']} "
                f"| {m['other0']}/{m['other1']} |"
            )
    return "\n".join(lines), summary


def pair_ratios(results: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """rtm against the baseline of the same run (``--repeat`` alternates them, so each pair
    shares the machine's state of its minutes): each run's saturated deliveries/s ratio and CPU
    per delivery ratio."""
    runs: dict[int, dict[str, dict[str, Any]]] = {}
    for r in results:
        if "phases" in r:
            runs.setdefault(r.get("run", 1), {})[r["server"]] = metrics(r)
    pairs = []
    for run, servers in sorted(runs.items()):
        rtm, base = servers.get("rtm"), servers.get("baseline")
        if rtm and base and base["sat_dps"] and base["us_per_delivery"]:
            pairs.append(
                (
                    run,
                    rtm["sat_dps"] / base["sat_dps"],
                    rtm["us_per_delivery"] / base["us_per_delivery"],
                )
            )
    return pairs


def verdict(summary: dict[str, dict[str, Any]], results: list[dict[str, Any]]) -> str:
    """The fan-out row of issue 16: at saturation, rtm at least 0.8x the baseline's deliveries/s
    and at most 1.5x its CPU per delivery, judged on the median of the runs' pairs."""
    lines = []
    rtm, base = summary.get("rtm"), summary.get("baseline")
    pairs = pair_ratios(results)
    if pairs:
        noisy = (
            rtm is not None
            and base is not None
            and max(rtm["other0"], rtm["other1"], base["other0"], base["other1"]) > NOISY_PCT
        )
        if len(pairs) > 1:
            for run, deliveries, cpu in pairs:
                lines.append(
                    f"run {run}: rtm/baseline deliveries/s {deliveries:.2f}, "
                    f"CPU per delivery {cpu:.2f}"
                )
        deliveries = statistics.median(d for _, d, _ in pairs)
        cpu = statistics.median(c for _, _, c in pairs)
        of = f" (median of {len(pairs)} runs)" if len(pairs) > 1 else ""
        for name, value, target, ok in (
            ("saturated deliveries/s", deliveries, ">= 0.8", deliveries >= 0.8),
            ("CPU per delivery", cpu, "<= 1.5", cpu <= 1.5),
        ):
            mark = "PASS" if ok else "FAIL"
            if noisy:
                mark += " (unreliable: see the WARNING below)"
            lines.append(f"ratio rtm/baseline of {name}{of}: {value:.2f} (target {target}): {mark}")
    if rtm:
        p99 = rtm["half_p99"]
        ok = "PASS" if p99 is not None and p99 < 20 else "FAIL"
        lines.append(f"rtm p99 at half saturation: {p99} ms (target < 20 ms): {ok}")
        kb = rtm["rss_kb"]
        lines.append(
            f"rtm RSS per idle connection: {kb} KB (target <= 30 KB): "
            f"{'PASS' if kb <= 30 else 'FAIL'}"
        )
        bad = rtm["lost"] + rtm["dup"]
        lines.append(
            f"rtm lost/duplicated/misrouted deliveries: {bad}: {'PASS' if bad == 0 else 'FAIL'}"
        )
    for m in summary.values():
        if m["sat_cli_cpu"] > 85:
            lines.append(
                f"NOTE: the load generator was at {m['sat_cli_cpu']:.0f}% CPU while saturating "
                f"{m['server']}: that figure is bounded by the client, not the server"
            )
    noisy = [m["server"] for m in summary.values() if max(m["other0"], m["other1"]) > NOISY_PCT]
    if noisy:
        lines.append(
            "WARNING: other processes used more than 10% of a pinned CPU during the run of "
            f"{', '.join(noisy)} (column 'other load'); the figures are disturbed"
        )
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


async def amain(args: argparse.Namespace, plan: Plan, pin: bool) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="rtm-fanout-") as tmp:
        for run in range(args.repeat):
            for kind in args.servers.split(","):
                workdir = Path(tmp) / f"{kind}-{run}"
                workdir.mkdir()
                busy = await wait_quiet(args.quiet_wait)
                if busy > 10:
                    print(f"  machine still busy ({busy:.0f}%); measuring anyway", flush=True)
                profile = args.profile if run == 0 else None
                for attempt in range(args.retry_noisy + 1):
                    if attempt:
                        workdir = Path(tmp) / f"{kind}-{run}-{attempt}"
                        workdir.mkdir()
                        await wait_quiet(args.quiet_wait)
                    result = await bench_server(
                        kind, plan, workdir, pin, args.rtm_cmd or default_rtm_cmd(), profile
                    )
                    if "phases" not in result or profile is not None:
                        break  # a profiled run has py-spy itself on the load CPU
                    m = metrics(result)
                    if max(m["other0"], m["other1"]) <= NOISY_PCT:
                        break
                    print(f"[{kind}] disturbed by other load ({m['other0']}/{m['other1']}%)")
                result["run"] = run + 1
                results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description="WebSocket fan-out benchmark (see the docstring).")
    parser.add_argument(
        "--clients", type=int, default=None, help="default 10000 (1000 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 clients, short phases")
    parser.add_argument(
        "--idle",
        action="store_true",
        help="idle connections only, in steps up to --clients (default: the fd limit's 19,000)",
    )
    parser.add_argument("--servers", default="rtm,baseline", help="comma-separated, in order")
    parser.add_argument(
        "--rate", type=float, default=None, help="fixed-rate phase, msgs/s (5000; --multi: 2000)"
    )
    parser.add_argument("--window", type=int, default=200, help="saturation in-flight messages")
    parser.add_argument("--duration", type=float, default=None, help="seconds per phase")
    parser.add_argument("--batch", type=int, default=250, help="clients connecting at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per server (medians)")
    parser.add_argument(
        "--retry-noisy",
        type=int,
        default=0,
        help="rerun a server run disturbed by other processes up to this many times",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each server, wait up to this many s for idle pinned CPUs (5; quick: 2)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy each server while clients connect and at saturation (raw profiles here)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument(
        "--rtm-cmd",
        type=lambda s: s.split(),
        default=None,
        help="command that runs the rtm CLI (default: rtm beside this python)",
    )
    parser.add_argument("--time-limit", type=float, default=None, help="abort after this many s")
    parser.add_argument(
        "--connector",
        choices=("picows", "lean"),
        default="picows",
        help="the client that connects: picows's, or with --idle the lean one (lean.py), "
        "which costs less CPU per connection than the servers do",
    )
    parser.add_argument(
        "--multi",
        action="store_true",
        help="several processes: the configurations of --configs instead of --servers",
    )
    parser.add_argument(
        "--configs",
        default="one,one-redis,spread,cross,workers2",
        help=f"with --multi, comma-separated, in order; known: {', '.join(CONFIGS)}",
    )
    args = parser.parse_args()

    clients = args.clients or (1000 if args.quick else 19000 if args.idle else 10000)
    if args.quiet_wait is None:
        args.quiet_wait = 2.0 if args.quick else 5.0
    duration = args.duration or (2.0 if args.quick else 5.0)
    plan = Plan(
        clients=clients,
        rate=args.rate or (2000.0 if args.multi else 5000.0),
        fixed_s=duration,
        sat_s=duration,
        half_s=duration,
        window=args.window,
        batch=args.batch,
        idle_s=1.0 if args.quick else 3.0,
        drain_s=5.0,
        seed=args.seed,
        # --multi: every room's first member publishes (the same messages in every
        # configuration; with --configs cross, that member is on the other process)
        sender=0 if args.multi else None,
        idle_steps=tuple(clients * k // 4 for k in (1, 2, 3, 4)) if args.idle else (),
        connector=args.connector,
    )
    if args.connector == "lean" and not args.idle:
        parser.error("--connector lean connects idle sockets only: use it with --idle")
    limit = raise_fd_limit(clients + 1000)
    if limit < clients + 200:
        print(f"fd limit {limit} is too low for {clients} clients", file=sys.stderr)
        return 2
    pin = pin_load_process()
    runs = args.repeat * (1 + args.retry_noisy)
    if args.multi:
        runs = args.repeat * (1 + args.retry_noisy) * len(args.configs.split(","))
    time_limit = args.time_limit or (120.0 if args.quick else 600.0) * runs
    print(
        f"plan: {plan}; fd limit {limit}; pinned server->CPU{SERVER_CPU}, "
        f"load->CPU{CLIENT_CPU}: {pin}",
        flush=True,
    )
    exit_on_sigterm()
    run = amain_multi if args.multi else amain
    try:
        results = uvloop.run(asyncio.wait_for(run(args, plan, pin), time_limit))
    except TimeoutError:
        print(f"aborted: the run took more than {time_limit:.0f} s", file=sys.stderr)
        return 1
    finally:
        stop_started()
    print()
    if args.multi:
        print(cluster_table(results))
        print()
        print(cluster_verdict(results))
    elif args.idle:
        print(idle_table(results))
    else:
        text, summary = table(results)
        print(text)
        print()
        print(verdict(summary, results))
    for r in results:
        if r.get("control_frames"):
            print(f"{r['server']} control frames: {r['control_frames']}")
        if r.get("close_codes"):
            print(f"{r['server']} unexpected disconnects: {r['close_codes']}")
        print_log_problems(r.get("server_log_problems", []), f"{r['server']} ")
    if args.profile is not None:
        for path in sorted(args.profile.glob("*.txt")):
            print()
            print(summarize_profile(path))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    failed = any("error" in r for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
