"""How long ``rtm serve`` takes from launch to accepting connections, to serving, and to
ready, against a database that is already running: the "restart" row of issue 16.

Each round starts, pinned to ``SERVER_CPU`` (this process probes from ``CLIENT_CPU``):

* ``python -c "import aiohttp, asyncpg"``: the interpreter and the two libraries every server
  here loads, launch to exit;
* a bare aiohttp application on uvloop (the same imports, two routes): launch to accepting and
  to its first answer;
* ``rtm serve`` on a fixed port with ``RTM_DATABASE_URL`` set: launch to accepting a TCP
  connection (probed every 5 ms, as ``benchmarks/sdk/run.py``'s reconnect phase does), to its
  first HTTP answer (``GET /healthz`` 200: a server that listened before it could answer would
  show it here), to ``GET /readyz`` 200 (migrated, change feed connected), all probed every
  5 ms; then SIGTERM to exit;
* with ``--compare CMD``, the same for another rtm command (an older checkout, say).

So the baselines show what is the interpreter's and the libraries', and the difference what is
ours. The database is the embedded PostgreSQL of a temporary data directory, started by
``rtm db-url`` and migrated before the first round (as it would be before a restart), or the one
``--database-url`` names. The first round warms the page cache and writes the byte-code cache
(``PYTHONDONTWRITEBYTECODE`` is dropped from the servers' environment) and is not counted.

    python benchmarks/restart.py                 # 10 counted rounds, embedded PostgreSQL
    python benchmarks/restart.py --runs 3 --json out.json
    python benchmarks/restart.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python benchmarks/restart.py --compare "env PYTHONPATH=/tmp/old/src python -m realtime_messaging"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402  (benchmarks/common.py, put on the path above)
    CLIENT_CPU,
    SERVER_CPU,
    STARTED,
    EmbeddedDatabase,
    accepting,
    default_rtm_cmd,
    exit_on_sigterm,
    free_port,
    http_ok,
    pin,
    pin_load_process,
    stop_started,
)

#: The bare server of the baseline: what any aiohttp server on uvloop costs before its first
#: connection (asyncpg imported too, as ours does).
BARE_APP = """
import sys, asyncpg, uvloop
from aiohttp import web

async def ok(request):
    return web.json_response({"status": "ok"})

app = web.Application()
app.router.add_get("/healthz", ok)
app.router.add_get("/readyz", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, loop=uvloop.new_event_loop())
"""


class Launched:
    """A child process pinned to ``SERVER_CPU``, stopped by its pid (SIGTERM, then SIGKILL)."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str], log: Path, cpu: int | None) -> None:
        self.t0 = time.monotonic_ns()
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                list(cmd),
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=lambda: pin(cpu),
            )
        STARTED.append(self)

    def since_launch(self, ns: int) -> float:
        return (ns - self.t0) / 1e6

    def stop(self) -> None:
        self.stop_timed()

    def stop_timed(self) -> float:
        """SIGTERM and wait; milliseconds until it exited (idempotent). A blocking wait (a
        timed ``Popen.wait`` polls at doubling intervals, which would round the figure up to
        15.5 or 31.5 ms), with SIGKILL after 30 s."""
        if self.proc.poll() is not None:
            return 0.0
        t = time.monotonic_ns()
        self.proc.send_signal(signal.SIGTERM)
        watchdog = threading.Timer(30.0, self.proc.kill)
        watchdog.start()
        try:
            self.proc.wait()
        finally:
            watchdog.cancel()
        return (time.monotonic_ns() - t) / 1e6


async def until_exit(launched: Launched) -> float:
    """Milliseconds from launch to a clean exit."""
    code = await asyncio.to_thread(launched.proc.wait, 60)
    if code != 0:
        raise RuntimeError(f"{launched.proc.args!r} exited {code}")
    return launched.since_launch(time.monotonic_ns())


