"""How a broker stops its tasks: the same for Redis, Redis Cluster and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)


async def cancel_until_done(tasks: Iterable[asyncio.Task[None]], within: float, what: str) -> None:
    """Cancel ``tasks``, again until each is done (a cancellation can be lost in a library);
    after ``within`` seconds, log those left (``what``'s) and leave them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
        if pending and loop.time() > deadline:
            log.warning("%s tasks did not stop: %s", what, pending)
            break
