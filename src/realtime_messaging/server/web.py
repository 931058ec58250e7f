"""The web side served by ``rtm serve``: the staff inbox at ``/``, the customer chat at
``/portal``, their assets under ``/app/``, the browser build of the TypeScript client at
``/js/realtime-messaging.js`` and ``/web-config.json``, what the pages need to connect.

The files are built from ``web-src/`` and ``clients/js/`` and ship inside the package
(``realtime_messaging/web``), so serving them needs no Node. Only files listed in the package
directory are served, by name: a request path never becomes a file path.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from ..exceptions import ConfigurationError
from .public_url import PublicUrl, valid_host

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


def _valid_origin(origin: str) -> str:
    """An origin as a browser sends it (``https://shop.example.com[:port]``), or ValueError."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not valid_host(parts.netloc):
        raise ValueError(f"not an origin: {origin!r}")
    if parts.path or parts.query or parts.fragment or "@" in origin:
        raise ValueError(f"an origin has no path, query or credentials: {origin!r}")
    return f"{parts.scheme}://{parts.netloc}"


class WebAssets:
    """Routes for the pages and scripts; ``public_url`` and ``anon_key`` go to the pages.

    The staff inbox is never shown inside another site's frame (clickjacking); the customer
    chat may be, by the origins listed in ``embed_origins`` only (docs/web.md).
    """

    def __init__(
        self,
        public_url: PublicUrl,
        anon_key: str,
        *,
        embed_origins: tuple[str, ...] = (),
        root: Path = WEB_ROOT,
    ) -> None:
        self._public_url = public_url
        self._anon_key = anon_key
        self._app = _listing(root / "app")
        self._js = _listing(root / "js")
        try:
            origins = " ".join(_valid_origin(o) for o in embed_origins)
        except ValueError as exc:
            raise ConfigurationError(f"RTM_EMBED_ORIGINS: {exc}") from exc
        self._frames = {
            "inbox.html": "frame-ancestors 'none'",
            "portal.html": f"frame-ancestors 'self' {origins}".strip(),
        }

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._page("inbox.html")),
            web.get("/portal", self._page("portal.html")),
            web.get("/app/{name}", self._asset(self._app)),
            web.get("/js/{name}", self._asset(self._js)),
            web.get("/web-config.json", self.config),
        ]

    def _page(self, name: str) -> Handler:
        policy = {"Content-Security-Policy": self._frames[name]}

        async def page(request: web.Request) -> web.StreamResponse:
            response = _file(self._app.get(name))
            response.headers.update(policy)
            return response

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
