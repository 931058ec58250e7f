"""Fixtures for the compatibility tests: clients that are always closed, even when a test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from .clients import Clients


@pytest.fixture
async def clients(server: Any) -> AsyncIterator[Clients]:
    opened = Clients(server)
    try:
        yield opened
    finally:
        await opened.close()
