"""Run one of ``tests/web/js``'s node test files against running servers, bounded in time."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.web.test_js_client import JS_DIR, NODE_DEADLINE, _tool

HERE = Path(__file__).resolve().parent / "js"


async def run_node_tests(name: str, env: dict[str, str]) -> None:
    """``node --test tests/web/js/<name>`` with ``env`` added; fails the test when node does
    or runs past :data:`NODE_DEADLINE`."""
    proc = await asyncio.create_subprocess_exec(
        _tool("node"),
        "--test",
        "--test-reporter=spec",
        str(HERE / name),
        cwd=JS_DIR,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), NODE_DEADLINE)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = await proc.communicate()
        pytest.fail(f"the JS test ran past {NODE_DEADLINE} s:\n{output.decode()}")
    report = output.decode(errors="replace")
    print(report)
    assert proc.returncode == 0, f"node --test failed:\n{report}"
