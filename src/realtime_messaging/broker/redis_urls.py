"""What ``RTM_REDIS_URL`` may say, and the connection pools it makes: one Redis server, a
Sentinel deployment, or a Redis Cluster (``redis+cluster://``, :func:`parse_cluster_url`). Shared
by the brokers and the rate limiter; passwords never reach a log (:func:`redacted`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from redis.asyncio.connection import ConnectionPool, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from ..exceptions import ConfigurationError

#: URL schemes of one Redis server: plain, TLS, Unix socket.
SCHEMES = ("redis", "rediss", "unix")
#: URL schemes of a Redis Sentinel deployment (``rediss+sentinel``: TLS to the master and the
#: sentinels alike).
SENTINEL_SCHEMES = ("redis+sentinel", "sentinel", "rediss+sentinel")
#: The form of a Sentinel URL, as error messages name it.
SENTINEL_FORM = (
    "redis+sentinel://[[user]:password@]host:26379[,host:26379,...]/<service_name>[/<db>]"
    "[?sentinel_password=...] (also sentinel://, or rediss+sentinel:// for TLS)"
)
#: URL schemes of a Redis Cluster (``rediss+cluster``: TLS to every node).
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: The form of a Cluster URL, as error messages name it.
CLUSTER_FORM = (
    "redis+cluster://[[user]:password@]host:port[,host:port,...][?options] "
    "(rediss+cluster:// for TLS; any node of the cluster will do as a seed)"
)
#: A sentinel's port when its address gives none.
SENTINEL_PORT = 26379
#: The options of a Sentinel URL's query meant for the sentinels rather than the master.
_SENTINEL_AUTH = {"sentinel_username": "username", "sentinel_password": "password"}
#: Query parameters whose values :func:`redacted` hides.
_SECRETS = ("password", "sentinel_password")


def check_url(url: str) -> None:
    """Refuse a Redis URL this broker cannot use, naming what it accepts."""
    head = url.split(":", 1)[0].lower()
    if head in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        return
    if head in CLUSTER_SCHEMES:
        parse_cluster_url(url)
        return
    if "cluster" in head:
        raise ConfigurationError(
            f"RTM_REDIS_URL: unsupported scheme {head!r}; a Redis Cluster's URL is {CLUSTER_FORM}"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port raises for "host:port,host:port" lists
    except ValueError as exc:
        raise ConfigurationError(
            f"RTM_REDIS_URL is not a valid URL: {exc} (several hosts are a Sentinel "
            f"deployment's: {SENTINEL_FORM}; or a Redis Cluster's: {CLUSTER_FORM})"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"RTM_REDIS_URL: unsupported scheme {scheme or '(none)'!r}; expected redis://, "
            "rediss:// (TLS), unix://, redis+sentinel:// (rediss+sentinel:// for TLS) or "
            "redis+cluster:// (rediss+cluster:// for TLS)"
        )


def is_sentinel_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() in SENTINEL_SCHEMES


def is_cluster_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() in CLUSTER_SCHEMES


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """A parsed Sentinel URL (:func:`parse_sentinel_url`)."""

    #: The sentinels' addresses, in the URL's order.
    sentinels: tuple[tuple[str, int], ...]
    #: The name the sentinels monitor the master under (``sentinel monitor <name> ...``).
    service: str
    #: TLS to the master and the sentinels (``rediss+sentinel://``).
    tls: bool
    #: redis-py connection options for the master: user, password, db, the query's options.
    master: dict[str, Any]
    #: redis-py connection options for the sentinels: ``sentinel_username``,
    #: ``sentinel_password``, and the query's ``ssl_*`` options under TLS.
    sentinel: dict[str, Any]


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse ``redis+sentinel://[[user]:password@]host:port[,host:port...]/<service>[/<db>]``
    (:data:`SENTINEL_FORM`); raise :class:`ConfigurationError` naming the form if malformed.

    The user and password are the master's (and its replicas'); the sentinels get theirs from
    the ``sentinel_username`` and ``sentinel_password`` query options. Every other query option
    is a redis-py connection option for the master, as in a ``redis://`` URL.
    """

    def malformed(problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"RTM_REDIS_URL: malformed Sentinel URL ({problem}); expected {SENTINEL_FORM}"
        )

    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SENTINEL_SCHEMES:
        raise malformed(f"the scheme must be one of {', '.join(SENTINEL_SCHEMES)}")
    if "#" in rest:
        raise malformed("a '#' fragment")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    sentinels = _addresses(hosts, "sentinel address", SENTINEL_PORT, malformed)
    segments = path.split("/")
    if len(segments) > 1 and segments[-1] == "":
        segments.pop()  # a trailing slash
    service = unquote(segments[0])
    if not service:
        raise malformed("no service name after the sentinel addresses")
    if len(segments) > 2:
        raise malformed(f"unexpected path {'/' + path!r} after the service name")
    db = segments[1] if len(segments) == 2 else ""
    if db and not (db.isascii() and db.isdigit()):
        raise malformed(f"the database must be a number, not {db!r}")
    sentinel: dict[str, Any] = {}
    options: list[tuple[str, str]] = []
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise malformed(f"bad query: {exc}") from None
    for name, value in pairs:
        if name in _SENTINEL_AUTH:
            sentinel[_SENTINEL_AUTH[name]] = value
        else:
            options.append((name, value))
    # redis-py parses the rest as it would a one-server URL's (types, percent-decoding).
    single = f"{'rediss' if scheme == 'rediss+sentinel' else 'redis'}://{userinfo}{at}localhost"
    if db:
        single += "/" + db
    if options:
        single += "?" + urlencode(options)
    try:
        master: dict[str, Any] = dict(parse_url(single))
    except ValueError as exc:
        raise malformed(str(exc)) from None
    for key in ("host", "port", "connection_class"):
        master.pop(key, None)
    tls = scheme == "rediss+sentinel"
    if tls:
        sentinel.update({k: v for k, v in master.items() if k.startswith("ssl_")}, ssl=True)
    return SentinelURL(tuple(sentinels), service, tls, master, sentinel)


