"""The in-process rate limiter against the definition of a moving window: a hit is accepted
when, with it, no span of the window's length holds more than the limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from realtime_messaging.server.api.ratelimit import MovingWindows

steps = st.lists(
    st.tuples(st.floats(0, 3, allow_nan=False), st.integers(1, 3), st.sampled_from("ab")),
    max_size=60,
)


@given(steps, st.integers(1, 5), st.sampled_from([1.0, 2.5]))
def test_accepts_exactly_what_the_definition_accepts(
    plan: list[tuple[float, int, str]], limit: int, window: float
) -> None:
    windows = MovingWindows()
    accepted: dict[str, list[float]] = {"a": [], "b": []}
    now = 0.0
    for gap, cost, key in plan:
        now += gap
        recent = [t for t in accepted[key] if t > now - window]
        allowed = len(recent) + cost <= limit
        wait = windows.hit("k", key, limit, window, cost, now)
        assert (wait == 0) == allowed
        if allowed:
            accepted[key] += [now] * cost
        else:
            # Retrying after the wait it named succeeds (unless the cost exceeds the limit).
            assert wait > 0
            if cost <= limit:
                assert _accepts(accepted[key], now + wait + 1e-9, cost, limit, window)


def _accepts(hits: list[float], at: float, cost: int, limit: int, window: float) -> bool:
    return len([t for t in hits if t > at - window]) + cost <= limit


def test_idle_keys_are_forgotten() -> None:
    windows = MovingWindows()
    for i in range(100):
        windows.hit("k", str(i), 1, 1.0, 1, 0.0)
    windows.hit("k", "last", 1, 1.0, 1, 5.0)
    assert list(windows._hits) == [("k", "last")]
