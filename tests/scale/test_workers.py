"""``rtm serve --workers 2`` as a user runs it: a supervisor and its worker processes on one port.

Each worker names itself in the ``X-Rtm-Worker`` header (its pid) of every response, the
WebSocket upgrade included: that is how a test knows which worker a socket landed on. The
workers share the test suite's database, so they broadcast to each other through the default
broker of several workers without Redis: PostgreSQL. Every wait is bounded; only processes
started here are signalled, by pid.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime_messaging import RealtimeMessagingManager
from realtime_messaging.client import ConnectionLostError, MessageEvent
from realtime_messaging.exceptions import RealtimeMessagingError
from realtime_messaging.keys import anon_key
from realtime_messaging.server.app import start
from realtime_messaging.server.supervisor import Supervisor
from tests.conftest import TEST_SECRET, Seed, make_settings, running_server
from tests.scale.conftest import WAIT, eventually

RTM = [sys.executable, "-m", "realtime_messaging"]
#: The graceful timeout the supervisors here run with, and the bound on their whole stop.
GRACEFUL = 10.0
#: Sockets tried before concluding that the kernel does not spread them (2 workers: a chance
#: of 2**-31 to land all on one by luck).
MAX_SOCKETS = 32


class Supervised:
    """One ``rtm serve --workers N`` subprocess; its output is collected as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.banner: dict[str, str] = {}
        self.stderr: list[str] = []
        self._banner_done = asyncio.Event()
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    @property
    def http_url(self) -> str:
        return self.banner["API URL"]

    @property
    def ws_url(self) -> str:
        return self.banner["Realtime URL"]

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            key, _, value = raw.decode().strip().partition(": ")
            if value:
                self.banner[key] = value
            if key == "service_role key":
                self._banner_done.set()
        self._banner_done.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip())

    async def started(self) -> None:
        async with asyncio.timeout(60):
            await self._banner_done.wait()
        assert "API URL" in self.banner, "\n".join(self.stderr)

    def workers(self) -> set[int]:
        """The pids of the supervisor's live children (its workers)."""
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return set()
        alive = set()
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.add(child.pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    def signal_worker(self, pid: int, sig: int) -> None:
        """Signal one of this supervisor's workers (never any other process)."""
        assert psutil.Process(pid).ppid() == self.proc.pid
        os.kill(pid, sig)

    async def close(self) -> None:
        """SIGTERM (by pid) and wait; SIGKILL it and whatever worker is left after a bound."""
        if self.proc.returncode is None:
            workers = self.workers()
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), GRACEFUL + 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
            for pid in workers:
                if psutil.pid_exists(pid):
                    os.kill(pid, signal.SIGKILL)
        await asyncio.gather(*self._readers, return_exceptions=True)


def _env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTM_")}
    env.update(
        RTM_DATA_DIR=str(tmp_path / "data"),
        RTM_DATABASE_URL=database_url,
        RTM_JWT_SECRET=TEST_SECRET,
        RTM_GRACEFUL_TIMEOUT=str(GRACEFUL),
        **extra,
    )
    return env


