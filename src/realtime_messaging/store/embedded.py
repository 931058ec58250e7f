"""The embedded default database: a private PostgreSQL 16 from the ``pgserver`` wheel.

Several ``rtm`` processes on one data directory share one server: pgserver keeps a list of the
processes holding it and the last one to exit stops it.
"""

from __future__ import annotations

import atexit
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..exceptions import EmbeddedDatabaseError


def _import_pgserver() -> Any:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset; that is harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    return pgserver


class EmbeddedPostgres:
    """A handle on the private server in ``<data_dir>/pg``; started on construction."""

    def __init__(self, data_dir: Path) -> None:
        pgserver = _import_pgserver()
        data_dir = data_dir.expanduser().resolve()
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedDatabaseError(f"cannot create data directory {data_dir}: {exc}") from exc
        self.pgdata = data_dir / "pg"
        _forget_dead_holders(self.pgdata)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises bare exceptions from initdb/pg_ctl
            raise EmbeddedDatabaseError(
                f"cannot start the embedded PostgreSQL in {self.pgdata}: {exc}. "
                "Set RTM_DATABASE_URL to use an external server instead."
            ) from exc

    def url(self, database: str = "postgres") -> str:
        """The connection URL (a Unix socket inside the data directory)."""
        return str(self._server.get_uri(database))

    def stop(self) -> None:
        """Stop the server now (fast shutdown: connections are cut), keeping this handle."""
        pgserver = _import_pgserver()
        pgserver._commands.pg_ctl(
            ["-w", "stop", "-m", "fast"], pgdata=self.pgdata, user=self._server.system_user
        )

    def start(self) -> None:
        """Start a stopped server again, at the same URL."""
        self._server.ensure_postgres_running()

    def restart(self) -> None:
        self.stop()
        self.start()

    def detach(self) -> None:
        """Leave the server running after this process exits (for ``rtm db-url``)."""
        self._server.global_process_id_list.get_and_remove(os.getpid())
        atexit.unregister(self._server._cleanup)

    def close(self) -> None:
        """Release this process's hold; the server stops when no process holds it any more."""
        self._server.cleanup()


def _forget_dead_holders(pgdata: Path) -> None:
    """Drop processes that died without releasing the server (SIGKILL) from pgserver's list.

    Otherwise a killed ``rtm`` would keep the server from ever being stopped by the others.
    """
    holders = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(holders.read_text())
    except (FileNotFoundError, ValueError):
        return
    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != pids:
        holders.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
