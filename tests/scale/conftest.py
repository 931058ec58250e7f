"""Several server processes on one database and one real ``redis-server``.

Each test gets its own ``redis-server`` (a subprocess on a free loopback port, no persistence),
which it may kill and start again on the same port; servers run in this event loop, each with its
own node id, hub and Redis connections. Without ``redis-server`` on PATH the tests are skipped,
except under CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from realtime_messaging.broker import Broker, Envelope
from realtime_messaging.keys import anon_key, service_role_key
from tests.conftest import TEST_SECRET, RunningServer, running_server
from tests.server.wsclient import RawSocket

#: Bound of every wait for something to happen between processes.
WAIT = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` child process on a fixed loopback port; kill and start at will.

    With ``tls`` (a certificate and its key, the certificate also being the CA) it listens
    for TLS only, and ``url`` is a ``rediss://`` URL that verifies the certificate.
    """

    def __init__(self, binary: str, tls: tuple[str, str] | None = None) -> None:
        self.binary = binary
        self.port = _free_port()
        self.tls = tls
        if tls is None:
            self.url = f"redis://127.0.0.1:{self.port}"
        else:
            self.url = (
                f"rediss://127.0.0.1:{self.port}?ssl_cert_reqs=required&ssl_ca_certs={tls[0]}"
            )
        self.proc: asyncio.subprocess.Process | None = None
        # Its working directory while it runs: a replica's full sync writes dump.rdb there,
        # whatever --save says.
        self._dir: str | None = None

    async def start(self) -> None:
        """Start it and wait (bounded) until it answers PING."""
        assert self.proc is None
        self._dir = tempfile.mkdtemp(prefix="rtm-redis-")
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            cert, key = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            listen += ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert]
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            *listen,
            "--bind",
            "127.0.0.1",
            *("--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", self._dir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            try:
                await self.command("PING")
                return
            except (OSError, aioredis.RedisError):
                if self.proc.returncode is not None or loop.time() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                await asyncio.sleep(0.02)

    async def kill(self) -> None:
        """SIGKILL it (by pid) and reap it."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to it (SIGSTOP: it hangs with its connections open; SIGCONT)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def command(self, *args: Any) -> Any:
        """One command on a connection of its own (none of the servers')."""
        client = aioredis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return await client.execute_command(*args)
        finally:
            await client.aclose()

    async def numsub(self, channel: str) -> int:
        reply = await self.command("PUBSUB", "NUMSUB", channel)
        return int(reply[1])

    async def commandstats(self) -> dict[str, int]:
        """Calls per command since the server started (INFO commandstats)."""
        info = await self.command("INFO", "commandstats")
        return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not on PATH (CI installs the redis-server package)")
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    return binary


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer(_redis_binary())
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


@pytest.fixture
async def tls_redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A ``redis-server`` speaking only TLS, with a self-signed certificate made here."""
    binary = _redis_binary()
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not on PATH")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    made = await asyncio.create_subprocess_exec(
        openssl,
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1"),
        *("-addext", "subjectAltName=IP:127.0.0.1"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(made.wait(), 30) == 0
    server = RedisServer(binary, tls=(cert, key))
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


@asynccontextmanager
async def servers(
    database_url: str, redis_url: str | None, n: int, **overrides: Any
) -> AsyncIterator[list[RunningServer]]:
    """``n`` servers on one database and one Redis, stopped on exit."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                running_server(database_url, redis_url=redis_url, **overrides)
            )
            for _ in range(n)
        ]


@asynccontextmanager
async def sockets() -> AsyncIterator[Callable[..., Any]]:
    """``open(server, vsn=...)`` connects a raw socket with the anon key; all closed on exit."""
    opened: list[RawSocket] = []

    async def open_socket(server: RunningServer, *args: Any, **kwargs: Any) -> RawSocket:
        sock = await RawSocket.connect(server.ws_url, server.anon_key, *args, **kwargs)
        opened.append(sock)
        return sock

    try:
        yield open_socket
    finally:
        for sock in opened:
            await sock.close()


async def ready(http: aiohttp.ClientSession, server: RunningServer | RtmProcess) -> tuple[int, Any]:
    async with http.get(server.http_url + "/readyz") as response:
        return response.status, await response.json()


