"""A WebSocket client reduced to what connecting costs, for measuring a server's connect rate.

With picows's client, the load generator spends more CPU per connection than the server does
(benchmarks/README.md, "Idle connections"), so the rate it reaches is its own. This one writes a
prepared upgrade request, checks the status line of the answer, writes a prepared (masked) join
frame, and waits for the join's ``ok`` reply by looking for it in the bytes: no parser, no frame
objects. It is for idle sockets only (heartbeats and the close); traffic phases keep picows.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, cast
from urllib.parse import urlsplit

_KEY = os.urandom(4)


def masked_text_frame(payload: bytes) -> bytes:
    """A final, masked text frame, as a client must send it (RFC 6455, section 5.3)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    masked = bytes(b ^ _KEY[i & 3] for i, b in enumerate(payload))
    return header + _KEY + masked


def upgrade_request(url: str) -> tuple[str, int, bytes]:
    """Host, port and the HTTP upgrade request for a ``ws://`` URL."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    return host, port, request


class LeanSocket(asyncio.Protocol):
    """One connection: upgraded, then (``join`` given) joined; ``opened`` says when.

    It stands in for picows's transport where the idle phase needs one: ``send`` writes a
    masked text frame, ``disconnect`` ends the connection.
    """

    def __init__(self, request: bytes, join: bytes | None) -> None:
        self._request = request
        self._join = join
        self._head = b""
        self._upgraded = False
        #: time.monotonic() at the 101 answer
        self.upgraded_at = 0.0
        self._transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_sent = 0.0

    @property
    def transport(self) -> LeanSocket | None:
        return self if self._transport is not None and self.opened.done() else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self.opened.done():
            return  # heartbeat replies and pushes: nothing to check on an idle socket
        if not self._upgraded:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self._head.startswith(b"HTTP/1.1 101"):
                self._fail(self._head[:80].decode(errors="replace"))
                return
            self._upgraded = True
            self.upgraded_at = time.monotonic()
            rest, self._head = self._head[end + 4 :], b""
            if self._join is None:
                self.opened.set_result(None)
                return
            assert self._transport is not None
            self._transport.write(self._join)
            data = rest
        # The join reply is the first frame after the upgrade (a presence state may follow).
        self._head += data
        if b'"phx_reply"' in self._head:
            if b'"status":"ok"' in self._head:
                self.opened.set_result(None)
            else:
                self._fail(self._head[:200].decode(errors="replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.opened.done():
            self._fail(f"connection lost: {exc!r}")

    def _fail(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(RuntimeError(why))
        if self._transport is not None:
            self._transport.abort()

    def send(self, kind: Any, payload: bytes) -> None:
        if self._transport is not None:
            self._transport.write(masked_text_frame(payload))

    def disconnect(self, graceful: bool = True) -> None:
        if self._transport is not None:
            self._transport.abort()


#: Source addresses the connections spread over (all loopback): past about 14,000 connections
#: to one address and port, the kernel's search for a free ephemeral port of a single source
#: address dominated the client's connect() (benchmarks/README.md, "Idle connections").
SOURCES = tuple(f"127.0.0.{k}" for k in range(2, 66))


async def lean_connect(
    url: str, join: bytes | None, index: int, timeout: float = 60.0
) -> LeanSocket:
    """Connect, upgrade and (``join``: the payload of a join frame) join; raise if refused.
    ``index`` picks the source address on loopback."""
    host, port, request = upgrade_request(url)
    frame = None if join is None else masked_text_frame(join)
    loop = asyncio.get_running_loop()
    local = (SOURCES[index % len(SOURCES)], 0) if host == "127.0.0.1" else None
    _, sock = await loop.create_connection(
        lambda: LeanSocket(request, frame), host, port, local_addr=local
    )
    try:
        await asyncio.wait_for(asyncio.shield(sock.opened), timeout)
    except BaseException:
        sock.disconnect()
        raise
    return sock
