"""PostgREST-compatible ``/rest/v1``: tables (:mod:`.tables`), the URL grammar (:mod:`.query`),
the SQL it becomes (:mod:`.sql`) and PostgREST's error shape (:mod:`.errors`)."""

from __future__ import annotations

import asyncpg

from ..api.framework import Api
from . import tables
from .errors import postgrest_errors
from .sql import load_catalog

__all__ = ["postgrest_errors", "register"]


async def register(api: Api, pool: asyncpg.Pool) -> None:
    """Declare the table routes on ``api``, for the tables the catalog has."""
    tables.register(api, await load_catalog(pool))