def _addresses(
    hosts: str, what: str, default_port: int, malformed: Callable[[str], ConfigurationError]
) -> list[tuple[str, int]]:
    """``host[:port],[IPv6]:port,...`` as (host, port) pairs."""
    found: list[tuple[str, int]] = []
    for item in hosts.split(","):
        if item.startswith("["):  # [IPv6]:port
            host, bracket, port = item[1:].partition("]")
            if not bracket or (port and not port.startswith(":")):
                raise malformed(f"bad {what} {item!r}")
            port = port[1:]
        else:
            host, _, port = item.partition(":")
            if ":" in port:
                raise malformed(f"bad {what} {item!r} (write an IPv6 one as [addr]:port)")
        if not host:
            raise malformed(f"a {what} without a host: {item!r}")
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise malformed(f"bad port in {what} {item!r}")
        found.append((unquote(host), int(port) if port else default_port))
    return found


@dataclass(frozen=True, slots=True)
class ClusterURL:
    """A parsed Redis Cluster URL (:func:`parse_cluster_url`)."""

    #: The seed nodes' addresses, in the URL's order: any one answering names the others.
    seeds: tuple[tuple[str, int], ...]
    #: redis-py connection options for every node: user, password, TLS (``connection_class``
    #: and the ``ssl_*`` options), the query's options.
    node: dict[str, Any]


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse ``redis+cluster://[[user]:password@]host:port[,host:port...][?options]``
    (:data:`CLUSTER_FORM`; a Cluster has database 0 only, so the path may be empty or ``/0``);
    raise :class:`ConfigurationError` naming the form if malformed. The query's options are
    redis-py connection options, as in a ``redis://`` URL."""

    def malformed(problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"RTM_REDIS_URL: malformed Redis Cluster URL ({problem}); expected {CLUSTER_FORM}"
        )

    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise malformed(f"the scheme must be one of {', '.join(CLUSTER_SCHEMES)}")
    if "#" in rest:
        raise malformed("a '#' fragment")
    rest, mark, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise malformed(f"a Redis Cluster has database 0 only, not {path!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    seeds = _addresses(hosts, "node address", 6379, malformed)
    single = f"{'rediss' if scheme == 'rediss+cluster' else 'redis'}://{userinfo}{at}localhost"
    try:
        if query:
            parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        node: dict[str, Any] = dict(parse_url(single + mark + query))
    except ValueError as exc:
        raise malformed(str(exc)) from None
    for key in ("host", "port", "db"):
        node.pop(key, None)
    return ClusterURL(tuple(seeds), node)


def sentinel_manager(parsed: SentinelURL, timeout: float) -> Sentinel:
    """A client of the sentinels: each question bounded by ``timeout`` (a sentinel that does
    not answer in time is skipped for the next), no retries, RESP2."""
    return Sentinel(
        parsed.sentinels,
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,
            **parsed.sentinel,
        },
    )


def master_pool(parsed: SentinelURL, manager: Sentinel, **options: Any) -> ConnectionPool:
    """A pool whose every new connection asks the sentinels where the master is now. The URL's
    options win over ``options``, as ``ConnectionPool.from_url``'s do."""
    pool: ConnectionPool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        parsed.service, manager, ssl=parsed.tls, **{**options, **parsed.master}
    )
    return pool


def redacted(url: str) -> str:
    """The URL without its passwords, for logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # By hand: urlunsplit would turn unix:///path into unix:/path, and cannot parse a
    # Sentinel URL's host list.
    rest, mark, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = userinfo.split(":", 1)[0] + ":***@" + hosts
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(name in _SECRETS for name, _ in pairs):
        hidden = [(name, "***" if name in _SECRETS else value) for name, value in pairs]
        query = urlencode(hidden, safe="*/")
    return scheme + sep + netloc + slash + path + mark + query


def without_protocol(url: str) -> str:
    """The URL without a ``protocol`` query parameter (which would override ours)."""
    base, mark, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name == "protocol" for name, _ in pairs):
        return url
    kept = [(name, value) for name, value in pairs if name != "protocol"]
    return base + (mark + urlencode(kept) if kept else "")
