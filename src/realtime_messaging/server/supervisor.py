"""``rtm serve --workers N``: N server processes on one port, kept running by this one.

The supervisor (the ``rtm serve`` process) does what must happen once: it resolves the
database (starting the embedded one, which it keeps for the workers), migrates, loads the JWT
secret, reserves the port and prints the banner. Each worker is ``python -m realtime_messaging
serve`` with the database, secret, broker and port resolved in its environment; it binds the
port itself with SO_REUSEPORT, so the kernel spreads new connections over the workers. Every
response of a worker names it in an ``X-Rtm-Worker`` header (its pid).

A worker and its supervisor share a socket pair, the *link*: the worker writes ``ready`` on it
once it serves, and reads its end of file as "the supervisor is gone" (even SIGKILLed), upon
which it drains and exits, so no worker outlives its supervisor.

Signals to the supervisor: SIGTERM or SIGINT forwards SIGTERM to every worker, waits up to the
graceful timeout, kills what is left and exits 0; SIGHUP replaces the workers one at a time
(the new one serves before the old one drains). A worker that exits on its own is restarted
after a delay that doubles from 0.5 s to 10 s, back to 0.5 s once one has run for 30 s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..config import Settings
from ..exceptions import RealtimeMessagingError
from ..keys import load_or_create_secret
from ..store.database import Database
from .listen import banner, base_url, reserve_port

log = logging.getLogger(__name__)

#: What a worker writes on its link once it serves.
READY = b"ready\n"
#: A worker not serving this long after it started is killed (and restarted).
READY_TIMEOUT = 60.0
#: Restart delays: the first, the longest, and how long a worker must have run for the next
#: restart to start again from the first.
BACKOFF_MIN = 0.5
BACKOFF_MAX = 10.0
BACKOFF_RESET = 30.0


def exit_status(returncode: int) -> str:
    """``code 1`` or ``signal SIGKILL``, from a subprocess return code."""
    if returncode >= 0:
        return f"code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


@dataclass(eq=False)
class Worker:
    """One worker process, with the supervisor's end of its link."""

    slot: int
    proc: asyncio.subprocess.Process
    link: socket.socket
    started_at: float
    #: Stopped on purpose (shutdown, rolling restart): its exit is no crash.
    retiring: bool = False
    #: Whether it said it serves (False: it exited or hung first); set by the supervisor.
    ready: asyncio.Task[bool] = field(init=False)
    #: Done once it has exited and been handled.
    watch: asyncio.Task[None] = field(init=False)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def signal(self, sig: int) -> None:
        if self.alive:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:  # exited a moment ago
                pass


