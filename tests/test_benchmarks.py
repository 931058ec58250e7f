"""The benchmarks run end to end at their smallest size and report every documented figure.

Smoke tests of ``benchmarks/sdk/run.py`` (20 clients, 1 s phases, about 15 s), ``restart.py``
(one round), ``fanout/run.py --idle --connector lean`` (200 sockets) and ``fanout/churn.py``
(two rounds of 100 sockets): each starts its own
servers and embedded database, so this checks the whole harness, including the restarts and the
cleanup, not the figures themselves.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METRICS = (
    "message delivery latency",
    "typing indicator delay",
    "presence update delay",
    "read receipt delay",
    "reconnect time",
)


def _run(cmd: list[str], env: dict[str, str]) -> str:
    """Run a benchmark to its end (60 s at most); its output, once it has exited with 0."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    )
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the benchmark stops the servers it started
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"the benchmark took over 60 s:\n{out}")
    assert proc.returncode == 0, out
    return out


def test_sdk_benchmark_quick() -> None:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "sdk" / "run.py"),
        "--quick",
        "--clients",
        "20",
        "--duration",
        "1",
        "--quiet-wait",
        "0",
        "--time-limit",
        "50",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RTM_DATABASE_URL"}  # embedded only
    out = _run(cmd, env)
    for metric in METRICS:
        assert re.search(rf"^\| {metric} \(\w+\) \| [\d.]+ ms \|", out, re.M), (metric, out)
    assert re.search(r"^\| messages lost / duplicated / misrouted \| 0 / 0 / 0 \|", out, re.M), out


def test_restart_benchmark_one_round() -> None:
    """``benchmarks/restart.py`` at its smallest (one counted round, about 5 s with its own
    embedded database): it runs to the end and reports every row."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "restart.py"), "--runs", "1"]
    env = {k: v for k, v in os.environ.items() if k != "RTM_DATABASE_URL"}  # embedded only
    out = _run(cmd, env)
    for row in (
        "baseline: import aiohttp, asyncpg: launch to exit",
        "baseline: bare aiohttp app: launch to accepting",
        "rtm serve: launch to accepting",
        "rtm serve: launch to first answer",
        "rtm serve: launch to /readyz 200",
        "rtm serve: SIGTERM to exit",
    ):
        line = rf"^{re.escape(row)} +min +[\d.]+ +median +[\d.]+ +max +[\d.]+ ms$"
        assert re.search(line, out, re.M), (row, out)


def test_fanout_idle_steps_with_the_lean_client() -> None:
    """``benchmarks/fanout/run.py --idle --connector lean`` at its smallest (200 sockets per
    server, about 15 s): the lean client upgrades and joins real sockets on both servers (a
    refused join or upgrade fails the run), and every step reports its memory and rate."""
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "fanout" / "run.py"),
        "--idle",
        "--connector",
        "lean",
        "--clients",
        "200",
        "--quick",
        "--quiet-wait",
        "0",
        "--time-limit",
        "50",
    ]
    out = _run(cmd, dict(os.environ))
    for server in ("rtm", "baseline"):
        steps = re.findall(rf"^\| {server} \| ([\d,]+) \| [\d.]+ \| [\d.]+ \|(.*)$", out, re.M)
        assert [count for count, _ in steps] == ["50", "100", "150", "200"], (server, out)
        for _, rest in steps[1:]:  # each later step: its marginal size and its rate
            assert re.match(r" [\d.]+ \| [\d,]+ \([\d.]+\) \|$", rest), (server, rest, out)


def test_churn_rounds_report_rate_cpu_and_memory() -> None:
    """``benchmarks/fanout/churn.py`` at its smallest (100 sockets, two rounds, about 10 s):
    every socket upgrades and joins (a refused one fails the run), all close, and each round
    reports its rate, the server's CPU per connect and its memory once they are gone."""
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "fanout" / "churn.py"),
        "--clients",
        "100",
        "--rounds",
        "2",
        "--time-limit",
        "50",
    ]
    out = _run(cmd, dict(os.environ))
    rows = re.findall(r"^\| (\d+) \| [\d,]+ \| [\d.]+ \| \d+ % \| [\d.]+ \|$", out, re.M)
    assert rows == ["1", "2"], out
    assert re.search(r"^median server CPU per connect: [\d.]+ ms$", out, re.M), out