@asynccontextmanager
async def supervised(
    tmp_path: Path, database_url: str, workers: int = 2, **env: str
) -> AsyncIterator[Supervised]:
    proc = await asyncio.create_subprocess_exec(
        *RTM,
        "serve",
        "--workers",
        str(workers),
        "--port",
        "0",
        env=_env(tmp_path, database_url, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    server = Supervised(proc)
    try:
        await server.started()
        assert len(server.workers()) == workers
        yield server
    finally:
        await server.close()
        # Shown with a failing test's output.
        print("\n".join(["--- rtm serve stderr ---", *server.stderr]), file=sys.stderr)


class PhxSocket:
    """A raw Phoenix socket (vsn 1.0.0) that knows which worker it is connected to."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.worker = int(ws.response.headers["X-Rtm-Worker"]) if ws.response else 0
        self._ref = 0

    @classmethod
    async def connect(cls, ws_url: str) -> PhxSocket:
        url = f"{ws_url}?apikey={anon_key(TEST_SECRET)}&vsn=1.0.0"
        return cls(await connect(url, open_timeout=WAIT, close_timeout=1))

    async def send(self, topic: str, event: str, payload: Any) -> str:
        self._ref += 1
        ref = str(self._ref)
        frame = {"topic": f"realtime:{topic}", "event": event, "payload": payload}
        await self.ws.send(orjson.dumps({**frame, "ref": ref, "join_ref": "1"}).decode())
        return ref

    async def expect(self, event: str) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                message: dict[str, Any] = orjson.loads(await self.ws.recv())
                if message["event"] == event:
                    return message

    async def join(self, topic: str) -> None:
        await self.send(topic, "phx_join", {"config": {"broadcast": {"self": False}}})
        reply = await self.expect("phx_reply")
        assert reply["payload"]["status"] == "ok", reply

    async def close_code(self) -> int | None:
        """Wait (bounded) for the server to close the socket; its close code."""
        async with asyncio.timeout(WAIT):
            try:
                while True:
                    await self.ws.recv()
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None


@asynccontextmanager
async def phx_sockets(ws_url: str) -> AsyncIterator[list[PhxSocket]]:
    """Sockets on both workers: connected until each of two workers holds some (at least
    six), bounded by :data:`MAX_SOCKETS`; all closed on exit."""
    opened: list[PhxSocket] = []
    try:
        while len(opened) < MAX_SOCKETS:
            opened.append(await PhxSocket.connect(ws_url))
            if len(opened) >= 6 and len({s.worker for s in opened}) == 2:
                break
        yield opened
    finally:
        for sock in opened:
            await sock.ws.close()


async def worker_of_healthz(http: aiohttp.ClientSession, url: str) -> int:
    """The worker answering one /healthz on a new connection (the kernel picks it)."""
    async with http.get(url + "/healthz", headers={"Connection": "close"}) as response:
        assert response.status == 200
        return int(response.headers["X-Rtm-Worker"])


# -- (a), (b) ---------------------------------------------------------------------------


async def test_clients_spread_over_workers_and_broadcast_between_them(
    tmp_path: Path, database_url: str
) -> None:
    async with supervised(tmp_path, database_url) as server:
        workers = server.workers()
        async with phx_sockets(server.ws_url) as socks:
            by_worker = {pid: [s for s in socks if s.worker == pid] for pid in workers}
            assert all(by_worker.values()), f"all {len(socks)} sockets on one worker"
            assert {s.worker for s in socks} == workers
            # A broadcast from a client on one worker reaches a client on the other.
            first, second = (by_worker[pid][0] for pid in sorted(workers))
            await first.join("spread")
            await second.join("spread")
            for sender, receiver in ((first, second), (second, first)):
                await sender.send(
                    "spread",
                    "broadcast",
                    {"type": "broadcast", "event": "hi", "payload": {"from": sender.worker}},
                )
                received = await receiver.expect("broadcast")
                assert received["payload"]["payload"] == {"from": sender.worker}


# -- (c) --------------------------------------------------------------------------------


async def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(
    tmp_path: Path, database_url: str
) -> None:
    async with supervised(tmp_path, database_url) as server:
        victim, survivor = sorted(server.workers())
        server.signal_worker(victim, signal.SIGKILL)

        async def victim_gone() -> bool:
            return victim not in server.workers()

        await eventually(victim_gone)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            # Meanwhile every new connection lands on a listening worker.
            for _ in range(10):
                assert await worker_of_healthz(http, server.http_url) != victim

            async def replaced() -> bool:
                return len(server.workers()) == 2

            await eventually(replaced, timeout=30)
            (new,) = server.workers() - {survivor}
            assert new != victim

            async def new_one_answers() -> bool:
                return await worker_of_healthz(http, server.http_url) == new

            # The new process is counted from its spawn, and answers once it has loaded and
            # listens: on a slow machine that alone takes a few seconds.
            await eventually(new_one_answers, timeout=30)
        assert any(
            f"(pid {victim}) exited with signal SIGKILL" in line for line in server.stderr
        ), server.stderr


# -- (d) --------------------------------------------------------------------------------


async def test_a_drained_worker_closes_with_1012_and_the_sdk_resumes_on_another(
    tmp_path: Path, database_url: str, seed: Seed
) -> None:
    customer_id, portal_token = await seed.customer()
    conversation = await seed.conversation(customer_id)
    _, staff_token = await seed.staff()
    errors: list[Exception] = []
    async with supervised(tmp_path, database_url) as server:
        manager = RealtimeMessagingManager(
            server.http_url, anon_key(TEST_SECRET), access_token=staff_token, on_error=errors.append
        )
        customer = RealtimeMessagingManager(
            server.http_url, anon_key(TEST_SECRET), access_token=portal_token
        )
        try:
            sub = await manager.subscribe_to_conversation(conversation)
            socket = manager.socket._ws
            assert socket is not None and socket.response is not None
            victim = int(socket.response.headers["X-Rtm-Worker"])
            before = await customer.send_message(conversation, "before")
            await _next_message(sub, before["id"])

            async with phx_sockets(server.ws_url) as socks:
                on_victim = [s for s in socks if s.worker == victim]
                server.signal_worker(victim, signal.SIGTERM)
                # Its clients are told "service restart", which clients reconnect after.
                assert [await s.close_code() for s in on_victim] == [1012] * len(on_victim)

            async def sdk_saw_the_close() -> bool:
                return any(isinstance(e, ConnectionLostError) and "1012" in str(e) for e in errors)

            await eventually(sdk_saw_the_close)
            # Sent while the SDK is away (it reconnects after 0.5 s): it comes on the rejoin.
            during = await customer.send_message(conversation, "while away")
            await _next_message(sub, during["id"], timeout=15)
            assert manager.socket.connections == 2
            socket = manager.socket._ws
            assert socket is not None and socket.response is not None
            assert int(socket.response.headers["X-Rtm-Worker"]) != victim
        finally:
            await manager.close()
            await customer.close()


async def test_the_sdk_of_a_killed_worker_resumes_on_another_with_nothing_lost(
    tmp_path: Path, database_url: str, seed: Seed
) -> None:
    """SIGKILL: no close frame, no goodbye. The SDK notices, reconnects to the port (another
    worker takes it), and the messages sent while it was away arrive, in order, once each."""
    customer_id, portal_token = await seed.customer()
    conversation = await seed.conversation(customer_id)
    _, staff_token = await seed.staff()
    async with supervised(tmp_path, database_url) as server:
        manager = RealtimeMessagingManager(
            server.http_url, anon_key(TEST_SECRET), access_token=staff_token
        )
        customer = RealtimeMessagingManager(
            server.http_url, anon_key(TEST_SECRET), access_token=portal_token
        )
        try:
            sub = await manager.subscribe_to_conversation(conversation)
            socket = manager.socket._ws
            assert socket is not None and socket.response is not None
            victim = int(socket.response.headers["X-Rtm-Worker"])
            before = await customer.send_message(conversation, "before")
            await _next_message(sub, before["id"])

            server.signal_worker(victim, signal.SIGKILL)
            sent = [await customer.send_message(conversation, f"away {n}") for n in range(3)]
            got: list[str] = []
            async with asyncio.timeout(15):
                async for event in sub:
                    if isinstance(event, MessageEvent):
                        got.append(event.id)
                        if event.id == sent[-1]["id"]:
                            break
            assert got == [m["id"] for m in sent]
            socket = manager.socket._ws
            assert socket is not None and socket.response is not None
            assert int(socket.response.headers["X-Rtm-Worker"]) != victim
        finally:
            await manager.close()
            await customer.close()


async def _next_message(sub: Any, message_id: str, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        async for event in sub:
            if isinstance(event, MessageEvent) and event.id == message_id:
                return
    raise AssertionError("the subscription ended")


# -- (e) --------------------------------------------------------------------------------


async def test_sigterm_stops_the_supervisor_and_every_worker_with_exit_code_0(
    tmp_path: Path, database_url: str
) -> None:
    async with supervised(tmp_path, database_url) as server:
        workers = server.workers()
        async with phx_sockets(server.ws_url) as socks:
            server.proc.send_signal(signal.SIGTERM)
            assert {await s.close_code() for s in socks} == {1012}
            async with asyncio.timeout(GRACEFUL):
                assert await server.proc.wait() == 0
        assert not any(psutil.pid_exists(pid) for pid in workers)


async def test_sighup_replaces_the_workers_one_at_a_time(tmp_path: Path, database_url: str) -> None:
    async with supervised(tmp_path, database_url) as server:
        old = server.workers()
        server.proc.send_signal(signal.SIGHUP)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:

            async def replaced() -> bool:
                # The port answers throughout.
                await worker_of_healthz(http, server.http_url)
                done = any("workers replaced" in line for line in server.stderr)
                return done and len(server.workers()) == 2

            await eventually(replaced, timeout=30)
        assert not server.workers() & old
        assert not any("exited" in line for line in server.stderr), server.stderr


# -- one process ------------------------------------------------------------------------


async def test_one_process_drains_every_socket_with_1012_in_batches(database_url: str) -> None:
    """More sockets than one batch: every one gets 1012, and the stop does not take the close
    handshake of one socket after another."""
    loop = asyncio.get_running_loop()
    socks: list[ClientConnection] = []
    try:
        async with running_server(database_url) as srv:
            for _ in range(300):
                url = f"{srv.ws_url}?apikey={srv.anon_key}&vsn=1.0.0"
                socks.append(await connect(url, close_timeout=1))
            stopping = loop.time()
        assert loop.time() - stopping < 5.0
        codes = set()
        for ws in socks:
            async with asyncio.timeout(WAIT):
                await ws.wait_closed()
            codes.add(ws.close_code)
        assert codes == {1012}
    finally:
        for ws in socks:
            await ws.close()


# -- the supervisor alone, with stand-in workers ----------------------------------------

#: A stand-in worker: says it is ready, then runs until SIGTERM or its supervisor's end.
SERVES = """
import signal, socket, sys
link = socket.socket(fileno=int(sys.argv[sys.argv.index("--worker-link") + 1]))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
link.sendall(b"ready\\n")
link.recv(1)
"""


def _supervisor(code: str, count: int = 1) -> Supervisor:
    return Supervisor(count, [sys.executable, "-c", code], dict(os.environ), graceful_timeout=5)


async def test_a_worker_that_cannot_start_is_an_error_and_nothing_is_left() -> None:
    supervisor = _supervisor(SERVES.replace('link.sendall(b"ready\\n")', "sys.exit(3)"), 2)
    started: list[bool] = []
    with pytest.raises(RealtimeMessagingError, match="a worker did not start"):
        async with asyncio.timeout(WAIT):
            await supervisor.run(lambda: started.append(True))
    assert started == []
    assert supervisor.pids == []


async def test_crashes_are_restarted_after_a_doubling_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker that dies right after it started: restarted after 0.5 s, then 1 s, then 2 s."""
    caplog.set_level(logging.INFO, logger="realtime_messaging.server.supervisor")
    supervisor = _supervisor(SERVES.replace("link.recv(1)", "sys.exit(1)"))
    run = asyncio.create_task(supervisor.run(lambda: None))

    async def restarted_three_times() -> bool:
        return caplog.text.count("restarting it in") >= 3

    try:
        await eventually(restarted_three_times, timeout=10)
    finally:
        supervisor.stop()
        async with asyncio.timeout(WAIT):
            await run
    delays = re.findall(
        r"exited with code 1 after [\d.]+ s; restarting it in ([\d.]+) s", caplog.text
    )
    assert delays[:3] == ["0.5", "1", "2"]


async def test_stop_sigterms_the_workers_then_kills_those_that_linger() -> None:
    lingers = SERVES.replace("lambda *_: sys.exit(0)", "signal.SIG_IGN")
    supervisor = _supervisor(lingers, 2)
    supervisor.graceful_timeout = 0.5
    ready = asyncio.Event()
    run = asyncio.create_task(supervisor.run(ready.set))
    async with asyncio.timeout(WAIT):
        await ready.wait()
    pids = supervisor.pids
    assert len(pids) == 2
    supervisor.stop()
    async with asyncio.timeout(WAIT):
        await run
    assert not any(psutil.pid_exists(pid) for pid in pids)


async def test_an_idle_keep_alive_connection_is_closed_before_the_websockets_drain(
    database_url: str,
) -> None:
    """A request sent on it meanwhile would otherwise wait, then be cut off unanswered."""
    running = await start(make_settings(), database_url, TEST_SECRET)
    port = int(running.url.rsplit(":", 1)[1])
    closing: asyncio.Task[None] | None = None
    writers: list[asyncio.StreamWriter] = []
    try:
        # A WebSocket client that never answers the close: the drain waits for it.
        ws_reader, ws_writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(ws_writer)
        ws_writer.write(
            f"GET /realtime/v1/websocket?apikey={anon_key(TEST_SECRET)}&vsn=1.0.0 HTTP/1.1\r\n"
            "Host: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert (await ws_reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        await reader.readexactly(int(re.search(rb"Content-Length: (\d+)", head)[1]))  # type: ignore[index]

        closing = asyncio.create_task(running.close())
        async with asyncio.timeout(1):
            assert await reader.read() == b""
        assert not closing.done()  # still waiting for the silent WebSocket
    finally:
        for w in writers:
            w.close()
        await (closing or running.close())
