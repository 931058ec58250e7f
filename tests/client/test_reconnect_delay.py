"""The SDK's reconnect schedule: quick retries first (a restarted server is back in seconds),
then capped exponential backoff with jitter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from realtime_messaging.client.socket import (
    QUICK_PHASE,
    QUICK_RETRIES,
    _worth_reporting,
    reconnect_delay,
)


@given(st.integers(0, 50), st.floats(0, QUICK_PHASE, exclude_max=True))
def test_quick_phase(attempt: int, down_for: float) -> None:
    step = QUICK_RETRIES[min(attempt, len(QUICK_RETRIES) - 1)]
    delay = reconnect_delay(attempt, down_for, 0.5, 30.0)
    assert step / 2 <= delay <= step <= 0.25


@given(st.integers(0, 200), st.floats(QUICK_PHASE, 1e6))
def test_then_exponential_and_capped(attempt: int, down_for: float) -> None:
    delay = reconnect_delay(attempt, down_for, 0.5, 30.0)
    expected = min(30.0, 0.5 * 2.0 ** max(0, attempt - len(QUICK_RETRIES)))
    assert expected / 2 <= delay <= expected


def test_never_above_the_cap() -> None:
    assert reconnect_delay(0, 0.0, 0.5, 0.005) <= 0.005


def test_failed_attempts_reported_sparingly() -> None:
    assert [a for a in range(100) if _worth_reporting(a)] == [0, 7, 15, 31, 63]
