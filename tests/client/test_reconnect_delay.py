"""The SDK's reconnect schedule: quick retries first (a restarted server is back in seconds),
then capped exponential backoff with jitter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from realtime_messaging.client.socket import (
    QUICK_PHASE,
    QUICK_RETRIES,
    REFUSED_STEP,
    _worth_reporting,
    after_session,
    reconnect_delay,
)


@given(st.integers(0, 500), st.floats(0, QUICK_PHASE, exclude_max=True))
def test_quick_phase(attempt: int, down_for: float) -> None:
    step = QUICK_RETRIES[min(attempt, len(QUICK_RETRIES) - 1)]
    delay = reconnect_delay(attempt, down_for, 0.5, 30.0)
    assert step / 2 <= delay <= step <= 0.1


@given(st.integers(0, 500), st.floats(0, QUICK_PHASE, exclude_max=True))
def test_quick_phase_after_a_refused_attempt(attempt: int, down_for: float) -> None:
    """Nothing listening (the server restarting): at most 50 ms apart, at least 25 after the
    first two attempts."""
    step = min(QUICK_RETRIES[min(attempt, len(QUICK_RETRIES) - 1)], REFUSED_STEP)
    delay = reconnect_delay(attempt, down_for, 0.5, 30.0, refused=True)
    assert step / 2 <= delay <= step <= 0.05


def test_quick_schedule() -> None:
    """A client is back at most 100 ms after the server accepts again (50 ms when its attempts
    were refused outright), and never retries more often than every 25 ms after its first
    two attempts."""
    assert QUICK_RETRIES == (0.01, 0.05, 0.1)
    assert REFUSED_STEP == 0.05


@given(st.integers(0, 500), st.floats(QUICK_PHASE, 1e6), st.booleans())
def test_backoff_whatever_the_last_attempt_met(
    attempt: int, down_for: float, refused: bool
) -> None:
    delay = reconnect_delay(attempt, down_for, 0.5, 30.0, refused=refused)
    expected = min(30.0, max(0.5, down_for - QUICK_PHASE))
    assert expected / 2 <= delay <= expected


@given(st.integers(0, 500), st.floats(QUICK_PHASE, 1e6))
def test_then_exponential_and_capped(attempt: int, down_for: float) -> None:
    delay = reconnect_delay(attempt, down_for, 0.5, 30.0)
    expected = min(30.0, max(0.5, down_for - QUICK_PHASE))
    assert expected / 2 <= delay <= expected


@given(st.integers(0, 500))
def test_backoff_starts_from_base(attempt: int) -> None:
    """However many quick attempts there were, the first wait after them is about ``base``."""
    assert reconnect_delay(attempt, QUICK_PHASE, 0.5, 30.0) <= 0.5


def test_never_above_the_cap() -> None:
    assert reconnect_delay(0, 0.0, 0.5, 0.005) <= 0.005
    assert reconnect_delay(100, 1e6, 0.5, 2.0) <= 2.0


@given(st.integers(0, 500), st.floats(QUICK_PHASE, 1e4))
def test_healthy_connection_restarts_the_quick_phase(attempt: int, up_for: float) -> None:
    """A connection up for the quick phase's length (less than a heartbeat interval, too) was
    healthy: its loss is retried quickly again."""
    assert after_session(attempt, 0.0, 100.0, 100.0 + up_for) == (0, 100.0 + up_for)


@given(st.integers(0, 500), st.floats(0, QUICK_PHASE - 0.001))
def test_connection_closed_at_once_keeps_backing_off(attempt: int, up_for: float) -> None:
    assert after_session(attempt, 3.0, 100.0, 100.0 + up_for) == (attempt, 3.0)


def test_failed_attempts_reported_sparingly() -> None:
    assert [a for a in range(100) if _worth_reporting(a)] == [0, 7, 15, 31, 63]
