"""What the benchmarks share: the server processes they start, CPU pinning and accounting, data
set-up, and the picows client plumbing.

Every benchmark runs the server under test pinned to ``SERVER_CPU`` and itself on ``CLIENT_CPU``,
talks to 127.0.0.1 only, and must leave nothing running: each process started here is recorded in
``STARTED`` and stopped by its pid (never by name) by :func:`stop_started`, which the scripts call
on every way out.

The scripts import this file as ``common`` (they put ``benchmarks/`` on ``sys.path``), so that
``python benchmarks/<name>/run.py`` keeps working without installing anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import asyncpg
import psutil
import uvloop
from picows import WSListener, WSMsgType, WSTransport, ws_connect

SERVER_CPU = 0
CLIENT_CPU = 1
HEARTBEAT_S = 25.0
NOISY_PCT = 10  # other processes' share of a pinned CPU above which a run counts as disturbed

# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int | None) -> None:
    """Pin the calling process (a ``preexec_fn``: the child) to ``cpu``."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def default_rtm_cmd() -> list[str]:
    """The ``rtm`` of this virtualenv, else one on PATH, else the module itself."""
    beside = Path(sys.executable).parent / "rtm"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("rtm")
    if found:
        return [found]
    return [sys.executable, "-c", "from realtime_messaging.cli import main; main()"]


def raise_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_load_process() -> bool:
    """Move this process to ``CLIENT_CPU``; False (and a note) on a machine with fewer CPUs."""
    cpus = os.sched_getaffinity(0)
    pinned = SERVER_CPU in cpus and CLIENT_CPU in cpus
    if pinned:
        os.sched_setaffinity(0, {CLIENT_CPU})
    else:
        print("fewer than 2 CPUs: running unpinned", file=sys.stderr)
    return pinned


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that the ``finally`` blocks stop what was started."""
    signal.signal(signal.SIGTERM, _terminate)


async def accepting(port: int, proc: subprocess.Popen[bytes] | None = None) -> int:
    """``time.monotonic_ns()`` when 127.0.0.1:``port`` first accepts a TCP connection, probed
    every 5 ms; RuntimeError if ``proc`` (the server that should listen) exits first."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited ({proc.returncode})") from None
            await asyncio.sleep(0.005)
            continue
        at = time.monotonic_ns()
        writer.close()
        return at


