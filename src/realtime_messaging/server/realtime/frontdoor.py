"""The protocol every accepted connection starts with: its first request decides who serves it.

A WebSocket upgrade to the realtime endpoint is authenticated here and then handed to picows,
which parses frames in C and calls back per frame; anything else (the HTTP API, the web pages,
``/rest/v1``) is handed to aiohttp with the bytes read so far. Both take over the same transport
(``set_protocol``, as picows itself does behind a proxy), so the port, TLS and the kernel's
accept queue stay one. Measured in benchmarks/README.md ("Fan-out" and "Idle connections"):
aiohttp's per-socket objects and middleware chain were most of a socket's memory and of a
connect's CPU.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from multidict import CIMultiDict
from picows import WSAutoPingStrategy, WSUpgradeResponse, WSUpgradeResponseWithListener
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in picows's stubs

from ..access import log_request, loggable_path, request_id
from ..eager import Started, step
from .wire import PicowsWire

#: The paths of the realtime endpoint (Supabase's, and Phoenix's default).
REALTIME_PATHS = frozenset({"/realtime/v1/websocket", "/socket/websocket"})
#: The most bytes a request head may take before aiohttp is left to refuse it (its own limits
#: on the request line and each header are 8,190 bytes).
MAX_HEAD = 16 * 1024
#: Query parameters read from an upgrade (``apikey``, ``vsn``, ``log_level``...).
MAX_QUERY_FIELDS = 32
#: What picows's read buffer starts at (it grows for bigger frames): a socket's largest fixed
#: cost, and clients send small frames.
READ_BUFFER = 2048
#: How long a new connection may take to send its first request head (browsers send it at
#: once): a connection that sends nothing must not hold a file descriptor for ever.
HEAD_TIMEOUT = 10.0

#: picows logs a line per connection at info level; its warnings still show.
_picows_log = logging.getLogger("realtime_messaging.picows")
_picows_log.setLevel(logging.WARNING)
#: What every socket's picows protocol logs to: an adapter, so that picows makes no logger per
#: socket; one for all, since it holds nothing of a socket.
_PICOWS_LOG = logging.LoggerAdapter(_picows_log)


class Upgrade:
    """A WebSocket upgrade to the realtime endpoint, as the front door read it: its first
    query parameters and headers by (lower-case) name, and its path for the access log."""

    __slots__ = ("query", "headers", "logged_path")

    def __init__(self, query: Mapping[str, str], headers: Mapping[str, str], logged_path: str):
        self.query = query
        self.headers = headers
        self.logged_path = logged_path


class Refusal(Exception):
    """An upgrade answered with an HTTP error and a JSON body ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


#: Authenticates an upgrade and returns the wire that serves it, or raises Refusal.
Admit = Callable[[Upgrade], Awaitable[PicowsWire[Any]]]