class Supervisor:
    """Keeps ``count`` workers running, each started with ``command`` and ``env`` plus the
    ``--worker-link FD`` option."""

    def __init__(
        self,
        count: int,
        command: Sequence[str],
        env: Mapping[str, str],
        graceful_timeout: float,
    ) -> None:
        self.count = count
        self.command = list(command)
        self.env = dict(env)
        self.graceful_timeout = graceful_timeout
        #: The worker serving each slot (the one kept running there).
        self.slots: list[Worker | None] = [None] * count
        self._backoff = [BACKOFF_MIN] * count
        #: Every worker started and not yet reaped, slotted or not.
        self._workers: set[Worker] = set()
        self._restarts: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._stop = asyncio.Event()
        self._hup = asyncio.Event()

    def stop(self) -> None:
        """Stop the workers and return from :meth:`run`, as SIGTERM does."""
        self._stop.set()

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.slots if w is not None and w.alive]

    async def run(self, started: Callable[[], None]) -> None:
        """Start the workers, call ``started`` once all serve, and supervise them until SIGTERM
        or SIGINT; then stop them all. RealtimeMessagingError when a worker fails to start."""
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._hup.set)
        try:
            if not await self._unless_stopped(self._start_all()):
                return
            started()
            while not self._stop.is_set():
                hup = asyncio.create_task(self._hup.wait())
                stop = asyncio.create_task(self._stop.wait())
                await asyncio.wait((hup, stop), return_when=asyncio.FIRST_COMPLETED)
                hup.cancel()
                stop.cancel()
                if self._hup.is_set() and not self._stop.is_set():
                    self._hup.clear()
                    await self._unless_stopped(self._rolling_restart())
        finally:
            await self._stop_all()
            for sig in handled:
                loop.remove_signal_handler(sig)

    async def _unless_stopped(self, work: Awaitable[None]) -> bool:
        """Run ``work`` unless SIGTERM/SIGINT comes first (then cancel it); True if it ran."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return False
        task.result()
        return True

    # -- starting and watching ----------------------------------------------------------

    async def _spawn(self, slot: int) -> Worker:
        """Start a worker for ``slot`` (not yet put in it)."""
        mine, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                "--worker-link",
                str(theirs.fileno()),
                env=self.env,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        mine.setblocking(False)
        loop = asyncio.get_running_loop()
        worker = Worker(slot, proc, mine, loop.time())
        worker.ready = asyncio.create_task(self._ready(worker))
        worker.watch = asyncio.create_task(self._watch(worker))
        self._workers.add(worker)
        return worker

    async def _ready(self, worker: Worker) -> bool:
        """Wait for the worker's ``ready``; kill it if it does not come in time."""
        loop = asyncio.get_running_loop()
        received = b""
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                while not received.endswith(b"\n"):
                    chunk = await loop.sock_recv(worker.link, len(READY))
                    if not chunk:
                        return False  # it exited first
                    received += chunk
        except TimeoutError:
            log.error(
                "worker %d (pid %d) did not start within %g s: killing it",
                worker.slot,
                worker.proc.pid,
                READY_TIMEOUT,
            )
            worker.signal(signal.SIGKILL)
            return False
        except OSError:
            return False
        return received == READY

    async def _watch(self, worker: Worker) -> None:
        """Reap the worker; restart it when it exits without being asked to."""
        returncode = await worker.proc.wait()
        await asyncio.gather(worker.ready, return_exceptions=True)
        worker.link.close()
        self._workers.discard(worker)
        slot = worker.slot
        if self._stopping or worker.retiring or self.slots[slot] is not worker:
            return
        ran = asyncio.get_running_loop().time() - worker.started_at
        if ran >= BACKOFF_RESET:
            self._backoff[slot] = BACKOFF_MIN
        delay = self._backoff[slot]
        self._backoff[slot] = min(delay * 2, BACKOFF_MAX)
        log.warning(
            "worker %d (pid %d) exited with %s after %.1f s; restarting it in %g s",
            slot,
            worker.proc.pid,
            exit_status(returncode),
            ran,
            delay,
        )
        task = asyncio.create_task(self._restart(worker, delay))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, dead: Worker, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._stopping or self.slots[dead.slot] is not dead:
            return  # stopping, or a rolling restart filled the slot meanwhile
        worker = await self._spawn(dead.slot)
        self.slots[dead.slot] = worker
        if await worker.ready:
            log.info("worker %d (pid %d) serves again", worker.slot, worker.proc.pid)

    async def _start_all(self) -> None:
        workers = [await self._spawn(slot) for slot in range(self.count)]
        self.slots = list(workers)
        ready = await asyncio.gather(*(w.ready for w in workers))
        if not all(ready):
            raise RealtimeMessagingError("a worker did not start (its error is above)")
        log.info("%d workers serve: pids %s", self.count, " ".join(map(str, self.pids)))

    # -- stopping -------------------------------------------------------------------------

    async def _terminate(self, workers: Sequence[Worker]) -> None:
        """SIGTERM ``workers``, wait up to the graceful timeout, SIGKILL what is left."""
        for worker in workers:
            worker.retiring = True
            worker.signal(signal.SIGTERM)
        watches = [w.watch for w in workers]
        if not watches:
            return
        _, late = await asyncio.wait(watches, timeout=self.graceful_timeout)
        for worker in workers:
            if worker.watch in late:
                log.warning(
                    "worker %d (pid %d) still running %g s after SIGTERM: killing it",
                    worker.slot,
                    worker.proc.pid,
                    self.graceful_timeout,
                )
                worker.signal(signal.SIGKILL)
        await asyncio.gather(*watches, return_exceptions=True)

    async def _stop_all(self) -> None:
        self._stopping = True
        for task in list(self._restarts):
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        await self._terminate(list(self._workers))

    async def _rolling_restart(self) -> None:
        """Replace each worker in turn: start the new one, wait until it serves, then drain the
        old one; its clients reconnect to the others."""
        log.info("SIGHUP: replacing the workers one at a time")
        for slot in range(self.count):
            new = await self._spawn(slot)
            if not await new.ready:
                log.error("worker %d: its replacement did not start; restart abandoned", slot)
                await self._terminate([new])
                return
            old, self.slots[slot] = self.slots[slot], new
            log.info(
                "worker %d: pid %d serves, pid %s drains",
                slot,
                new.proc.pid,
                old.proc.pid if old is not None else "-",
            )
            if old is not None:
                await self._terminate([old])
        log.info("workers replaced: pids %s", " ".join(map(str, self.pids)))


