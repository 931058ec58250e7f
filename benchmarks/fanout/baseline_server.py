"""The baseline of the fan-out benchmark: a bare broadcast server on picows + uvloop.

No protocol, no auth. A client connects to ``/ws?room=<name>`` (``room`` may repeat); a text
frame ``"<room>|<payload>"`` from any connection goes, unchanged, to every member of that room
except the sender (as a Supabase channel joined with ``broadcast.self = false`` does), so both
servers of the benchmark do the same work per message: one frame in, room size - 1 frames out.
A connection opened with ``?pub=1`` and no room only publishes.

    python baseline_server.py --port 9001   # prints "ready <port>" once it listens
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from urllib.parse import parse_qs, urlsplit

import uvloop
from picows import WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

ROOMS: dict[bytes, set[Member]] = {}


class Member(WSListener):
    def __init__(self, rooms: list[bytes]) -> None:
        self.rooms = rooms
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        for room in self.rooms:
            ROOMS.setdefault(room, set()).add(self)

    def on_ws_frame(self, transport: WSTransport, frame: object) -> None:
        kind = frame.msg_type  # type: ignore[attr-defined]
        if kind is WSMsgType.TEXT:
            data = frame.get_payload_as_bytes()  # type: ignore[attr-defined]
            members = ROOMS.get(data[: data.find(b"|")])
            if members:
                for member in members:
                    if member is not self:
                        member.transport.send(WSMsgType.TEXT, data)  # type: ignore[union-attr]
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())  # type: ignore[attr-defined]
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        for room in self.rooms:
            members = ROOMS.get(room)
            if members is not None:
                members.discard(self)
                if not members:
                    del ROOMS[room]


def route(request: WSUpgradeRequest) -> Member | None:
    url = urlsplit(request.path.decode())
    if url.path != "/ws":
        return None
    query = parse_qs(url.query)
    return Member([room.encode() for room in query.get("room", [])])


async def main(host: str, port: int) -> None:
    server = await ws_create_server(
        route,
        host,
        port,
        backlog=4096,
        websocket_handshake_timeout=30,
        read_buffer_init_size=4096,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        uvloop.run(main(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)
