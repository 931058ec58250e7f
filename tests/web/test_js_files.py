"""The TypeScript client's ``uploadAttachment`` and ``getAttachmentUrl`` against the real
server, whose files go to a temporary data directory.

Node's test runner runs ``tests/web/js/files.test.mjs`` (it imports the built ``clients/js/dist``
and the JS suite's helpers).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import running_server
from tests.web.node import run_node_tests
from tests.web.test_js_client import (
    SERVER_SETTINGS,
    js_build,  # noqa: F401 (the fixture)
)


async def test_js_files(js_build: Path, database_url: str, tmp_path: Path) -> None:  # noqa: F811
    """``node --test tests/web/js/files.test.mjs`` passes against the real server."""
    async with running_server(database_url, **SERVER_SETTINGS, data_dir=tmp_path) as server:
        await run_node_tests(
            "files.test.mjs",
            {
                "RTM_URL": server.http_url,
                "RTM_ANON_KEY": server.anon_key,
                "RTM_SERVICE_KEY": server.service_key,
                "RTM_RESTART_URL": server.http_url,
                "RTM_CONTROL_URL": server.http_url,
            },
        )
    stored = [p for p in (tmp_path / "attachments").rglob("*") if p.is_file()]
    assert len(stored) == 1  # the upload, under a key of the server's own
    assert "hello" not in stored[0].name