async def http_ok(url: str) -> int:
    """``time.monotonic_ns()`` when a GET of ``url`` first answers 200, tried every 5 ms, each
    time on a new connection (a readiness probe, as a load balancer's)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return time.monotonic_ns()
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.005)


class Stoppable(Protocol):
    def stop(self) -> None: ...


#: Everything started by this run, stopped again (newest first) by :func:`stop_started`.
STARTED: list[Stoppable] = []


def stop_started() -> None:
    while STARTED:
        STARTED.pop().stop()


def run_pinned(
    plan: object,
    amain: Callable[[bool], Coroutine[Any, Any, dict[str, Any]]],
    *,
    fds: tuple[int, int, str],
    pg_cpu: str,
    time_limit: float,
) -> dict[str, Any] | int:
    """Raise the fd limit, pin this process to the load CPU, print the plan, run
    ``amain(pinned)`` under uvloop within ``time_limit`` and stop whatever it started.

    ``fds`` is (wanted, needed, what the descriptors are for). An int result is an exit code.
    """
    wanted, needed, what = fds
    limit = raise_fd_limit(wanted)
    if limit < needed:
        print(f"fd limit {limit} is too low for {what}", file=sys.stderr)
        return 2
    pin = pin_load_process()
    print(
        f"plan: {plan}; fd limit {limit}; pinned rtm->CPU{SERVER_CPU}, "
        f"load->CPU{CLIENT_CPU}: {pin}; postgres: {pg_cpu}",
        flush=True,
    )
    exit_on_sigterm()
    try:
        result: dict[str, Any] = uvloop.run(asyncio.wait_for(amain(pin), time_limit))
    except TimeoutError:
        print(f"aborted: the run took more than {time_limit:.0f} s", file=sys.stderr)
        return 1
    finally:
        stop_started()
    return result


def print_log_problems(problems: Sequence[str], prefix: str = "") -> None:
    if problems:
        print(f"{prefix}server log problems (first {len(problems)}):")
        for line in problems:
            print(f"    {line}")


def postmaster_of(data_dir: Path) -> psutil.Process | None:
    """The embedded PostgreSQL's postmaster of ``data_dir``, checked against its command line."""
    try:
        pid = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        proc = psutil.Process(pid)
        if str(data_dir) not in " ".join(proc.cmdline()):
            return None
        return proc
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def stop_postmaster(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL of ``data_dir`` by its pid file (fast shutdown on SIGTERM)."""
    proc = postmaster_of(data_dir)
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except psutil.TimeoutExpired:
        proc.kill()


class ServerProcess:
    """One server under test: started pinned to ``cpu`` in its own session, stopped by pid.

    Subclasses say what to run (:meth:`command`) and when it is up (:meth:`ready`, given its
    standard output so far). Standard output and error go to ``<workdir>/<name>.out|.err``.
    """

    def __init__(self, name: str, workdir: Path, cpu: int | None, port: int | None = None):
        self.name = name
        self.workdir = workdir
        self.cpu = cpu
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def ready(self, output: str) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 120.0) -> None:
        cmd, env = self.command()
        cpu = self.cpu
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=lambda: pin(cpu),
            )
        STARTED.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready(self.out.read_text(errors="replace")):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}): {self.stderr_tail()}"
                )
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s: {self.stderr_tail()}")

    def stderr_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.err.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def problems(self) -> list[str]:
        """Server log lines that look like trouble (tracebacks, errors, warnings)."""
        try:
            lines = self.err.read_text(errors="replace").splitlines()
        except OSError:
            return []
        keys = ("Traceback", "Error", "ERROR", "WARNING", "Exception", "slow consumer")
        return [line for line in lines if any(k in line for k in keys)]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s; idempotent."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class RtmServer(ServerProcess):
    """``rtm serve`` with a throwaway JWT secret and data directory.

    Without ``database_url`` it runs the embedded PostgreSQL of ``<workdir>/rtm-data`` itself
    (and stops it on SIGTERM; :meth:`stop` makes sure by its pid file). With one, the database is
    someone else's and outlives the process, which a restart on the same port relies on.
    """

    def __init__(
        self,
        workdir: Path,
        cpu: int | None,
        rtm_cmd: list[str],
        jwt_secret: str,
        *,
        port: int | None = None,
        database_url: str | None = None,
        name: str = "rtm",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, workdir, cpu, port)
        self.rtm_cmd = rtm_cmd
        self.jwt_secret = jwt_secret
        self.database_url = database_url
        self.extra_env = dict(extra_env or {})
        self.data_dir = workdir / "rtm-data"
        self.anon_key = ""
        self.service_key = ""
        self.db_url = ""

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, apikey: str) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/v1/websocket?apikey={apikey}&vsn=2.0.0"

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ, RTM_JWT_SECRET=self.jwt_secret, RTM_DATA_DIR=str(self.data_dir))
        env.pop("RTM_DATABASE_URL", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # byte-compiled, as every deployment runs
        if self.database_url:
            env["RTM_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return [*self.rtm_cmd, "serve", "--port", str(self.port)], env

    def ready(self, output: str) -> bool:
        anon = re.search(r"anon key: (\S+)", output)
        service = re.search(r"service_role key: (\S+)", output)
        db = re.search(r"DB URL: (\S+)", output)
        if not (anon and service and db):
            return False
        self.anon_key, self.service_key, self.db_url = anon[1], service[1], db[1]
        return True

    def postmaster(self) -> psutil.Process | None:
        """The embedded PostgreSQL's postmaster, if it is the one of this server's data dir."""
        return postmaster_of(self.data_dir)

    def stop(self) -> None:
        super().stop()
        if not self.database_url:
            # rtm stops its PostgreSQL on SIGTERM; if that failed, stop it by its pid file
            stop_postmaster(self.data_dir)


class EmbeddedDatabase:
    """The embedded PostgreSQL of ``data_dir``, started by ``rtm db-url`` and left running.

    Lets ``rtm serve`` be restarted without its database (as with an external PostgreSQL);
    :meth:`stop` stops the postmaster by its pid file.
    """

    def __init__(self, data_dir: Path, cpu: int | None, rtm_cmd: list[str]) -> None:
        self.data_dir = data_dir
        self.cpu = cpu
        self.rtm_cmd = rtm_cmd
        self.url = ""

    def start(self, timeout: float = 120.0) -> str:
        env = dict(os.environ, RTM_DATA_DIR=str(self.data_dir))
        env.pop("RTM_DATABASE_URL", None)
        cpu = self.cpu
        STARTED.append(self)
        done = subprocess.run(
            [*self.rtm_cmd, "db-url"],
            env=env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
            preexec_fn=lambda: pin(cpu),
        )
        if done.returncode != 0:
            raise RuntimeError(f"rtm db-url failed: {done.stderr.decode(errors='replace')}")
        self.url = done.stdout.decode().strip().splitlines()[-1]
        return self.url

    def postmaster(self) -> psutil.Process | None:
        return postmaster_of(self.data_dir)

    def stop(self) -> None:
        stop_postmaster(self.data_dir)


def proc_cpu(proc: psutil.Process) -> float:
    """User + system CPU seconds of ``proc`` (0 once it is gone)."""
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


def postgres_procs(postmaster: psutil.Process | None) -> list[psutil.Process]:
    if postmaster is None:
        return []
    try:
        return [postmaster, *postmaster.children(recursive=True)]
    except psutil.Error:
        return [postmaster]


def pin_processes(procs: Iterable[psutil.Process], cpus: set[int]) -> int:
    """Move ``procs`` to ``cpus`` (a postmaster's later backends inherit it); how many moved."""
    moved = 0
    for proc in procs:
        try:
            proc.cpu_affinity(sorted(cpus))
            moved += 1
        except psutil.Error:
            pass
    return moved


# -- CPU accounting -----------------------------------------------------------------------


def cpu_times() -> list[Any]:
    return psutil.cpu_times(percpu=True)  # type: ignore[no-any-return]


def busy_pct(
    before: list[Any], after: list[Any], parts: Mapping[str, Sequence[str]] | None = None
) -> dict[int, dict[str, float]]:
    """Per pinned CPU over an interval: busy % (all but idle and iowait), plus the share of each
    of ``parts``, a name for a sum of ``cpu_times`` fields (``{"irq": ("irq", "softirq")}``).

    On loopback the TCP receive path runs in softirq, charged to no process: that is why the
    benchmarks show it.
    """
    out = {}
    for cpu in (SERVER_CPU, CLIENT_CPU):
        if cpu >= len(after):
            continue
        a, b = before[cpu], after[cpu]
        total = sum(b) - sum(a)
        if total <= 0:
            continue
        idle = (b.idle - a.idle) + (getattr(b, "iowait", 0) - getattr(a, "iowait", 0))
        out[cpu] = {"busy": round(100 * (total - idle) / total, 1)}
        for name, fields in (parts or {}).items():
            delta = sum(getattr(b, f, 0) - getattr(a, f, 0) for f in fields)
            out[cpu][name] = round(100 * delta / total, 1)
    return out


async def wait_quiet(limit_s: float, threshold: float = 10.0) -> float:
    """Wait (at most ``limit_s``) until both pinned CPUs are idle; return the last busy %."""
    deadline = time.monotonic() + limit_s
    while True:
        before = cpu_times()
        await asyncio.sleep(1.0)
        worst = max((b["busy"] for b in busy_pct(before, cpu_times()).values()), default=0.0)
        if worst <= threshold or time.monotonic() >= deadline:
            return worst
        print(f"  machine busy ({worst:.0f}% on a pinned CPU): waiting", flush=True)


def listen_overflows() -> int:
    """TcpExt ListenOverflows of this machine (0 where /proc/net/netstat is unavailable)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(row.get("ListenOverflows", 0))
    return 0


def pct_ms(values: Sequence[float], q: float, digits: int = 2) -> float:
    """The ``q`` quantile of ``values`` (seconds) in ms, by nearest rank from below."""
    ordered = sorted(values)
    return round(1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)


# -- profiling ----------------------------------------------------------------------------


def start_py_spy(
    pid: int, out: Path, *, duration: int, threads: bool
) -> subprocess.Popen[bytes] | None:
    """py-spy recording ``pid`` into ``out`` (raw, 100 Hz); None when py-spy is missing."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy not found; no profile", flush=True)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "-p", str(pid), "-d", str(duration), "-r", "100"]
    cmd += ["-f", "raw", "-o", str(out)]
    if threads:
        cmd.append("--threads")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    """py-spy writes its profile when interrupted."""
    if spy is not None and spy.poll() is None:
        spy.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(spy.wait, 30)
        except subprocess.TimeoutExpired:
            spy.kill()


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares from py-spy's raw (collapsed) output, by function."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    # an idle executor thread blocked on its queue, which py-spy does not always see as idle
    IDLE_FRAMES = ("_worker (concurrent/futures/thread.py)",)  # noqa: N806
    try:
        text = path.read_text()
    except OSError:
        return f"{path.name}: no profile"
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("thread ", "process "))]
        if not frames or frames[-1].startswith(IDLE_FRAMES):
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    if not total:
        return f"{path.name}: no samples"
    out = [
        f"{path.name}: {total} samples (idle excluded; native code, such as asyncpg's protocol "
        "and socket writes, counts as self time of the Python frame that called it; self time "
        "of Runner.run is uvloop's own I/O polling)",
        "  self:",
    ]
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out.append("  inclusive (realtime_messaging, asyncpg, aiohttp):")
    keys = ("realtime_messaging", "asyncpg", "aiohttp")
    ours = [(f, n) for f, n in incl.most_common() if any(k in f for k in keys)]
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in ours[:top]]
    return "\n".join(out)


