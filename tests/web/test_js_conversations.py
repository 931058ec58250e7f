"""The TypeScript client's conversation changes (``onConversation``) against the real server.

Node's test runner runs ``tests/web/js/conversations.test.mjs`` (it imports the built
``clients/js/dist`` and the JS suite's helpers), against a server started as
:mod:`tests.web.test_js_client` starts its own.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import running_server
from tests.web.node import run_node_tests
from tests.web.test_js_client import (
    SERVER_SETTINGS,
    js_build,  # noqa: F401 (the fixture)
)


async def test_js_conversations(js_build: Path, database_url: str) -> None:  # noqa: F811
    """``node --test tests/web/js/conversations.test.mjs`` passes against the real server."""
    async with running_server(database_url, **SERVER_SETTINGS) as server:
        await run_node_tests(
            "conversations.test.mjs",
            {
                "RTM_URL": server.http_url,
                "RTM_ANON_KEY": server.anon_key,
                "RTM_SERVICE_KEY": server.service_key,
                # The helpers want a restartable server and its control; these tests restart none.
                "RTM_RESTART_URL": server.http_url,
                "RTM_CONTROL_URL": server.http_url,
            },
        )
