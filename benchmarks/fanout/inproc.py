#!/usr/bin/env python3
"""The server's own CPU per broadcast, without sockets: the Python path a frame takes from the
session to each recipient's outbox, timed in one process.

The fan-out benchmark (``run.py``) measures whole processes over loopback, where the kernel's
share and the machine's noise (a tenth from run to run) hide changes of a few per cent in the
Python path. Here the real session, dispatch, broadcast handler, hub and outboxes of
``rtm serve`` handle real frames; only the sockets are replaced, by transports that count the
bytes written to them (the boundary the outbox owns). The workload is ``run.py``'s: clients in
rooms of 2 to 5 joined with ``broadcast.self = false`` on vsn 2.0.0, each message sent by a
random member, in turns of ``--window`` messages (the event loop's turn ends, and the outboxes
are flushed, between them).

    python benchmarks/fanout/inproc.py [--clients 10000] [--messages 200000] [--rounds 5]

Prints CPU per message and per delivery for each round, and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

from realtime_messaging.broker import LocalBroker
from realtime_messaging.config import Settings
from realtime_messaging.domain.identity import Identity, Kind
from realtime_messaging.protocol.frames import Vsn
from realtime_messaging.server.liveness import LivenessPolicy, LivenessTracker
from realtime_messaging.server.pgchanges import ChangeRouter
from realtime_messaging.server.realtime.dispatch import on_frame
from realtime_messaging.server.realtime.session import Session
from realtime_messaging.server.realtime.shared import Shared


class CountingTransport:
    """Takes every write and keeps only the count of bytes."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class Wire:
    """A session's socket as the session sees it, on a counting transport."""

    def __init__(self) -> None:
        self.transport = CountingTransport()

    async def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"closed: {code} {reason}")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _setup(clients: int, seed: int) -> tuple[Shared[Session], list[tuple[Session, bytes]]]:
    """Sessions joined to their rooms, and each one's broadcast frame."""
    settings = Settings(max_events_per_second=1 << 30)
    broker = LocalBroker("bench")
    liveness = LivenessTracker(None, "bench", LivenessPolicy())  # type: ignore[arg-type]
    server: Shared[Session] = Shared(
        settings,
        None,
        broker,
        ChangeRouter({}),
        None,
        liveness,
        None,  # type: ignore[arg-type]
    )
    await broker.start(server.cluster)
    identity = Identity(Kind.ANON, expires_at=time.time() + 3600)
    rng = random.Random(seed)
    senders: list[tuple[Session, bytes]] = []
    room = 0
    left = clients
    while left > 0:
        size = min(left, rng.randint(2, 5))
        left -= size
        topic = f"realtime:room-{room}"
        join = b'["1","1","%s","phx_join",{"config":{"broadcast":{"self":false}}}]' % topic.encode()
        push = (
            b'["1",null,"%s","broadcast",{"type":"broadcast","event":"m",'
            b'"payload":{"t":1733490000000000000,"seq":123456,"from":7}}]' % topic.encode()
        )
        for _ in range(size):
            session = Session(server, Wire(), Vsn.V2, identity, on_frame)  # type: ignore[arg-type]
            server.sessions.add(session)
            pending = on_frame(session, join, False)
            if pending is not None:
                await pending
            senders.append((session, push))
        room += 1
    await asyncio.sleep(0)  # the joins' replies go out
    return server, senders


async def _round(
    server: Shared[Session],
    senders: list[tuple[Session, bytes]],
    messages: int,
    window: int,
    rng: random.Random,
) -> tuple[float, int]:
    """Send ``messages`` frames in turns of ``window``; CPU seconds and deliveries."""
    order = [senders[rng.randrange(len(senders))] for _ in range(messages)]
    loop_time = server.loop.time
    before = server.hub.deliveries
    start = time.process_time()
    for at in range(0, messages, window):
        now = loop_time()
        for session, push in order[at : at + window]:
            session.receive(push, False, now)
        await asyncio.sleep(0)  # end of the turn: the outboxes are flushed
    return time.process_time() - start, server.hub.deliveries - before


async def main(args: argparse.Namespace) -> None:
    server, senders = await _setup(args.clients, args.seed)
    rng = random.Random(args.seed + 1)
    await _round(server, senders, args.messages // 10, args.window, rng)  # warm up
    per_delivery: list[float] = []
    for n in range(args.rounds):
        cpu, deliveries = await _round(server, senders, args.messages, args.window, rng)
        per_message = cpu / args.messages * 1e6
        per_delivery.append(cpu / deliveries * 1e6)
        print(
            f"round {n + 1}: {args.messages} messages, {deliveries} deliveries, "
            f"{per_message:.2f} µs per message, {per_delivery[-1]:.3f} µs per delivery",
            flush=True,
        )
    result: dict[str, Any] = {
        "clients": args.clients,
        "median_us_per_delivery": round(statistics.median(per_delivery), 3),
    }
    print(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    import uvloop

    uvloop.run(main(parser.parse_args()))
