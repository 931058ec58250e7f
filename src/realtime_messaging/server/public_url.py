"""The URL clients are told to use (the subscription answer's ``supabaseUrl``): configured, or
where the server listens; never the request's ``Host``."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from ..exceptions import ConfigurationError

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(
    rf"(?:(?P<name>{_LABEL}(?:\.{_LABEL})*)|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::(?P<port>[0-9]{{1,5}}))?"
)
_PATH = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*")
_SCHEMES = ("http", "https")


def valid_host(value: str) -> bool:
    """A host name, IPv4 or bracketed IPv6 address, with an optional port: nothing else (no
    path, credentials, spaces or markup)."""
    match = _HOST.fullmatch(value)
    if match is None or len(value) > 260:
        return False
    port = match["port"]
    if port is not None and int(port) > 65535:
        return False
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return False
    return True


def public_base_url(value: str) -> str:
    """``value`` as a base URL to give clients: http or https, a host[:port], optionally a path;
    no credentials, query or fragment; without a trailing slash. ValueError otherwise."""
    if not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError("may not contain spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme.lower() not in _SCHEMES:
        raise ValueError("must start with http:// or https://")
    if not valid_host(parts.netloc):
        raise ValueError("needs a host, optionally with a port (and no user or password)")
    if "?" in value or "#" in value:
        raise ValueError("may not have a query or a fragment")
    if not _PATH.fullmatch(parts.path):
        raise ValueError("has a path with characters a URL path cannot have")
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path.rstrip("/"), "", ""))


def listen_url(host: str, port: int) -> str:
    """``http://host:port`` of a listening socket (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _first(value: str | None) -> str:
    """The first of a header's comma-separated values: the one the proxy nearest the client set."""
    return (value or "").split(",", 1)[0].strip()


@dataclass(frozen=True, slots=True)
class PublicUrl:
    """Where clients reach this server, as the subscription answer tells them.

    Never the request's ``Host``: any client can send any ``Host``, and an answer that echoes it
    points whoever follows it (or a cache that keeps it) at the attacker's server. Behind a
    reverse proxy, and only when told to trust it, its ``X-Forwarded-Proto`` and
    ``X-Forwarded-Host`` are used instead, and only when they are http(s) and a host[:port].
    """

    base: str
    trust_proxy_headers: bool = False

    @classmethod
    def configured(cls, url: str, *, trust_proxy_headers: bool = False) -> PublicUrl:
        try:
            return cls(public_base_url(url), trust_proxy_headers)
        except ValueError as exc:
            raise ConfigurationError(
                f"cannot use {url!r} as the public URL (RTM_PUBLIC_URL): {exc}"
            ) from exc

    def for_request(self, request: web.Request) -> str:
        if not self.trust_proxy_headers:
            return self.base
        parts = urlsplit(self.base)
        proto = _first(request.headers.get("X-Forwarded-Proto")).lower()
        host = _first(request.headers.get("X-Forwarded-Host"))
        scheme = proto if proto in _SCHEMES else parts.scheme
        netloc = host if valid_host(host) else parts.netloc
        return urlunsplit((scheme, netloc, parts.path, "", ""))