async def serve_round(
    cmd: Sequence[str], env: dict[str, str], port: int, log: Path, cpu: int | None
) -> dict[str, float]:
    """Launch a server on ``port``; milliseconds from launch to accepting a TCP connection, to
    the first HTTP answer (``GET /healthz`` 200: serving), to ``GET /readyz`` 200; and from
    SIGTERM to exit."""
    launched = Launched(cmd, env, log, cpu)
    try:
        t_accept = await asyncio.wait_for(accepting(port, launched.proc), 60)
        t_serving = await asyncio.wait_for(http_ok(f"http://127.0.0.1:{port}/healthz"), 60)
        t_ready = await asyncio.wait_for(http_ok(f"http://127.0.0.1:{port}/readyz"), 60)
    finally:
        stop_ms = await asyncio.to_thread(launched.stop_timed)
    STARTED.remove(launched)
    return {
        "launch to accepting": launched.since_launch(t_accept),
        "launch to first answer": launched.since_launch(t_serving),
        "launch to /readyz 200": launched.since_launch(t_ready),
        "SIGTERM to exit": stop_ms,
    }


def summary(values: Sequence[float]) -> str:
    return (
        f"min {min(values):7.1f}  median {statistics.median(values):7.1f}  "
        f"max {max(values):7.1f} ms"
    )


async def run(args: argparse.Namespace, workdir: Path, cpu: int | None) -> dict[str, list[float]]:
    rtm_cmd = args.rtm_cmd.split() if args.rtm_cmd else default_rtm_cmd()
    database_url = args.database_url
    if not database_url:
        db = EmbeddedDatabase(workdir / "db", None, rtm_cmd)
        database_url = await asyncio.to_thread(db.start)
    env = dict(
        os.environ,
        RTM_DATABASE_URL=database_url,
        RTM_JWT_SECRET=secrets.token_hex(32),
        RTM_DATA_DIR=str(workdir / "rtm-data"),
    )
    # A restart runs byte-compiled code (pip compiles what it installs; an editable checkout
    # writes its cache on the first launch): a shell that forbids writing the cache would have
    # every round compile the project's source again, which no deployment does.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    migrated = subprocess.run(
        [*rtm_cmd, "migrate"], env=env, capture_output=True, timeout=120, check=False
    )
    if migrated.returncode != 0:
        raise RuntimeError(f"rtm migrate failed: {migrated.stderr.decode(errors='replace')}")
    port = free_port()
    log = workdir / "servers.log"
    servers = {"rtm serve": rtm_cmd}
    if args.compare:
        servers["compare"] = args.compare.split()
    results: dict[str, list[float]] = {}
    for k in range(args.runs + 1):
        imports = Launched([sys.executable, "-c", "import aiohttp, asyncpg"], env, log, cpu)
        row = {"baseline: import aiohttp, asyncpg: launch to exit": await until_exit(imports)}
        STARTED.remove(imports)
        bare = await serve_round([sys.executable, "-c", BARE_APP, str(port)], env, port, log, cpu)
        row["baseline: bare aiohttp app: launch to accepting"] = bare["launch to accepting"]
        row["baseline: bare aiohttp app: launch to first answer"] = bare["launch to first answer"]
        for name, cmd in servers.items():
            measured = await serve_round([*cmd, "serve", "--port", str(port)], env, port, log, cpu)
            row.update({f"{name}: {what}": ms for what, ms in measured.items()})
        line = ", ".join(f"{v:.0f}" for v in row.values())
        print(f"round {k}{' (warm-up, not counted)' if k == 0 else ''}: {line} ms", flush=True)
        if k:
            for name, value in row.items():
                results.setdefault(name, []).append(value)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="counted rounds (default 10)")
    parser.add_argument("--database-url", help="an already running, migratable database")
    parser.add_argument("--rtm-cmd", help="the rtm command (default: this virtualenv's)")
    parser.add_argument(
        "--compare",
        help="another rtm command to time in the same rounds (say, an older checkout's)",
    )
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()
    pinned = pin_load_process()
    print(
        f"{args.runs} rounds; rtm and the baselines on CPU{SERVER_CPU}, probes on CPU{CLIENT_CPU}: "
        f"{pinned}; PostgreSQL unpinned",
        flush=True,
    )
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="rtm-restart-") as tmp:
        try:
            results = asyncio.run(run(args, Path(tmp), SERVER_CPU if pinned else None))
        finally:
            stop_started()
    print()
    width = max(len(name) for name in results)
    for name, values in results.items():
        print(f"{name:<{width}}  {summary(values)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
