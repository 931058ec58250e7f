"""The TypeScript client's ``editMessage`` / ``deleteMessage`` against the real servers.

Node's test runner runs ``tests/web/js/edits.test.mjs`` (it imports the built ``clients/js/dist``
and the JS suite's helpers); the servers and the restart control are those of
:mod:`tests.web.test_js_client`, started the same way.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RestartableServer, running_server
from tests.web.node import run_node_tests
from tests.web.test_js_client import (
    SERVER_SETTINGS,
    TYPING_LIMIT,
    control_server,
    js_build,  # noqa: F401 (the fixture)
)


async def test_js_edits(js_build: Path, database_url: str) -> None:  # noqa: F811
    """``node --test tests/web/js/edits.test.mjs`` passes against the real servers."""
    restartable = RestartableServer(database_url, **SERVER_SETTINGS)
    async with (
        running_server(database_url, **SERVER_SETTINGS) as server,
        control_server(restartable) as control_url,
    ):
        try:
            second = await restartable.start()
            await run_node_tests(
                "edits.test.mjs",
                {
                    "RTM_URL": server.http_url,
                    "RTM_ANON_KEY": server.anon_key,
                    "RTM_SERVICE_KEY": server.service_key,
                    "RTM_TYPING_LIMIT": str(TYPING_LIMIT),
                    "RTM_RESTART_URL": second.http_url,
                    "RTM_CONTROL_URL": control_url,
                },
            )
        finally:
            await restartable.stop()
