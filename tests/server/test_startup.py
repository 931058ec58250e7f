"""The start of ``rtm serve`` (issue 16): the collector is off while it loads and builds (the
command turns it off) and on again once it serves; a start that fails still fails with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from realtime_messaging.server.app import WARM_CONNECTIONS, serve
from realtime_messaging.server.listen import bound_socket
from realtime_messaging.store.database import Database
from tests.conftest import fresh_database, make_settings, running_server

RTM = [sys.executable, "-m", "realtime_messaging"]


@contextlib.contextmanager
def _collector_restored() -> Iterator[None]:
    """The test process's collector as it was: enabled, thresholds, nothing frozen."""
    enabled, thresholds = gc.isenabled(), gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if enabled:
            gc.enable()
        else:
            gc.disable()


async def test_serve_turns_the_collector_on_again_once_it_serves(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Left off, the collector would never run in a server process: memory held by reference
    cycles would only grow."""
    loop = asyncio.get_running_loop()
    with _collector_restored():
        gc.disable()  # as `rtm serve` does before it loads the server
        settings = make_settings(database_url=database_url)
        task = asyncio.create_task(serve(settings, Database(settings)))
        try:
            async with asyncio.timeout(30):
                while not gc.isenabled():
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.01)
            # It serves by then, with what it built frozen (kept out of every collection).
            assert gc.get_freeze_count() > 0
            url = next(
                line.split(": ", 1)[1]
                for line in capsys.readouterr().out.splitlines()
                if line.strip().startswith("API URL: ")
            )
            async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
                assert resp.status == 200
        finally:
            task.cancel()  # the drain runs as on SIGTERM
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for sig in (signal.SIGINT, signal.SIGTERM):  # serve's, on this test's loop
                loop.remove_signal_handler(sig)


async def test_a_start_whose_database_is_away_fails_with_one_line(tmp_path: Path) -> None:
    """A clear error and exit code 1, not a traceback (the collector switch wraps it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTM_")}
    env.update(
        RTM_DATA_DIR=str(tmp_path),
        RTM_JWT_SECRET="s" * 48,
        RTM_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
    )
    proc = await asyncio.create_subprocess_exec(
        *RTM,
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 1, err
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot connect to the database"), err


def test_the_port_refuses_connections_until_the_site_listens() -> None:
    """Bound at once (the URL's port is known), listening only once everything is built: a
    client that comes during the start is refused and retries, instead of waiting in the
    backlog behind the start."""
    sock = bound_socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        sock.listen(8)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        sock.close()


async def test_a_started_server_opens_pool_connections_for_the_first_storm(
    admin_url: str,
) -> None:
    """While it starts, the server opens a few more pool connections in the background, so
    that a restarted process's first look-ups (its clients' rejoins) do not each wait for a new
    connection; the pool starts with one, and nothing else asks for more on an idle server."""
    async with fresh_database(admin_url) as url, running_server(url):
        watcher = await asyncpg.connect(admin_url)
        try:
            async with asyncio.timeout(10):
                while True:
                    pooled = await watcher.fetchval(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = $1 AND application_name = ''",
                        urlsplit(url).path.lstrip("/"),
                    )
                    if pooled >= WARM_CONNECTIONS + 1:
                        break
                    await asyncio.sleep(0.05)  # polls the count; the timeout fails the test
        finally:
            await watcher.close()
