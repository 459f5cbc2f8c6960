from datetime import datetime, timedelta, timezone

import pytest

from azjobs.storage.delays import plan_delivery
from azjobs.errors import DelayError

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_no_delay():
    assert plan_delivery(now=NOW).visibility_timeout == 0


@pytest.mark.parametrize("delay,expected", [(0, 0), (1, 1), (1.2, 2), (timedelta(minutes=5), 300), (604800, 604800)])
def test_delays_round_up_so_never_early(delay, expected):
    plan = plan_delivery(delay, now=NOW)
    assert plan.visibility_timeout == expected and plan.due_at is None


def test_at_uses_the_difference_and_past_times_run_now():
    assert plan_delivery(at=NOW + timedelta(hours=1), now=NOW).visibility_timeout == 3600
    assert plan_delivery(at=NOW - timedelta(hours=1), now=NOW).visibility_timeout == 0


def test_beyond_seven_days_carries_a_due_time():
    plan = plan_delivery(timedelta(days=30), now=NOW)
    assert plan.visibility_timeout == 7 * 24 * 3600
    assert plan.due_at == "2026-01-31T00:00:00.000Z"


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf"), "10", True, timedelta(seconds=-5)])
def test_bad_delays(delay):
    with pytest.raises(DelayError):
        plan_delivery(delay, now=NOW)


def test_naive_at_is_refused():
    with pytest.raises(DelayError, match="timezone-aware"):
        plan_delivery(at=datetime(2026, 1, 2), now=NOW)
    with pytest.raises(DelayError):
        plan_delivery(at="tomorrow", now=NOW)
    with pytest.raises(DelayError, match="not both"):
        plan_delivery(1, NOW, now=NOW)