# -- data ---------------------------------------------------------------------------------

#: Tables to ANALYZE after a bulk set-up (see the change-feed findings in README.md).
ANALYZE_TABLES = (
    "public.customers",
    "public.conversations",
    "public.portal_tokens",
    "public.users",
    "rtm.change_queue",
    "rtm.change_log",
)


@dataclass
class Seeded:
    """What :func:`seed` made, by index: customer k owns conversation k and portal token k."""

    customer_ids: list[Any]  # asyncpg UUIDs
    conversation_ids: list[Any]
    portal_tokens: list[str]
    staff_ids: list[Any]
    staff_tokens: list[str]
    assigned: list[int]  # the staff index conversation k is assigned to; -1: unassigned


async def seed(
    db_url: str,
    http_url: str,
    service_key: str,
    *,
    customers: int,
    staff: int,
    assign: bool = False,
    analyze: bool = True,
) -> Seeded:
    """Customers with one conversation and one portal token each, and staff users with JWTs.

    Plain SQL for the bulk (a portal token is stored as its SHA-256, as
    ``POST /api/admin/customers/{id}/portal-tokens`` stores it); staff JWTs come from
    ``POST /api/admin/users/{id}/tokens`` with the service key. ``assign``: conversation k goes
    to staff user k mod ``staff``.
    """
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            users = await conn.fetch(
                "INSERT INTO public.users (name, email) "
                "SELECT 'bench agent ' || g, 'a' || g || '-' || $2 || '@bench.invalid' "
                "FROM generate_series(1, $1) AS g RETURNING id",
                staff,
                secrets.token_hex(4),
            )
            staff_ids = [r["id"] for r in users]
            rows = await conn.fetch(
                "INSERT INTO public.customers (name, email) "
                "SELECT 'bench customer ' || g, 'c' || g || '-' || $2 || '@bench.invalid' "
                "FROM generate_series(1, $1) AS g RETURNING id",
                customers,
                secrets.token_hex(4),
            )
            customer_ids = [r["id"] for r in rows]
            assigned = [k % staff if assign and staff else -1 for k in range(customers)]
            agents = [staff_ids[a] if a >= 0 else None for a in assigned]
            convs = await conn.fetch(
                "INSERT INTO public.conversations (customer_id, subject, assigned_user_id) "
                "SELECT c, 'benchmark', a FROM unnest($1::uuid[], $2::uuid[]) AS t(c, a) "
                "RETURNING id, customer_id",
                customer_ids,
                agents,
            )
            by_customer = {r["customer_id"]: r["id"] for r in convs}
            conversation_ids = [by_customer[c] for c in customer_ids]
            tokens = ["pt_" + secrets.token_urlsafe(32) for _ in customer_ids]
            await conn.execute(
                "INSERT INTO public.portal_tokens (token_hash, customer_id, expires_at) "
                "SELECT h, c, now() + interval '1 day' "
                "FROM unnest($1::text[], $2::uuid[]) AS t(h, c)",
                [hashlib.sha256(t.encode()).hexdigest() for t in tokens],
                customer_ids,
            )
        if analyze:
            # What autovacuum would do within a minute or so. Until then a fresh database has
            # no statistics, and the feed's cached plans scan all of rtm.change_log on every
            # read (see the README).
            await asyncio.sleep(1.0)  # let the feed stamp the set-up's changes first
            for table in ANALYZE_TABLES:
                await conn.execute(f"ANALYZE {table}")
    finally:
        await conn.close()
    staff_tokens = []
    headers = {"Authorization": f"Bearer {service_key}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for user in staff_ids:
            url = f"{http_url}/api/admin/users/{user}/tokens"
            async with http.post(url, json={"expiresInSeconds": 7200}) as resp:
                body = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"staff token: HTTP {resp.status} {body}")
                staff_tokens.append(token_of(body))
    return Seeded(customer_ids, conversation_ids, tokens, staff_ids, staff_tokens, assigned)