class Doors:
    """What every front door of one listening socket shares: who serves after it, and the
    connections still waiting for their first request (closed when late, or when the server
    drains).

    One timer for all the waiting connections, not one each: they wait in the order they
    came, so a sweep stops at the first that is not late. A connection is closed between
    :data:`HEAD_TIMEOUT` and a half of it later.
    """

    def __init__(
        self,
        http: web.Server,
        admit: Admit,
        *,
        max_frame_bytes: int,
        response_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.http = http
        self.admit = admit
        self.max_frame_bytes = max_frame_bytes
        self.response_headers = dict(response_headers or {})
        #: The head of every 101 answer up to the per-connection lines (:class:`_Switching`).
        self.switching_head = b"HTTP/1.1 101 Switching Protocols\r\n" + b"".join(
            b"%b: %b\r\n" % (name.encode(), value.encode())
            for name, value in {
                **self.response_headers,
                "Connection": "upgrade",
                "Upgrade": "websocket",
            }.items()
        )
        #: The connections waiting for their first request, and since when (the loop's time).
        self.waiting: dict[FrontDoor, float] = {}
        self._loop = asyncio.get_running_loop()
        self._sweep: asyncio.TimerHandle | None = None
        #: Upgrades being authenticated (held here: the loop keeps only weak references).
        self.upgrading: set[asyncio.Task[None]] = set()

    def __call__(self) -> FrontDoor:
        return FrontDoor(self)

    def arrived(self, door: FrontDoor) -> None:
        self.waiting[door] = self._loop.time()
        if self._sweep is None:
            self._sweep = self._loop.call_later(HEAD_TIMEOUT / 2, self._close_late)

    def _close_late(self) -> None:
        self._sweep = None
        deadline = self._loop.time() - HEAD_TIMEOUT
        late = []
        for door, since in self.waiting.items():
            if since > deadline:
                break
            late.append(door)
        for door in late:
            del self.waiting[door]
            door.close()
        if self.waiting:
            self._sweep = self._loop.call_later(HEAD_TIMEOUT / 2, self._close_late)

    def close_waiting(self) -> None:
        """The server drains: close the connections that have not been handed over yet."""
        for door in list(self.waiting):
            door.close()
        for task in list(self.upgrading):
            task.cancel()


class FrontDoor(asyncio.Protocol):
    """Reads one request head, then hands the connection over and is gone."""

    __slots__ = ("_doors", "_transport", "_head")

    def __init__(self, doors: Doors) -> None:
        self._doors = doors
        self._transport: asyncio.Transport | None = None
        self._head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._doors.arrived(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._doors.waiting.pop(self, None)
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        head = self._head + data if self._head else data
        end = head.find(b"\r\n\r\n")
        if end < 0 and len(head) <= MAX_HEAD:
            self._head = head
            return
        self._doors.waiting.pop(self, None)
        transport = self._transport
        assert transport is not None
        self._transport = None
        upgrade = _realtime_upgrade(head[:end]) if end >= 0 else None
        if upgrade is None:
            _take_over(transport, self._doors.http(), head)
            return
        # An upgrade with a known key is admitted here and now; one that waits (a token
        # looked up in the database) goes on in a task, reading paused meanwhile.
        started = step(_upgrade(self._doors, transport, upgrade, head))
        if started is not None:
            transport.pause_reading()
            task = asyncio.create_task(_finish(started))
            self._doors.upgrading.add(task)
            task.add_done_callback(self._doors.upgrading.discard)


async def _finish(started: Started) -> None:
    await started


def _realtime_upgrade(head: bytes) -> Upgrade | None:
    """The head of a GET to a realtime path asking to upgrade to WebSocket; None for anything
    else, which aiohttp then answers (a plain GET to the path included)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        return None
    target = parts[1].decode("latin-1")
    path, _, query = target.partition("?")
    if path not in REALTIME_PATHS:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, raw = line.partition(b":")
        if not sep:
            return None  # malformed: aiohttp refuses it
        headers.setdefault(key.strip().lower().decode("latin-1"), raw.strip().decode("latin-1"))
    if headers.get("upgrade", "").lower() != "websocket":
        return None
    try:
        fields = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        return None  # too many fields: aiohttp answers, the handler refuses
    params: dict[str, str] = {}
    for name, value in fields:
        params.setdefault(name, value)
    return Upgrade(params, headers, loggable_path(path, fields))


async def _upgrade(
    doors: Doors, transport: asyncio.Transport, upgrade: Upgrade, head: bytes
) -> None:
    """Authenticate, then let picows answer the upgrade and serve the socket; its access line
    is written when it closes (with how long it lived), as for an upgrade through aiohttp."""
    started = time.perf_counter()
    rid = request_id(upgrade.headers.get("x-request-id", ""))
    try:
        wire = await doors.admit(upgrade)
    except asyncio.CancelledError:
        transport.close()
        raise
    except Refusal as refusal:
        _refuse(transport, refusal, rid)
        log_request("GET", upgrade.logged_path, refusal.status, started, rid)
        return
    if transport.is_closing():
        return
    wire.on_gone = partial(log_request, "GET", upgrade.logged_path, 101, started, rid)
    response = _Switching(doors.switching_head, rid)

    def serve(request: object) -> WSUpgradeResponseWithListener:
        return WSUpgradeResponseWithListener(response, wire)

    protocol = WSProtocol(
        None,  # host and port: a client's
        None,  # path: a client's
        False,  # server side
        serve,
        _PICOWS_LOG,
        True,  # an exception in a callback closes the socket (1011) instead of the process
        None,  # no handshake timer: the whole request head is handed over at once
        False,  # no pings from the server: clients heartbeat, the idle sweeper closes the silent
        20.0,
        20.0,
        WSAutoPingStrategy.PING_WHEN_IDLE,
        True,  # answer pings
        doors.max_frame_bytes,
        None,  # extra headers: a client's
        READ_BUFFER,
    )
    wire.attach(transport)
    raw = transport.get_extra_info("socket")
    _take_over(transport, protocol, head, None if raw is None else _SeenByPicows(transport, raw))


#: TCP options picows sets on a new connection that are set already, or need not be:
#: TCP_NODELAY is set by the event loop on every TCP connection it accepts (uvloop and asyncio
#: alike), and TCP_QUICKACK is no lasting setting (tcp(7): "This flag is not permanent"), while
#: the kernel acknowledges the first segments of a new connection at once anyway.
_SET_ALREADY = frozenset({socket.TCP_NODELAY, getattr(socket, "TCP_QUICKACK", -1)})


class _Switching(WSUpgradeResponse):
    """The 101 answer to an upgrade, as picows writes it: the server's part of the head is
    prepared once (:attr:`Doors.switching_head`); the request id and the key's answer, which
    picows adds, are the only parts made per connection. picows's own response builds a
    header dictionary and formats each line, about 2 % of a connect's CPU (py-spy,
    benchmarks/README.md, "Connect path, third pass")."""

    __slots__ = ("_head", "_rid")

    def __init__(self, head: bytes, rid: str) -> None:
        self.version = b"HTTP/1.1"
        self.status = HTTPStatus.SWITCHING_PROTOCOLS
        self.headers = CIMultiDict()  # picows adds Sec-WebSocket-Accept here
        self.body = None
        self._head = head
        self._rid = rid

    def to_bytes(self) -> bytearray:
        out = bytearray(self._head)
        out += b"X-Request-Id: %b\r\n" % self._rid.encode()
        for name, value in self.headers.items():
            out += b"%b: %b\r\n" % (name.encode(), value.encode())
        out += b"\r\n"
        return out


class _SeenByPicows:
    """The connection's transport as picows's protocol is handed it, and its socket.

    Taking over, picows asks the transport for its socket and both addresses, sets TCP_NODELAY
    and TCP_QUICKACK on the socket, and reads four options for a log line at info level, which
    is not logged (``_picows_log``). Asked of the real socket, that is eight system calls, and
    for uvloop a socket object each with one more (py-spy's native profile,
    benchmarks/README.md, "Connect path, third pass"). Here the event loop answers the
    addresses, which it read at accept, and the options for the log line are read only when
    that line is logged. The two options are not set again (:data:`_SET_ALREADY`). Writing
    and closing, which picows keeps for later, are the transport's own methods, and ``fileno``
    the descriptor picows sends on.
    """

    __slots__ = ("write", "writelines", "get_write_buffer_size", "close", "abort", "_of", "_sock")

    def __init__(self, transport: asyncio.Transport, sock: Any) -> None:
        self.write = transport.write
        self.writelines = transport.writelines
        self.get_write_buffer_size = transport.get_write_buffer_size
        self.close = transport.close
        self.abort = transport.abort
        self._of = transport
        self._sock = sock  # the event loop's view of the socket

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self
        return self._of.get_extra_info(name, default)

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def setsockopt(self, level: int, option: int, value: int) -> None:
        if level == socket.IPPROTO_TCP and option in _SET_ALREADY and value:
            return
        self._sock.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int) -> int:
        if _picows_log.isEnabledFor(logging.INFO):
            return int(self._sock.getsockopt(level, option))
        return 0


def _take_over(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    head: bytes,
    seen: _SeenByPicows | None = None,
) -> None:
    """Make ``protocol`` the connection's, as if it had read ``head`` itself (``seen``: what
    it is told the transport is, if not the transport itself)."""
    transport.set_protocol(protocol)
    protocol.connection_made(cast(asyncio.BaseTransport, seen or transport))
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(head)
        while view and not transport.is_closing():
            buffer = memoryview(protocol.get_buffer(len(view)))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    else:
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(head)
    transport.resume_reading()


def _refuse(transport: asyncio.Transport, refusal: Refusal, rid: str) -> None:
    body = orjson.dumps({"error": refusal.message})
    reason = HTTPStatus(refusal.status).phrase
    transport.write(
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"X-Request-Id: %s\r\nConnection: close\r\n\r\n%s"
        % (refusal.status, reason.encode(), len(body), rid.encode(), body)
    )
    transport.close()