# -- the two sides ------------------------------------------------------------------------


def worker_environment(
    settings: Settings, database_url: str, secret: str, port: int
) -> dict[str, str]:
    """This process's environment with everything resolved once for the workers: the database,
    the secret, the broker (``auto`` means postgres or redis here, never local), the real port,
    and what the flags set."""
    env = dict(os.environ)
    env.update(
        RTM_DATABASE_URL=database_url,
        RTM_JWT_SECRET=secret,
        RTM_BROKER=settings.broker_kind,
        RTM_DATA_DIR=str(settings.data_dir.expanduser().resolve()),
        RTM_HOST=settings.host,
        RTM_PORT=str(port),
        RTM_WORKERS="1",
        RTM_GRACEFUL_TIMEOUT=str(settings.graceful_timeout),
    )
    optional = {
        "RTM_REDIS_URL": settings.redis_url,
        "RTM_PUBLIC_URL": settings.public_url,
        "RTM_TLS_CERT": str(settings.tls_cert.resolve()) if settings.tls_cert else None,
        "RTM_TLS_KEY": str(settings.tls_key.resolve()) if settings.tls_key else None,
    }
    for name, value in optional.items():
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    return env


def _log_to_stderr() -> None:
    """The supervisor's own lines on stderr, when ``rtm serve`` did not configure logging
    (``--log-level``, ``RTM_LOG_FORMAT``: then they go where every other line goes)."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rtm supervisor: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


async def supervise(settings: Settings, db: Database) -> None:
    """``rtm serve --workers N``: what happens once (migrations, secret, port, banner), then
    the workers until SIGTERM or SIGINT."""
    _log_to_stderr()
    await db.migrate()
    secret = load_or_create_secret(settings)
    reserved = reserve_port(settings.host, settings.port)
    try:
        port = reserved.getsockname()[1]
        url = base_url(settings.host, port, tls=settings.tls_cert is not None)
        supervisor = Supervisor(
            settings.workers,
            [sys.executable, "-m", "realtime_messaging", "serve"],
            worker_environment(settings, db.url, secret, port),
            settings.graceful_timeout,
        )
        await supervisor.run(lambda: print(banner(url, db.url, secret), flush=True))
    finally:
        reserved.close()


async def serve_as_worker(link: socket.socket, stop: asyncio.Event) -> None:
    """In a worker: tell the supervisor it serves, then set ``stop`` when the supervisor's end
    of the link closes (it exited, however it died)."""
    loop = asyncio.get_running_loop()
    link.setblocking(False)
    try:
        await loop.sock_sendall(link, READY)
        while await loop.sock_recv(link, 64):
            pass  # nothing is sent this way; only the end of file matters
    except OSError:
        pass
    if not stop.is_set():
        log.warning("the supervisor is gone: stopping")
        stop.set()
