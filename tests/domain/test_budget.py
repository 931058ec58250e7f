from realtime_messaging.domain.budget import PerSecond


def test_budget_allows_limit_events_per_window_then_refuses() -> None:
    budget = PerSecond(3)
    assert [budget.allow(10.0 + i * 0.1) for i in range(5)] == [True, True, True, False, False]


def test_budget_renews_one_second_after_the_window_opened() -> None:
    budget = PerSecond(2)
    assert budget.allow(0.0) and budget.allow(0.5)
    assert not budget.allow(0.99)
    assert budget.allow(1.0) and budget.allow(1.5)
    assert not budget.allow(1.9)


def test_refused_events_still_count_within_the_window() -> None:
    budget = PerSecond(1)
    assert budget.allow(0.0)
    assert not budget.allow(0.2)
    assert not budget.allow(0.999)
    assert budget.allow(1.0)
