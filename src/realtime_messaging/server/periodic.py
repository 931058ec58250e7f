"""Housekeeping steps that run on a timer and survive the database being away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

#: What a step may raise when the database is unreachable or restarting.
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def every(interval: float, step: Callable[[], Awaitable[Any]], what: str) -> None:
    """Run ``step`` every ``interval`` seconds until cancelled; a failed round is logged and
    the next one tries again."""
    while True:
        await asyncio.sleep(interval)
        try:
            await step()
        except DATABASE_ERRORS as exc:
            log.warning("%s failed (%s); it runs again shortly", what, exc)
