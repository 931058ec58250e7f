"""The TypeScript client's ``search``, ``listConversations`` and ``getConversationCounts``
against the real server.

Node's test runner runs ``tests/web/js/search.test.mjs`` (it imports the built ``clients/js/dist``
and the JS suite's helpers), against a server started as :mod:`tests.web.test_js_client` starts
its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.web.test_js_client import (
    JS_DIR,
    NODE_DEADLINE,
    SERVER_SETTINGS,
    _tool,
    js_build,  # noqa: F401 (the fixture)
)

TEST_FILE = Path(__file__).resolve().parent / "js" / "search.test.mjs"


async def test_js_search(js_build: Path, database_url: str) -> None:  # noqa: F811
    """``node --test tests/web/js/search.test.mjs`` passes against the real server."""
    async with running_server(database_url, **SERVER_SETTINGS) as server:
        env = {
            **os.environ,
            "RTM_URL": server.http_url,
            "RTM_ANON_KEY": server.anon_key,
            "RTM_SERVICE_KEY": server.service_key,
            # The helpers want a restartable server and its control; these tests restart none.
            "RTM_RESTART_URL": server.http_url,
            "RTM_CONTROL_URL": server.http_url,
        }
        proc = await asyncio.create_subprocess_exec(
            _tool("node"),
            "--test",
            "--test-reporter=spec",
            str(TEST_FILE),
            cwd=JS_DIR,
            env=env,
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
