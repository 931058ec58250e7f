"""The wires under a session: the front door's hand-over to picows (frames sent right behind
the upgrade, fragments, frames in order while one waits, a long line of them), and an upgrade
on a connection that already carried HTTP requests, which aiohttp serves."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import socket
import struct
import uuid

import aiohttp
import orjson
import pytest
import uvloop

from realtime_messaging.server.realtime import frontdoor
from realtime_messaging.server.realtime.frontdoor import _realtime_upgrade
from realtime_messaging.server.realtime.session import INBOX_LIMIT
from realtime_messaging.server.realtime.wire import _close_reason
from tests.conftest import RunningServer, running_server

TIMEOUT = 10.0


def _frame(payload: bytes, opcode: int = 0x1, *, fin: bool = True) -> bytes:
    """A client frame, masked (with a zero key, so the payload reads as is)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + b"\0\0\0\0" + payload


def _push(topic: str, event: str, payload: object, ref: str, join_ref: str | None = None) -> bytes:
    message = {"topic": topic, "event": event, "payload": payload, "ref": ref}
    if join_ref is not None:
        message["join_ref"] = join_ref
    return _frame(orjson.dumps(message))


class Raw:
    """A TCP connection that writes exact bytes and reads server frames (text and close)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, server: RunningServer, behind_upgrade: bytes = b"", *, key: str = "", extra: str = ""
    ) -> tuple[Raw, bytes]:
        """Connect and send the upgrade request (with ``extra`` header lines) and
        ``behind_upgrade`` in the same write; returns the connection and the response head."""
        host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        key = key or base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /realtime/v1/websocket?vsn=1.0.0&apikey={server.anon_key} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            + behind_upgrade
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        return cls(reader, writer), head

    async def next(self) -> tuple[int, bytes]:
        """The next frame from the server: its opcode and payload."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(n), TIMEOUT)

    async def message(self) -> dict[str, object]:
        opcode, payload = await self.next()
        assert opcode == 0x1, (opcode, payload)
        message = orjson.loads(payload)
        assert isinstance(message, dict)
        return message

    def close(self) -> None:
        self.writer.close()


async def test_frames_sent_behind_the_upgrade_request_are_handled(server: RunningServer) -> None:
    raw, head = await Raw.open(server, _push("phoenix", "heartbeat", {}, "7"))
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        reply = await raw.message()
        assert reply["ref"] == "7" and reply["event"] == "phx_reply"
    finally:
        raw.close()


async def test_frames_wait_in_line_behind_a_join(server: RunningServer) -> None:
    """A join that waits for the database (the owner of a conversation no one has looked up);
    the broadcast, heartbeats and leave sent right behind it are handled after it, in the order
    sent, none lost (more than the line holds: reading pauses and resumes)."""
    topic = f"realtime:conversation:{uuid.uuid4()}"
    frames = [
        _push(topic, "phx_join", {"config": {"broadcast": {"ack": True}}}, "1", "1"),
        _push(topic, "broadcast", {"type": "broadcast", "event": "e", "payload": {}}, "2", "1"),
    ]
    beats = INBOX_LIMIT * 2
    frames += [_push("phoenix", "heartbeat", {}, str(3 + i)) for i in range(beats)]
    frames.append(_push(topic, "phx_leave", {}, str(3 + beats), "1"))
    raw, _ = await Raw.open(server, b"".join(frames))
    try:
        refs = [str((await raw.message())["ref"]) for _ in range(3 + beats)]
        assert refs == [str(i) for i in range(1, 4 + beats)]
    finally:
        raw.close()


async def test_a_fragmented_message_is_assembled(server: RunningServer) -> None:
    raw, _ = await Raw.open(server)
    try:
        whole = orjson.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "f"})
        raw.writer.write(
            _frame(whole[:10], 0x1, fin=False)
            + _frame(whole[10:20], 0x0, fin=False)
            + _frame(b"", 0x9)  # a ping between fragments: allowed, answered
            + _frame(whole[20:], 0x0)
        )
        assert await raw.next() == (0xA, b"")
        assert (await raw.message())["ref"] == "f"
    finally:
        raw.close()


async def test_fragments_past_the_frame_limit_close_with_1009(database_url: str) -> None:
    async with running_server(database_url, max_frame_bytes=4096) as srv:
        raw, _ = await Raw.open(srv)
        try:
            raw.writer.write(
                b"".join(_frame(b"x" * 1000, 0x1 if i == 0 else 0x0, fin=False) for i in range(5))
            )
            opcode, payload = await raw.next()
            assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
        finally:
            raw.close()


async def test_an_upgrade_on_a_kept_alive_connection_is_served_and_drained(
    database_url: str,
) -> None:
    """aiohttp's client (and proxies with pooled upstream connections) may send the upgrade on
    a connection that already carried a request: served as any other, closed with 1012 when
    the server stops."""
    async with running_server(database_url) as srv:
        reused: list[object] = []
        trace = aiohttp.TraceConfig()

        async def on_reuse(*args: object) -> None:
            reused.append(args)

        trace.on_connection_reuseconn.append(on_reuse)
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace])
        try:
            async with http.get(f"{srv.http_url}/healthz") as response:
                assert response.status == 200
                await response.read()
            ws = await http.ws_connect(srv.ws_url, params={"vsn": "1.0.0", "apikey": srv.anon_key})
            assert len(reused) == 1  # the upgrade went on the connection of the request
            await ws.send_str(
                orjson.dumps(
                    {
                        "topic": "realtime:kept",
                        "event": "phx_join",
                        "payload": {},
                        "ref": "1",
                        "join_ref": "1",
                    }
                ).decode()
            )
            reply = orjson.loads((await ws.receive(TIMEOUT)).data)
            assert reply["payload"]["status"] == "ok"
            closed = asyncio.create_task(ws.receive(TIMEOUT))
        except BaseException:
            await http.close()
            raise
    try:
        message = await closed
        assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 1012
    finally:
        await http.close()


