"""The TypeScript client (``clients/js``) against the real server.

Node's test runner runs ``clients/js/tests/*.test.mjs`` (they import the built ``dist/``); this
module builds the package once, starts the servers they talk to, and passes them in the
environment:

- ``RTM_URL``, ``RTM_ANON_KEY``, ``RTM_SERVICE_KEY``: a server with a low typing limit
  (``RTM_TYPING_LIMIT`` per minute, so a test can meet it) and slow typing cleanup (so typing
  that stops on expiry is the client's own timer, not the server deleting the row), and a short
  presence grace (closing a client turns it offline within a second);
- ``RTM_RESTART_URL``: a second server on the same database that ``POST RTM_CONTROL_URL/stop``
  and ``/start`` stop and start again on the same port, for the resume test; ``/prune`` deletes
  the change log up to its head (what the server's retention does to older changes), for the
  test of a rejoin that lost history.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from tests.conftest import RestartableServer, running_server

JS_DIR = Path(__file__).resolve().parents[2] / "clients" / "js"
TYPING_LIMIT = 4
SERVER_SETTINGS: dict[str, object] = {
    "rate_typing": f"{TYPING_LIMIT}/minute",
    "typing_cleanup_interval": 60.0,
    "presence_grace": 0.5,
}
#: The whole JS run (about 11 s); past this the runner is killed and the test fails.
NODE_DEADLINE = 120.0


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not on PATH; the TypeScript client's tests need Node 20 or newer")
    return found


@pytest.fixture(scope="session")
async def js_build() -> Path:
    """``npm run build:lib`` once per run; a failed build fails the tests (nothing skipped)."""
    if not (JS_DIR / "node_modules" / "@supabase" / "realtime-js").is_dir():
        pytest.fail("clients/js/node_modules is missing: run `npm ci --prefix clients/js` first")
    proc = await asyncio.create_subprocess_exec(
        _tool("npm"),
        "run",
        "build:lib",
        "--prefix",
        str(JS_DIR),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0:
        pytest.fail(f"npm run build:lib failed:\n{output.decode(errors='replace')}")
    return JS_DIR / "dist"


@asynccontextmanager
async def control_server(restartable: RestartableServer) -> AsyncIterator[str]:
    """``POST /stop``, ``POST /start`` for the restartable server and ``POST /prune`` for the
    change log, answered once done."""

    async def stop(_: web.Request) -> web.Response:
        await restartable.stop()
        return web.json_response({"stopped": True})

    async def start(_: web.Request) -> web.Response:
        server = await restartable.start()
        return web.json_response({"url": server.http_url})

    async def prune(_: web.Request) -> web.Response:
        conn = await asyncpg.connect(restartable.database_url)
        try:
            async with asyncio.timeout(10):  # every committed change stamped first
                while await conn.fetchval("SELECT count(*) FROM rtm.change_queue"):
                    await asyncio.sleep(0.02)
            await conn.execute(
                "DELETE FROM rtm.change_log "
                "WHERE pos <= (SELECT last_pos FROM rtm.change_feed_state)"
            )
        finally:
            await conn.close()
        return web.json_response({"pruned": True})

    app = web.Application()
    app.router.add_post("/stop", stop)
    app.router.add_post("/start", start)
    app.router.add_post("/prune", prune)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_js_client(js_build: Path, database_url: str) -> None:
    """``node --test clients/js/tests/``: every JS test passes against the real servers."""
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
                "tests/",
                cwd=JS_DIR,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its test files run in child processes: kill them all
            )
            try:
                output, _ = await asyncio.wait_for(proc.communicate(), NODE_DEADLINE)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                output, _ = await proc.communicate()
                pytest.fail(f"the JS tests ran past {NODE_DEADLINE} s:\n{output.decode()}")
        finally:
            await restartable.stop()
    report = output.decode(errors="replace")
    print(report)
    assert proc.returncode == 0, f"node --test failed:\n{report}"
