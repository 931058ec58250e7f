"""The README's curl walkthrough runs against a real server and shows unread going to zero."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.conftest import RunningServer

ROOT = Path(__file__).resolve().parents[1]


async def test_curl_demo(server: RunningServer) -> None:
    env = {**os.environ, "RTM_URL": server.http_url, "SERVICE_KEY": server.service_key}
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(ROOT / "examples" / "curl_demo.sh"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert "customer unread before: 1" in lines
    assert "customer unread after: 0" in lines
    assert lines[-2:] == ["  customer: Where is my order?", "  staff: It ships today."]
