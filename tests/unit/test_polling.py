"""The runner's idle back-off follows the Functions host's randomized exponential strategy."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from azjobs.runtime.polling import PollingBackoff


def test_without_jitter_the_sequence_is_the_hosts():
    backoff = PollingBackoff(timedelta(seconds=2), randomization=0.0)
    delays = [round(backoff.next_delay(False), 3) for _ in range(8)]
    assert delays == [0.2, 0.3, 0.5, 0.9, 1.7, 2.0, 2.0, 2.0]


@pytest.mark.parametrize("seed", range(20))
def test_each_step_stays_within_twenty_percent_and_the_cap(seed):
    backoff = PollingBackoff(3.0, rng=random.Random(seed))
    for n in range(1, 12):
        delay = backoff.next_delay(False)
        nominal = 0.1 * 2 ** (n - 1)
        if delay < 3.0:
            assert 0.1 + 0.8 * nominal - 1e-9 <= delay <= 0.1 + 1.2 * nominal + 1e-9
        assert 0.1 <= delay <= 3.0
    assert backoff.next_delay(False) == 3.0  # capped for good


def test_delays_grow_until_the_cap():
    backoff = PollingBackoff(60.0, rng=random.Random(1))
    delays = [backoff.next_delay(False) for _ in range(12)]
    assert delays == sorted(delays)
    assert delays[-1] == 60.0


def test_a_message_resets_to_the_minimum():
    backoff = PollingBackoff(2.0, rng=random.Random(3))
    for _ in range(10):
        backoff.next_delay(False)
    assert backoff.current == 2.0
    assert backoff.next_delay(True) == pytest.approx(0.1)
    assert 0.18 <= backoff.next_delay(False) <= 0.22  # starts over


def test_jitter_differs_between_loops():
    a = PollingBackoff(10.0, rng=random.Random(1))
    b = PollingBackoff(10.0, rng=random.Random(2))
    assert [a.next_delay(False) for _ in range(5)] != [b.next_delay(False) for _ in range(5)]


def test_a_cap_below_the_minimum_is_the_minimum():
    backoff = PollingBackoff(0.05)
    assert backoff.next_delay(False) == pytest.approx(0.1)
