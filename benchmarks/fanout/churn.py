#!/usr/bin/env python3
"""Connect and close churn: rounds of sockets that connect, join and all close again.

What a reconnect storm leaves behind in the server: each round connects ``--clients`` sockets
with the lean client (``lean.py``: a prepared upgrade and join, ``--window`` in flight, over 64
loopback source addresses), closes them all, and waits until the server's CPU is quiet. Per
round it reports the connect rate, the server's CPU per connect and its RSS once the round's
sockets are gone: a server that keeps something of each closed socket grows round after round
(benchmarks/README.md, "Connect and close churn"). ``--hold`` keeps that many idle sockets open
throughout, for the rate with a full server.

``rtm serve`` runs alone on CPU 0 with its embedded PostgreSQL; this process is on CPU 1.
Traffic goes to 127.0.0.1 only, and the run ends by itself (``--time-limit``).

    python benchmarks/fanout/churn.py [--clients 5000] [--rounds 8] [--hold 0]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402  (benchmarks/common.py, put on the path above)
    SERVER_CPU,
    RtmServer,
    default_rtm_cmd,
    exit_on_sigterm,
    pin_load_process,
    proc_cpu,
    raise_fd_limit,
    stop_started,
)
from lean import LeanSocket, lean_connect  # noqa: E402  (beside this file)

JOIN = b'["1","1","realtime:room-%d","phx_join",{"config":{"broadcast":{"self":false}}}]'
#: The server counts as quiet once it used less than this much CPU over QUIET_EVERY.
QUIET_CPU_S = 0.01
QUIET_EVERY = 0.25


async def connect(url: str, count: int, window: int, first_room: int) -> list[LeanSocket]:
    """``count`` sockets upgraded and joined, ``window`` of them in flight at a time."""
    gate = asyncio.Semaphore(window)
    sockets: list[LeanSocket] = []

    async def one(i: int) -> None:
        async with gate:
            sockets.append(await lean_connect(url, JOIN % (first_room + i // 3), i))

    await asyncio.gather(*(one(i) for i in range(count)))
    return sockets


async def quiet(proc: psutil.Process, limit_s: float = 10.0) -> None:
    """Until the server has finished with the sockets just closed."""
    before = proc_cpu(proc)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        await asyncio.sleep(QUIET_EVERY)
        now = proc_cpu(proc)
        if now - before < QUIET_CPU_S:
            return
        before = now


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    cpu = SERVER_CPU if args.pinned else None
    server = RtmServer(Path(tempfile.mkdtemp(prefix="rtm-churn-")), cpu, args.rtm_cmd, "x" * 40)
    server.start()
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    url = server.ws_url(server.anon_key)
    rounds: list[dict[str, Any]] = []
    held: list[LeanSocket] = []
    try:
        if args.hold:
            held = await connect(url, args.hold, args.window, 1_000_000)
            await quiet(proc)
        for k in range(args.rounds):
            cpu0, t0 = proc_cpu(proc), time.perf_counter()
            sockets = await connect(url, args.clients, args.window, k * args.clients)
            elapsed, cpu = time.perf_counter() - t0, proc_cpu(proc) - cpu0
            for sock in sockets:
                sock.disconnect()
            await quiet(proc)
            result = {
                "round": k + 1,
                "connects_per_s": args.clients / elapsed,
                "server_cpu_ms_per_connect": 1000 * cpu / args.clients,
                "server_busy_pct": 100 * cpu / elapsed,
                "rss_mb_after_close": proc.memory_info().rss / 2**20,
            }
            print(f"[rtm] {result}", flush=True)
            rounds.append(result)
    finally:
        for sock in held:
            sock.disconnect()
        server.stop()
    return rounds


def table(rounds: list[dict[str, Any]]) -> str:
    lines = [
        "| round | connects/s | server CPU per connect (ms) | server busy | RSS after close (MB) |",
        "|---|---|---|---|---|",
    ]
    for r in rounds:
        lines.append(
            f"| {r['round']} | {r['connects_per_s']:,.0f} | {r['server_cpu_ms_per_connect']:.3f}"
            f" | {r['server_busy_pct']:.0f} % | {r['rss_mb_after_close']:.1f} |"
        )
    cpu = sorted(r["server_cpu_ms_per_connect"] for r in rounds)
    lines.append("")
    lines.append(f"median server CPU per connect: {cpu[len(cpu) // 2]:.3f} ms")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="Connect and close churn (see the docstring).")
    parser.add_argument("--clients", type=int, default=5000, help="sockets per round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--hold", type=int, default=0, help="idle sockets kept open throughout")
    parser.add_argument("--window", type=int, default=256, help="connections in flight")
    parser.add_argument(
        "--rtm-cmd",
        type=lambda s: s.split(),
        default=None,
        help="command that runs the rtm CLI (default: rtm beside this python)",
    )
    parser.add_argument("--time-limit", type=float, default=600.0, help="abort after this many s")
    args = parser.parse_args()
    args.rtm_cmd = args.rtm_cmd or default_rtm_cmd()
    needed = args.clients + args.hold + 1000
    if raise_fd_limit(needed) < needed:
        print(f"the open-file limit is too low for {needed} sockets", file=sys.stderr)
        return 2
    args.pinned = pin_load_process()
    exit_on_sigterm()
    try:
        rounds = uvloop.run(asyncio.wait_for(run(args), args.time_limit))
    except TimeoutError:
        print(f"aborted: the run took more than {args.time_limit:.0f} s", file=sys.stderr)
        return 1
    finally:
        stop_started()
    print()
    print(table(rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
