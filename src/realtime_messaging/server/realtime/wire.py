"""The socket under a session: frames in, the close handshake, reading paused and resumed.

Two wires carry the same session. :class:`PicowsWire` is the usual one: the front door
(:mod:`.frontdoor`) hands a new connection whose first request is an upgrade to picows, whose
frames arrive in callbacks (no task, no reader object per socket: benchmarks/README.md,
"Idle connections"). :class:`AiohttpWire` serves an upgrade sent on a connection that already
carried HTTP requests (a pooled connection of aiohttp's client or of a proxy), which aiohttp
owns by then.

Frames going out never pass through a wire: the session's outbox writes whole frames to
:attr:`Wire.transport` (:mod:`..fanout`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import WSMsgType as AiohttpMsg
from aiohttp import web
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

#: How long closing a socket waits for the client's close frame before cutting it: a live
#: client answers at once; one that does not read must not hold a drain up.
CLOSE_HANDSHAKE_TIMEOUT = 1.0
#: "Message too big": a message assembled from fragments past the frame limit.
CLOSE_TOO_BIG = 1009
#: The kinds of frame, as module names: read from its class, an Enum member costs a lookup
#: through the metaclass, and every frame is compared with two.
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY


def _close_reason(reason: str) -> bytes:
    """At most the 123 bytes a close frame carries, cut at a character boundary."""
    return reason.encode()[:123].decode(errors="ignore").encode()


class Wire(Protocol):
    """What a session needs of its socket."""

    @property
    def transport(self) -> asyncio.Transport: ...

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame, wait for the client's (bounded), then end the connection."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Receiver(Protocol):
    """What a wire hands frames to (the session)."""

    def receive(self, data: Any, binary: bool, now: float) -> None: ...

    def close_soon(self, code: int, reason: str) -> None: ...


R = TypeVar("R", bound=Receiver)


class PicowsWire(WSListener, Generic[R]):
    """A session's socket on picows: each frame is handed to the session in the callback
    that parsed it."""

    __slots__ = (
        "_open",
        "_ended",
        "_max_bytes",
        "session",
        "_ws",
        "_raw",
        "_loop",
        "_fragments",
        "_gone",
        "_cut",
        "on_gone",
    )

    def __init__(
        self,
        open_session: Callable[[PicowsWire[R]], R],
        ended: Callable[[R, int | None], None],
        max_bytes: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._open = open_session
        self._ended = ended
        self._max_bytes = max_bytes
        self._loop = loop
        self.session: R | None = None
        self._fragments: list[bytes] | None = None
        self._cut: asyncio.TimerHandle | None = None
        #: Made when a close waits for the connection to go (most sockets never need one).
        self._gone: asyncio.Future[None] | None = None
        #: Called once the connection has gone (the access line).
        self.on_gone: Callable[[], None] | None = None

    @property
    def transport(self) -> asyncio.Transport:
        return self._raw

    def attach(self, transport: asyncio.Transport) -> None:
        """The connection's own transport, which frames are written to (picows is shown
        another face of it, :mod:`.frontdoor`)."""
        self._raw = transport

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._ws = transport
        self.session = self._open(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        session = self.session
        assert session is not None
        if kind is _TEXT or kind is _BINARY:
            if frame.fin:
                session.receive(frame.get_payload_as_bytes(), kind is _BINARY, self._loop.time())
            else:
                self._fragments = [bytes([kind.value]), frame.get_payload_as_bytes()]
        elif kind is WSMsgType.CONTINUATION:
            self._continue(session, frame)
        elif kind is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        # PING is answered by picows; PONG needs nothing.

    def _continue(self, session: R, frame: WSFrame) -> None:
        """A fragment of a message (no browser sends them; the protocol allows them)."""
        fragments = self._fragments
        if fragments is None:
            self._refuse(1002, "continuation without a message")
            return
        fragments.append(frame.get_payload_as_bytes())
        if sum(map(len, fragments)) - 1 > self._max_bytes:
            self._fragments = None
            self._refuse(CLOSE_TOO_BIG, "message too big")
            return
        if frame.fin:
            self._fragments = None
            binary = fragments[0][0] == WSMsgType.BINARY.value
            session.receive(b"".join(fragments[1:]), binary, self._loop.time())

    def _refuse(self, code: int, reason: str) -> None:
        session = self.session
        if session is not None:
            session.close_soon(code, reason)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._cut is not None:
            self._cut.cancel()
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        session = self.session
        if session is not None:
            # Not kept: the session points at this wire, and a cycle would outlive the socket
            # until a full pass of the garbage collector.
            self.session = None
            received = transport.close_handshake.recv if transport.close_handshake else None
            self._ended(session, received.code.value if received is not None else None)
        if self.on_gone is not None:
            self.on_gone()

    async def close(self, code: int, reason: str) -> None:
        ws = self._ws
        if not ws.is_close_frame_sent and not ws.is_disconnected:
            ws.send_close(WSCloseCode(code), _close_reason(reason))
            self._cut = self._loop.call_later(CLOSE_HANDSHAKE_TIMEOUT, ws.disconnect, False)
        if ws.is_disconnected:
            return
        if self._gone is None:
            self._gone = self._loop.create_future()
        try:
            await asyncio.shield(self._gone)
        except asyncio.CancelledError:
            ws.disconnect(False)
            raise

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()


class AiohttpWire:
    """A session's socket on aiohttp's WebSocket: a task reads it and hands each frame to the
    session. The close is sent from that task, so that aiohttp waits for the client's close
    frame (sent from elsewhere while the task waits in ``receive()``, aiohttp would drop the
    connection as soon as its own close frame is written: behind a proxy the client could
    then see a reset instead of the code it should reconnect after)."""

    __slots__ = ("_ws", "_transport", "_reader", "_receiving", "_close", "_resume")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self._ws = ws
        self._transport = transport
        self._reader: asyncio.Task[None] | None = None
        self._receiving = False
        self._close: tuple[int, str] | None = None
        #: Set while the session's line of frames is full: read nothing until it is done.
        self._resume: asyncio.Future[None] | None = None

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    def read(self, session: Receiver, name: str) -> asyncio.Task[None]:
        """Start reading into ``session``, in a task of its own: each frame then resumes the
        task's few frames, not the request's chain of middlewares above them."""
        self._reader = asyncio.create_task(self._run(session), name=name)
        return self._reader

    async def _run(self, session: Receiver) -> None:
        ws = self._ws
        loop = asyncio.get_running_loop()
        while self._close is None:
            self._receiving = True
            try:
                if self._resume is not None:
                    await self._resume
                msg = await ws.receive()
            except asyncio.CancelledError:
                if self._close is None:
                    raise
                assert self._reader is not None
                self._reader.uncancel()  # close() stopped the read, nothing else
                break
            finally:
                self._receiving = False
            if msg.type is AiohttpMsg.TEXT:
                session.receive(msg.data, False, loop.time())
            elif msg.type is AiohttpMsg.BINARY:
                session.receive(msg.data, True, loop.time())
            else:  # CLOSE, CLOSING, CLOSED, ERROR (e.g. 1009 message too big)
                return
        code, reason = self._close
        await ws.close(code=code, message=_close_reason(reason))

    def close_code(self) -> int | None:
        return self._ws.close_code

    async def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            if self._receiving and self._reader is not None:
                self._reader.cancel()
        assert self._reader is not None
        try:
            await asyncio.wait([self._reader])
        except asyncio.CancelledError:
            self._transport.abort()
            raise

    def pause_reading(self) -> None:
        self._resume = asyncio.get_running_loop().create_future()

    def resume_reading(self) -> None:
        if self._resume is not None:
            self._resume.set_result(None)
            self._resume = None