async def metric(
    http: aiohttp.ClientSession, server: RunningServer | RtmProcess, name: str
) -> float:
    """One sample of ``/metrics`` (``name`` with its labels, as printed)."""
    async with http.get(server.http_url + "/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


async def eventually(
    check: Callable[[], Any], timeout: float = WAIT, interval: float = 0.02
) -> float:
    """Poll the async ``check`` until it returns true; fail after ``timeout`` seconds. Returns
    how long it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        if await check():
            return loop.time() - started
        if loop.time() - started > timeout:
            raise AssertionError(f"not true within {timeout} s: {check.__doc__ or check}")
        await asyncio.sleep(interval)


class RtmProcess:
    """One ``rtm serve`` child process (a real one, which a test may SIGKILL), with the test
    suite's secret; ``url`` is its HTTP base, ``ws_url`` its socket endpoint."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.http_url = f"http://127.0.0.1:{port}"
        self.realtime_url = f"ws://127.0.0.1:{port}/realtime/v1"
        self.ws_url = self.realtime_url + "/websocket"
        self.anon_key = anon_key(TEST_SECRET)
        self.service_key = service_role_key(TEST_SECRET)
        self.secret = TEST_SECRET

    async def kill(self) -> None:
        """SIGKILL (by pid): no goodbye of any kind reaches anyone."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                await self.kill()


@asynccontextmanager
async def rtm_processes(
    database_url: str, n: int, env: dict[str, str] | None = None
) -> AsyncIterator[list[RtmProcess]]:
    """``n`` ``rtm serve`` processes on one database, each ready (``/readyz`` 200) on return;
    every one still running is stopped on exit."""
    rtm = os.path.join(os.path.dirname(sys.executable), "rtm")
    stack = ExitStack()
    started: list[RtmProcess] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(n):
                log = stack.enter_context(tempfile.TemporaryFile())
                port = _free_port()
                proc = await asyncio.create_subprocess_exec(
                    rtm,
                    *("serve", "--port", str(port)),
                    env={
                        **os.environ,
                        "RTM_DATABASE_URL": database_url,
                        "RTM_JWT_SECRET": TEST_SECRET,
                        **(env or {}),
                    },
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=log,
                )
                process = RtmProcess(proc, port)
                started.append(process)

                async def answers(process: RtmProcess = process, log: Any = log) -> bool:
                    """the process answers /readyz with 200"""
                    if process.proc.returncode is not None:
                        log.seek(0)
                        tail = log.read().decode(errors="replace")[-2000:]
                        raise RuntimeError(
                            f"rtm serve exited with {process.proc.returncode}:\n{tail}"
                        )
                    try:
                        status, _ = await ready(http, process)
                    except aiohttp.ClientError:
                        return False
                    return status == 200

                await eventually(answers, timeout=60, interval=0.05)
        yield started
    finally:
        await asyncio.gather(*(process.stop() for process in started))
        stack.close()


#: What anyone who can publish to the broker's Redis might send on a topic's channel.
GARBAGE = (b"", b"\x01\x00\x00\x00\x00\x00\xff", b"\x07garbage")


async def survives_garbage_and_a_failing_sink(
    a: Broker, b: Broker, publish_raw: Callable[[bytes], Awaitable[Any]]
) -> None:
    """``b`` (started here with a sink that fails on ``boom``) joins a topic; :data:`GARBAGE`
    goes to the topic's channel through ``publish_raw``, then ``a`` publishes ``boom`` and
    ``fine``: both reach ``b``'s sink, the garbage is counted, the broker stays up."""
    sink = RecordingSink(fails_on="boom")
    await a.start(RecordingSink())
    await b.start(sink)
    try:
        b.topic_added("realtime:bad")
        await b.ready("realtime:bad")
        for garbage in GARBAGE:
            await publish_raw(garbage)
        a.publish(Envelope("realtime:bad", "boom", {}))
        a.publish(Envelope("realtime:bad", "fine", {}))

        async def past_them() -> bool:
            return sink.events == ["boom", "fine"]

        await eventually(past_them)
        status = b.status()
        assert (status.malformed, status.received, status.up) == (len(GARBAGE), 2, True)
    finally:
        await a.stop()
        await b.stop()


class RecordingSink:
    """A sink that records what it is handed; delivering a ``fails_on`` envelope raises (a bug
    in the hub)."""

    def __init__(self, fails_on: str | None = None) -> None:
        self.events: list[str] = []
        self._fails_on = fails_on

    def deliver(self, envelope: Envelope) -> None:
        self.events.append(envelope.event)
        if envelope.event == self._fails_on:
            raise RuntimeError("a bug in the hub")

    def control(self, envelope: Envelope) -> None:
        pass

    def connected(self) -> None:
        pass
