"""Logging set up once at start (``rtm serve --log-level``, ``RTM_LOG_FORMAT``): plain text
lines, or one JSON object per line for log collectors. Only the standard library.

A JSON line carries ``time``, ``level``, ``logger`` and ``message``, plus the fields a record
was given (the access log's ``method``, ``path``, ``status``, ``duration_ms``,
``request_id``). Tokens never reach a log: the access log drops query secrets, and no log
call is handed a token.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
#: Libraries whose info lines are noise at our info level (the embedded database's start and
#: stop commands): shown at debug only.
CHATTY = ("pgserver",)
#: The fields of the access log, copied into JSON lines when a record has them.
FIELDS = ("method", "path", "status", "duration_ms", "request_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str = "info", fmt: str = "text", *, stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` or above to stderr (``stream``) in ``fmt``."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level: expected one of {', '.join(LEVELS)}, not {level!r}")
    if fmt.lower() not in FORMATS:
        raise ValueError(f"RTM_LOG_FORMAT: expected text or json, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt.lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Neither format shows the process, thread or source line a record came from; each
    # record would still look them up (a system call for the process id), and a socket's
    # close writes two records (benchmarks/README.md, "Connect path, third pass").
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the logging HOWTO's way to skip finding the caller
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in CHATTY:
        logging.getLogger(name).setLevel("DEBUG" if level.lower() == "debug" else "WARNING")
