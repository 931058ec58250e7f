"""Cross-origin requests (CORS) to the HTTP API, the PostgREST-style routes and the REST
broadcast, for browser apps served from other origins (``RTM_CORS_ORIGINS``, docs/api.md).

Only the origins listed may call from a browser; ``*`` lets any origin. A preflight from an
origin not listed is answered 403 without CORS headers, and other responses to it carry none,
so the browser blocks the call. No origin listed (the default): same origin only.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from .http import error

#: Where cross-origin calls are answered (the WebSocket needs no CORS; pages are same-origin).
CORS_PATHS = ("/api/", "/rest/v1/", "/realtime/v1/api/broadcast")
#: What the Supabase clients (supabase-js, postgrest-js, realtime-js) and our own send.
DEFAULT_HEADERS = (
    "apikey",
    "authorization",
    "x-client-info",
    "content-type",
    "prefer",
    "range",
    "accept-profile",
    "content-profile",
    "x-request-id",
)
#: Further request headers allowed when a preflight asks for them.
EXTRA_HEADERS = frozenset(
    {"accept", "accept-language", "content-language", "x-supabase-api-version", "if-none-match"}
)
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
EXPOSED_HEADERS = "Content-Range, X-Request-Id"
#: How long a browser may cache a preflight (Chromium caps it at 2 hours).
MAX_AGE = "7200"


class Cors:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(origins)

    def install(self, app: web.Application) -> None:
        """Answer preflights (a middleware) and label the actual responses (a signal, so that
        errors raised by aiohttp itself are labelled too)."""
        app.middlewares.append(self.middleware)
        app.on_response_prepare.append(self._label)

    def allowed(self, origin: str) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or None when refused."""
        if self.any:
            return "*"
        return origin if origin in self.origins else None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if (
            request.method != "OPTIONS"
            or origin is None
            or "Access-Control-Request-Method" not in request.headers
            or not request.path.startswith(CORS_PATHS)
        ):
            return await handler(request)
        allow = self.allowed(origin)
        if allow is None:
            response = error(
                403, "forbidden", f"cross-origin requests from {origin} are not allowed"
            )
            response.headers["Vary"] = "Origin"
            return response
        asked = request.headers.get("Access-Control-Request-Headers", "")
        headers = list(DEFAULT_HEADERS)
        for name in (h.strip().lower() for h in asked.split(",")):
            if name in EXTRA_HEADERS and name not in headers:
                headers.append(name)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": allow,
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ", ".join(headers),
                "Access-Control-Max-Age": MAX_AGE,
                "Vary": "Origin",
            },
        )

    async def _label(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if not request.path.startswith(CORS_PATHS):
            return
        vary = response.headers.get("Vary")
        if vary is None:
            response.headers["Vary"] = "Origin"
        elif "origin" not in vary.lower():
            response.headers["Vary"] = f"{vary}, Origin"
        if origin is None or "Access-Control-Allow-Origin" in response.headers:
            return
        allow = self.allowed(origin)
        if allow is not None:
            response.headers["Access-Control-Allow-Origin"] = allow
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
