"""nginx in front of two servers on one Redis, running the documented configuration.

``docs/deployment/nginx.conf`` is rendered with loopback addresses, free ports, a throwaway
certificate and paths in a temporary directory (nothing else changes), and a real ``nginx`` runs
it in the foreground. Through it: WebSocket clients (wss://, the documented server name by SNI and
Host) land on both upstreams and a broadcast reaches all of them; ``/healthz``, ``/readyz`` and
an API call work, with ``supabaseUrl`` taken from the proxy's own X-Forwarded-* headers (never
the client's); other names are refused; and when one upstream stops, its clients reconnect
through nginx to the other and receive what is sent after.

Without ``nginx`` on PATH the test is skipped, except under CI (``CI`` set), where that fails.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from realtime_messaging.protocol.frames import Vsn
from tests.conftest import RestartableServer, RunningServer, Seed
from tests.server.wsclient import RawSocket

from .conftest import WAIT, RedisServer, _free_port, eventually, metric

CONF = Path(__file__).resolve().parents[2] / "docs" / "deployment" / "nginx.conf"
#: The server name of the documented configuration.
NAME = "chat.example.com"
#: What the upstreams would tell clients without the proxy's headers.
INTERNAL_URL = "http://rtm-internal.invalid:4000"
TOPIC = "lb-room"
CLIENTS = 6


def _binary(name: str, package: str) -> str:
    binary = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None
    )
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not on PATH (CI installs the {package} package)")
        pytest.skip(f"{name} is not on PATH (apt-get install {package})")
    return binary


def render(
    text: str,
    *,
    upstreams: list[int],
    http_port: int,
    https_port: int,
    workdir: Path,
    cert: Path,
    key: Path,
) -> str:
    """The documented configuration with this machine's addresses, ports and paths.

    Each replacement must match as often as the documentation has it, so a change to the file
    that this rendering no longer covers fails here instead of testing something else.
    """
    user = pwd.getpwuid(os.getuid()).pw_name

    def sub(pattern: str, repl: Any, count: int) -> None:
        nonlocal text
        text, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
        assert n == count, f"{pattern!r} matched {n} times in {CONF}, expected {count}"

    def servers(match: re.Match[str]) -> str:
        indent, params = match["indent"], match["params"]
        return "".join(f"{indent}server 127.0.0.1:{port}{params};\n" for port in upstreams)

    first = True

    def upstream_line(match: re.Match[str]) -> str:
        nonlocal first
        out, first = (servers(match) if first else ""), False
        return out

    # Workers run as the user running the test (the documented user may not exist, nor be
    # able to read the temporary directory).
    sub(r"^user \S+;$", f"user {user};", 1)
    sub(r"^error_log \S+ (\w+);$", rf"error_log {workdir}/error.log \1;", 1)
    sub(r"^pid \S+;$", f"pid {workdir}/nginx.pid;", 1)
    sub(r"^(\s*)access_log /\S+ (\w+);$", rf"\1access_log {workdir}/access.log \2;", 1)
    sub(
        r"^(?P<indent>\s*)server 10\.\d+\.\d+\.\d+:4000(?P<params>[^;\n]*);\n",
        upstream_line,
        3,
    )
    sub(r"^(\s*)listen 443 ssl", rf"\g<1>listen 127.0.0.1:{https_port} ssl", 2)
    sub(r"^(\s*)listen 80\b", rf"\g<1>listen 127.0.0.1:{http_port}", 2)
    sub(r"^(\s*)ssl_certificate /\S+;$", rf"\1ssl_certificate {cert};", 1)
    sub(r"^(\s*)ssl_certificate_key /\S+;$", rf"\1ssl_certificate_key {key};", 1)
    # Temporary files in the work directory (Debian's nginx defaults to /var/lib/nginx).
    temp = "".join(
        f"    {kind}_temp_path {workdir}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    sub(r"^http \{\n", "http {\n" + temp, 1)
    return text


class Nginx:
    """``nginx`` in the foreground (``daemon off``) on a rendered configuration; stopped by pid."""

    def __init__(self, binary: str, workdir: Path, conf: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.conf = conf
        self.proc: asyncio.subprocess.Process | None = None

    def _args(self) -> list[str]:
        return ["-p", str(self.workdir), "-c", str(self.conf), "-e", str(self.error_log)]

    @property
    def error_log(self) -> Path:
        return self.workdir / "error.log"

    async def start(self, https_port: int) -> None:
        checked = await asyncio.create_subprocess_exec(
            self.binary,
            "-t",
            "-q",
            *self._args(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(checked.communicate(), 30)
        assert checked.returncode == 0, f"nginx -t refused the rendered configuration: {out!r}"
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            *self._args(),
            "-g",
            "daemon off;",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", https_port)
                writer.close()
                with suppress(OSError):
                    await writer.wait_closed()
                return
            except OSError:
                if self.proc.returncode is not None or loop.time() > deadline:
                    raise AssertionError(f"nginx did not start: {self.log_tail()}") from None
                await asyncio.sleep(0.02)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no error log)"

    async def stop(self) -> None:
        """SIGTERM to the master (fast shutdown: it stops its workers), SIGKILL to it and its
        workers if it has not exited within 10 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            for pid in [proc.pid, *workers]:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await proc.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def _openssl_cert(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for :data:`NAME` (it is also the client's CA)."""
    openssl = _binary("openssl", "openssl")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    made = await asyncio.create_subprocess_exec(
        openssl,
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={NAME}"),
        *("-addext", f"subjectAltName=DNS:{NAME}"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(made.wait(), 30) == 0
    return cert, key


class Balancer:
    """How a client on the internet reaches the servers: https/wss to nginx, by :data:`NAME`."""

    def __init__(self, https_port: int, http_port: int, cafile: Path) -> None:
        self.base = f"https://127.0.0.1:{https_port}"
        self.plain = f"http://127.0.0.1:{http_port}"
        self.tls = ssl.create_default_context(cafile=str(cafile))

    def request(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        *,
        host: str = NAME,
        **kwargs: Any,
    ) -> Any:
        headers = {"Host": host, **kwargs.pop("headers", {})}
        return session.request(
            method,
            self.base + path,
            ssl=self.tls,
            server_hostname=NAME,
            headers=headers,
            allow_redirects=False,
            **kwargs,
        )

    async def socket(self, apikey: str) -> RawSocket:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                self.base.replace("https://", "wss://") + "/realtime/v1/websocket",
                params={"apikey": apikey, "vsn": Vsn.V2.value},
                ssl=self.tls,
                server_hostname=NAME,
                headers={"Host": NAME},
                autoping=True,
            )
        except BaseException:
            await session.close()
            raise
        return RawSocket(session, ws, Vsn.V2)


class Client:
    """A client as an application writes one: connected through the balancer, joined to
    :data:`TOPIC`; when the server closes the socket it connects and joins again (every 50 ms,
    for at most :data:`WAIT` seconds). Keeps every broadcast it receives."""

    def __init__(self, lb: Balancer, apikey: str) -> None:
        self.lb = lb
        self.apikey = apikey
        self.sock: RawSocket | None = None
        self.joined = asyncio.Event()
        self.connects = 0
        self.close_codes: list[int | None] = []
        self.received: list[Any] = []
        self.task: asyncio.Task[None] | None = None
        self.error: Exception | None = None

    async def start(self) -> None:
        await self._connect()
        self.task = asyncio.create_task(self._run())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            sock: RawSocket | None = None
            try:
                sock = await self.lb.socket(self.apikey)
                reply = await sock.join(TOPIC, {"broadcast": {"self": False}})
                assert reply["status"] == "ok", reply
            except (aiohttp.ClientError, ConnectionError, TimeoutError, OSError):
                if sock is not None:
                    await sock.close()
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)
                continue
            self.sock = sock
            self.connects += 1
            self.joined.set()
            return

    async def _run(self) -> None:
        try:
            while True:
                assert self.sock is not None
                try:
                    msg = await self.sock.recv(timeout=None)  # type: ignore[arg-type]
                except ConnectionError:
                    self.joined.clear()
                    self.close_codes.append(self.sock.ws.close_code)
                    await self.sock.close()
                    await self._connect()
                    continue
                if msg.get("event") == "broadcast":
                    self.received.append(msg["payload"]["payload"]["n"])
        except Exception as exc:  # kept for the test to report
            self.error = exc

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with suppress(asyncio.CancelledError):
                await self.task
        if self.sock is not None:
            await self.sock.close()


@asynccontextmanager
async def balanced(
    tmp_path: Path, database_url: str, redis_url: str
) -> AsyncIterator[tuple[Balancer, list[RestartableServer], list[RunningServer]]]:
    """Two servers on one Redis behind nginx running the documented configuration."""
    nginx_binary = _binary("nginx", "nginx")
    cert, key = await _openssl_cert(tmp_path)
    upstreams = [
        RestartableServer(
            database_url,
            redis_url=redis_url,
            public_url=INTERNAL_URL,
            trust_proxy_headers=True,
        )
        for _ in range(2)
    ]
    nginx: Nginx | None = None
    try:
        running = [await server.start() for server in upstreams]
        https_port, http_port = _free_port(), _free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            render(
                CONF.read_text(),
                upstreams=[server.port for server in upstreams],
                http_port=http_port,
                https_port=https_port,
                workdir=tmp_path,
                cert=cert,
                key=key,
            )
        )
        nginx = Nginx(nginx_binary, tmp_path, conf)
        await nginx.start(https_port)
        yield Balancer(https_port, http_port, cert), upstreams, running
    finally:
        if nginx is not None:
            await nginx.stop()
        for server in upstreams:
            await server.stop()


async def _connections(http: aiohttp.ClientSession, server: RunningServer) -> int:
    return int(await metric(http, server, "rtm_active_connections"))


async def _rest_broadcast(
    http: aiohttp.ClientSession, lb: Balancer, service_key: str, n: int
) -> None:
    body = {"messages": [{"topic": TOPIC, "event": "n", "payload": {"n": n}}]}
    async with lb.request(
        http,
        "POST",
        "/realtime/v1/api/broadcast",
        json=body,
        headers={"Authorization": f"Bearer {service_key}"},
    ) as response:
        assert response.status == 202, await response.text()


async def test_nginx_spreads_websockets_and_fails_over(
    tmp_path: Path, redis_server: RedisServer, database_url: str, seed: Seed
) -> None:
    clients: list[Client] = []
    async with (
        balanced(tmp_path, database_url, redis_server.url) as (lb, upstreams, (a, b)),
        aiohttp.ClientSession() as http,
    ):
        try:
            # Probes and an API call through nginx.
            async with lb.request(http, "GET", "/healthz") as response:
                assert response.status == 200
            async with lb.request(http, "GET", "/readyz") as response:
                assert response.status == 200
                assert await response.json() == {"status": "ok", "broker": "up"}
            _, portal = await seed.customer()
            async with lb.request(
                http,
                "POST",
                "/api/messages/realtime/subscribe",
                json={},
                # What a client says about itself is replaced by what nginx knows.
                headers={
                    "Authorization": f"Bearer {portal}",
                    "X-Forwarded-Host": "evil.example",
                    "X-Forwarded-Proto": "http",
                },
            ) as response:
                reply = await response.json()
                assert response.status == 200, reply
                assert reply["data"]["supabaseUrl"] == f"https://{NAME}"
            # Only our own name is served: another Host is refused, plain HTTP redirected.
            async with lb.request(http, "GET", "/readyz", host="evil.example") as response:
                assert response.status == 421
            async with http.get(
                lb.plain + "/readyz", headers={"Host": NAME}, allow_redirects=False
            ) as response:
                assert response.status == 308
                assert response.headers["Location"] == f"https://{NAME}/readyz"

            # WebSockets land on both upstreams (least_conn), and a broadcast from one client
            # reaches every other, across the two processes.
            for _ in range(CLIENTS):
                client = Client(lb, a.anon_key)
                clients.append(client)
                await client.start()

            async def spread() -> bool:
                counts = [await _connections(http, s) for s in (a, b)]
                return sum(counts) == CLIENTS and min(counts) > 0

            await eventually(spread)
            on_a = await _connections(http, a)
            first = clients[0]
            assert first.sock is not None
            push = {"type": "broadcast", "event": "n", "payload": {"n": 1}}
            await first.sock.send(f"realtime:{TOPIC}", "broadcast", push, None, "1")

            async def everyone_else_got_it() -> bool:
                return all(c.received == [1] for c in clients[1:])

            await eventually(everyone_else_got_it)
            assert first.received == []

            # One upstream stops (drains): its clients are closed with 1012 "service restart"
            # through nginx (never 1000, after which phoenix.js would not reconnect), reconnect
            # through nginx to the other upstream, and receive what is sent after.
            await upstreams[0].stop()

            async def all_on_b() -> bool:
                return await _connections(http, b) == CLIENTS and all(
                    c.joined.is_set() for c in clients
                )

            await eventually(all_on_b)
            moved = [c for c in clients if c.connects == 2]
            assert len(moved) == on_a, [c.connects for c in clients]
            assert [c.close_codes for c in moved] == [[1012]] * on_a
            async with lb.request(http, "GET", "/readyz") as response:
                assert response.status == 200
            await _rest_broadcast(http, lb, a.service_key, 2)

            async def everyone_got_the_later_one() -> bool:
                return all(c.received[-1:] == [2] for c in clients)

            await eventually(everyone_got_the_later_one)
            assert [c.error for c in clients] == [None] * CLIENTS
        finally:
            for client in clients:
                await client.close()
