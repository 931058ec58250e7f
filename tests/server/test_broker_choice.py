"""Which broker a process runs with, and the warning when processes share a database apart."""

from __future__ import annotations

import logging

import pytest

from realtime_messaging.config import Settings
from tests.conftest import running_server

WARNING = "broadcasts and presence will not cross between them"


def test_auto_picks_redis_then_postgres_under_workers_then_local() -> None:
    assert Settings(redis_url="redis://h:6379").broker_kind == "redis"
    assert Settings(workers=2).broker_kind == "postgres"
    assert Settings().broker_kind == "local"
    assert Settings(broker="postgres").broker_kind == "postgres"
    with pytest.raises(ValueError, match="RTM_BROKER=redis needs RTM_REDIS_URL"):
        Settings(broker="redis").broker_kind  # noqa: B018
    with pytest.raises(ValueError, match="expected auto, local, redis or postgres"):
        Settings(broker="nats").broker_kind  # noqa: B018


async def test_a_second_local_process_on_one_database_says_it_is_cut_off(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="realtime_messaging.server.app"):
        async with running_server(database_url):
            async with running_server(database_url):
                pass
    assert any(WARNING in r.getMessage() for r in caplog.records), caplog.text


async def test_processes_joined_by_a_broker_do_not_warn(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="realtime_messaging.server.app"):
        async with running_server(database_url, broker="postgres"):
            async with running_server(database_url, broker="postgres"):
                pass
    assert not any(WARNING in r.getMessage() for r in caplog.records), caplog.text
