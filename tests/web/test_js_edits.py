"""The TypeScript client's ``editMessage`` / ``deleteMessage`` against the real servers.

Node's test runner runs ``tests/web/js/edits.test.mjs`` (it imports the built ``clients/js/dist``
and the JS suite's helpers); the servers and the restart control are those of
:mod:`tests.web.test_js_client`, started the same way.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import RestartableServer, running_server
from tests.web.test_js_client import (
    JS_DIR,
    NODE_DEADLINE,
    SERVER_SETTINGS,
    TYPING_LIMIT,
    _tool,
    control_server,
    js_build,  # noqa: F401 (the fixture)
)

TEST_FILE = Path(__file__).resolve().parent / "js" / "edits.test.mjs"


async def test_js_edits(js_build: Path, database_url: str) -> None:  # noqa: F811
    """``node --test tests/web/js/edits.test.mjs`` passes against the real servers."""
    restartable = RestartableServer(database_url, **SERVER_SETTINGS)
    async with (
        running_server(database_url, **SERVER_SETTINGS) as server,
        control_server(restartable) as control_url,
    ):
        try:
            second = await restartable.start()
            env = {
                **os.environ,
                "RTM_URL": server.http_url,
                "RTM_ANON_KEY": server.anon_key,
                "RTM_SERVICE_KEY": server.service_key,
                "RTM_TYPING_LIMIT": str(TYPING_LIMIT),
                "RTM_RESTART_URL": second.http_url,
                "RTM_CONTROL_URL": control_url,
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
        finally:
            await restartable.stop()
    report = output.decode(errors="replace")
    print(report)
    assert proc.returncode == 0, f"node --test failed:\n{report}"
