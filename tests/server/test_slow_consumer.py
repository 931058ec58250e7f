"""A client that stops reading is cut off with 1008 and slows nobody else."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import orjson

from tests.conftest import running_server

from .wsclient import RawSocket


async def _stalled_socket(
    port: int, apikey: str, topic: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-made WebSocket client with a tiny receive buffer that joins and then never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 24)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /realtime/v1/websocket?apikey={apikey}&vsn=1.0.0 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    join = orjson.dumps(
        {
            "topic": f"realtime:{topic}",
            "event": "phx_join",
            "payload": {},
            "ref": "1",
            "join_ref": "1",
        }
    )
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(join))
    writer.write(struct.pack("!BB", 0x81, 0x80 | len(join)) + mask + masked)
    await writer.drain()
    return reader, writer


async def _read_frames_until_close(reader: asyncio.StreamReader) -> int | None:
    """Drain what the server queued; return the close code of the close frame, if any."""
    while True:
        try:
            head = await reader.readexactly(2)
        except asyncio.IncompleteReadError:
            return None
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        body = await reader.readexactly(length)
        if opcode == 0x8:
            return int(struct.unpack("!H", body[:2])[0])


async def test_stalled_reader_is_disconnected_and_others_keep_receiving(database_url: str) -> None:
    async with running_server(database_url, send_buffer_limit=256 * 1024) as srv:
        port = int(srv.http_url.rsplit(":", 1)[1])
        reader, writer = await _stalled_socket(port, srv.anon_key, "slow-room")
        healthy = await RawSocket.connect(srv.ws_url, srv.anon_key)
        publisher = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            await healthy.join("slow-room")
            await publisher.join("slow-room")
            blob = "x" * 16_000
            total = 200  # 3.2 MB in all: far past the stalled client's 256 KiB allowance
            received = 0

            async def consume() -> None:
                nonlocal received
                while received < total:
                    msg = await healthy.expect(lambda m: m.get("event") == "broadcast", timeout=10)
                    assert msg["payload"]["payload"]["i"] == received
                    received += 1

            consumer = asyncio.create_task(consume())
            for i in range(total):
                await publisher.send(
                    "realtime:slow-room",
                    "broadcast",
                    {"type": "broadcast", "event": "b", "payload": {"i": i, "blob": blob}},
                    None,
                    "1",
                )
            await asyncio.wait_for(consumer, 20)
            assert received == total
            # The stalled client, once it reads, finds its data cut short by a 1008 close frame.
            code = await asyncio.wait_for(_read_frames_until_close(reader), 20)
            assert code == 1008
        finally:
            writer.close()
            await healthy.close()
            await publisher.close()
