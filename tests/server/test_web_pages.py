"""The pages and scripts ``rtm serve`` ships: served from the package, by name only, with the
frame policy of each page, and the configuration the pages connect with."""

from __future__ import annotations

import aiohttp
import pytest

from realtime_messaging.exceptions import ConfigurationError
from realtime_messaging.server.public_url import PublicUrl
from realtime_messaging.server.web import WEB_ROOT, WebAssets
from tests.conftest import RunningServer, running_server


async def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, dict(response.headers), await response.read()


async def test_the_inbox_the_chat_and_the_client_are_served(server: RunningServer) -> None:
    for path, kind, shipped in (
        ("/", "text/html", WEB_ROOT / "app" / "inbox.html"),
        ("/portal", "text/html", WEB_ROOT / "app" / "portal.html"),
        ("/app/inbox.js", "text/javascript", WEB_ROOT / "app" / "inbox.js"),
        ("/app/app.css", "text/css", WEB_ROOT / "app" / "app.css"),
        ("/js/realtime-messaging.js", "text/javascript", WEB_ROOT / "js" / "realtime-messaging.js"),
    ):
        status, headers, body = await _get(server.http_url + path)
        assert status == 200, path
        assert headers["Content-Type"].startswith(kind), (path, headers)
        assert body == shipped.read_bytes()
    _, inbox, _ = await _get(server.http_url + "/")
    assert inbox["Content-Security-Policy"] == "frame-ancestors 'none'"
    _, portal, _ = await _get(server.http_url + "/portal")
    assert portal["Content-Security-Policy"] == "frame-ancestors 'self'"


async def test_the_config_names_this_server_and_the_anon_key(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            server.http_url + "/web-config.json", headers={"Host": "evil.example"}
        ) as response:
            assert await response.json() == {"url": server.http_url, "anonKey": server.anon_key}


@pytest.mark.parametrize(
    "path",
    [
        "/app/../../__init__.py",
        "/app/..%2F..%2F__init__.py",
        "/app/missing.js",
        "/js/..%2Fapp%2Finbox.html",
        "/app/",
    ],
)
async def test_only_shipped_files_are_served_by_name(server: RunningServer, path: str) -> None:
    status, _, body = await _get(server.http_url + path)
    assert status == 404, (path, body[:100])


async def test_the_chat_may_be_framed_by_the_listed_origins_only(database_url: str) -> None:
    origins = ("https://shop.example.com", "http://localhost:3000")
    async with running_server(database_url, embed_origins=origins) as srv:
        _, headers, _ = await _get(srv.http_url + "/portal")
        assert headers["Content-Security-Policy"] == (
            "frame-ancestors 'self' https://shop.example.com http://localhost:3000"
        )
        _, headers, _ = await _get(srv.http_url + "/")
        assert headers["Content-Security-Policy"] == "frame-ancestors 'none'"


@pytest.mark.parametrize(
    "bad", ["shop.example.com", "https://shop.example.com/path", "javascript:alert(1)", "*"]
)
def test_an_embed_origin_that_is_not_one_stops_the_start(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="RTM_EMBED_ORIGINS"):
        WebAssets(PublicUrl("http://127.0.0.1:4000"), "key", embed_origins=(bad,))