def token_of(body: Any) -> str:
    """The ``token`` of an API envelope (or of a bare object)."""
    data = body.get("data", body) if isinstance(body, dict) else body
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str):
        raise RuntimeError(f"no token in {body}")
    return token


# -- picows clients -----------------------------------------------------------------------


class RawSocket(Protocol):
    """A picows listener the helpers below can heartbeat and disconnect."""

    transport: WSTransport | None
    last_sent: float


async def connect_ws(
    listener: WSListener, url: str, errors: Counter[str], name: str, read_buffer: int
) -> None:
    """Connect ``listener`` to ``url``: 4 attempts, 0.5 s, 1 s, 1.5 s apart; errors counted."""
    for attempt in range(4):
        try:
            await ws_connect(
                lambda: listener,
                url,
                websocket_handshake_timeout=60,
                read_buffer_init_size=read_buffer,
            )
            return
        except Exception as exc:
            errors[type(exc).__name__] += 1
            if attempt == 3:
                raise RuntimeError(f"{name} cannot connect: {exc!r}") from exc
            await asyncio.sleep(0.5 * (attempt + 1))


async def heartbeats(sockets: Sequence[RawSocket]) -> None:
    """A Phoenix heartbeat from every socket at least every 25 s (rtm closes idle sockets).

    A twenty-fifth of the sockets is looked at each second, so the beats are spread out.
    """
    frame = b'[null,"hb","phoenix","heartbeat",{}]'
    tick = 0
    while True:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        for sock in sockets[tick % 25 :: 25]:
            if sock.transport is not None and now - sock.last_sent >= HEARTBEAT_S - 2:
                sock.transport.send(WSMsgType.TEXT, frame)
                sock.last_sent = now
        tick += 1


def disconnect_all(sockets: Iterable[RawSocket]) -> None:
    for sock in sockets:
        if sock.transport is not None:
            sock.transport.disconnect(graceful=False)


def close_reason(transport: WSTransport) -> str:
    """``"<code> <reason>"`` of the close frame the server sent, or ``"no close frame"``."""
    handshake = transport.close_handshake
    info = handshake.recv if handshake is not None else None
    return f"{info.code} {info.reason}" if info is not None else "no close frame"
