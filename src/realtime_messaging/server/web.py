"""The web side served by ``rtm serve``: the staff inbox at ``/``, the customer chat at
``/portal``, their assets under ``/app/``, the browser build of the TypeScript client at
``/js/realtime-messaging.js`` and ``/web-config.json``, what the pages need to connect.

The files are built from ``web-src/`` and ``clients/js/`` and ship inside the package
(``realtime_messaging/web``), so serving them needs no Node. Only files listed in the package
directory are served, by name: a request path never becomes a file path.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from .public_url import PublicUrl

#: Where the built assets live inside the package.
WEB_ROOT = Path(__file__).resolve().parent.parent / "web"

_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".map": "application/json",
}
#: Pages and scripts change with each release; the browser revalidates them (an ETag-less
#: ``no-cache`` keeps a deployed fix from hiding behind a stale copy).
_CACHE = {"Cache-Control": "no-cache"}


def _listing(directory: Path) -> dict[str, Path]:
    """The servable files of a directory, by file name."""
    if not directory.is_dir():
        return {}
    return {p.name: p for p in directory.iterdir() if p.is_file() and p.suffix in _TYPES}


class WebAssets:
    """Routes for the pages and scripts; ``public_url`` and ``anon_key`` go to the pages."""

    def __init__(self, public_url: PublicUrl, anon_key: str, root: Path = WEB_ROOT) -> None:
        self._public_url = public_url
        self._anon_key = anon_key
        self._app = _listing(root / "app")
        self._js = _listing(root / "js")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._page("inbox.html")),
            web.get("/portal", self._page("portal.html")),
            web.get("/app/{name}", self._asset(self._app)),
            web.get("/js/{name}", self._asset(self._js)),
            web.get("/web-config.json", self.config),
        ]

    def _page(self, name: str) -> Handler:
        async def page(request: web.Request) -> web.StreamResponse:
            return _file(self._app.get(name))

        return page

    def _asset(self, files: dict[str, Path]) -> Handler:
        async def asset(request: web.Request) -> web.StreamResponse:
            return _file(files.get(request.match_info["name"]))

        return asset

    async def config(self, request: web.Request) -> web.Response:
        """The public URL and the anon key (public by design: every page embeds it)."""
        return web.json_response(
            {"url": self._public_url.for_request(request), "anonKey": self._anon_key},
            headers=_CACHE,
        )


def _file(path: Path | None) -> web.StreamResponse:
    if path is None:
        raise web.HTTPNotFound(text="not found")
    kind = _TYPES[path.suffix]
    if not kind.startswith("image/png"):
        kind += "; charset=utf-8"
    return web.FileResponse(path, headers={**_CACHE, "Content-Type": kind})