async def test_the_101_answers_the_key_and_carries_the_request_id(server: RunningServer) -> None:
    """The 101 is written from a head prepared once per server; the key's answer (RFC 6455,
    4.2.2) and the request id are the connection's own."""
    for given in ("ws-req-1", None):
        key = base64.b64encode(os.urandom(16)).decode()
        extra = f"X-Request-Id: {given}\r\n" if given else ""
        raw, head = await Raw.open(server, key=key, extra=extra)
        raw.writer.close()
        status, *lines = head.decode("latin-1").removesuffix("\r\n\r\n").split("\r\n")
        headers = {name.lower(): value for name, _, value in (h.partition(": ") for h in lines)}
        answer = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        assert status == "HTTP/1.1 101 Switching Protocols"
        assert headers["sec-websocket-accept"] == base64.b64encode(answer).decode()
        assert headers["upgrade"].lower() == "websocket"
        assert headers["connection"].lower() == "upgrade"
        if given:
            assert headers["x-request-id"] == given
        else:
            assert re.fullmatch("[0-9a-f]{32}", headers["x-request-id"])


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_picows_is_shown_the_socket_as_the_event_loop_knows_it(
    loop_factory: type[asyncio.AbstractEventLoop],
) -> None:
    """picows sets two options and reads four for a line it does not log: TCP_NODELAY is set
    already by the event loop (asyncio's and uvloop's), the addresses are the loop's, and the
    options are read from the kernel only when picows's info lines are logged."""

    async def check() -> None:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

        class Take(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.set_result(transport)  # type: ignore[arg-type]

        listener = await loop.create_server(Take, "127.0.0.1", 0)
        _, writer = await asyncio.open_connection(*listener.sockets[0].getsockname()[:2])
        transport = await asyncio.wait_for(accepted, TIMEOUT)
        try:
            raw = transport.get_extra_info("socket")
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            seen = frontdoor._SeenByPicows(transport, raw)
            assert seen.get_extra_info("socket") is seen and seen.fileno() == raw.fileno()
            assert seen.get_extra_info("peername") == writer.get_extra_info("sockname")
            assert seen.get_extra_info("sockname") == writer.get_extra_info("peername")
            assert seen.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 0
            level = frontdoor._picows_log.level
            frontdoor._picows_log.setLevel(logging.INFO)
            try:
                assert seen.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == raw.getsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF
                )
            finally:
                frontdoor._picows_log.setLevel(level)
        finally:
            writer.close()
            transport.close()
            listener.close()
            await listener.wait_closed()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(check())


def test_the_front_door_takes_only_realtime_upgrades() -> None:
    def head(line: str, *headers: str) -> bytes:
        return "\r\n".join([line, "Host: x", *headers]).encode()

    upgrade = "Upgrade: websocket"
    taken = _realtime_upgrade(
        head(
            "GET /realtime/v1/websocket?apikey=secret&vsn=1.0.0&vsn=2.0.0 HTTP/1.1",
            upgrade,
            "X-Api-Key: k",
        )
    )
    assert taken is not None
    assert taken.query == {"apikey": "secret", "vsn": "1.0.0"}  # the first of each
    assert taken.headers["x-api-key"] == "k"
    assert "secret" not in taken.logged_path
    assert (
        _realtime_upgrade(head("GET /socket/websocket HTTP/1.1", "upgrade: WebSocket")) is not None
    )
    for refused in (
        head("GET /realtime/v1/websocket HTTP/1.1"),  # no upgrade: aiohttp answers
        head("POST /realtime/v1/websocket HTTP/1.1", upgrade),
        head("GET /api/me HTTP/1.1", upgrade),
        head("GET /realtime/v1/websocket/x HTTP/1.1", upgrade),
        head("GET /realtime/v1/websocket HTTP/1.1", upgrade, "no colon"),
        head(
            "GET /realtime/v1/websocket?" + "&".join(f"a{i}=1" for i in range(100)) + " HTTP/1.1",
            upgrade,
        ),
    ):
        assert _realtime_upgrade(refused) is None


async def test_a_connection_that_sends_no_request_is_closed(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontdoor, "HEAD_TIMEOUT", 0.3)
    async with running_server(database_url) as srv:
        host, port = srv.http_url.removeprefix("http://").rsplit(":", 1)
        silent = await asyncio.open_connection(host, int(port))
        partial = await asyncio.open_connection(host, int(port))
        partial[1].write(b"GET /realtime/v1/websocket HTTP/1.1\r\nHost: x\r\n")
        try:
            for reader, _ in (silent, partial):
                assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        finally:
            silent[1].close()
            partial[1].close()


def test_a_close_reason_fits_a_close_frame() -> None:
    reason = _close_reason("é" * 100)  # 200 bytes in UTF-8
    assert len(reason) <= 123 and reason.decode() == "é" * 61
