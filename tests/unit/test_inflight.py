"""In-flight accounting: the host's batch rules per queue, one overall cap (no storage)."""

from __future__ import annotations

import threading
import time

import pytest

from azjobs.runtime.inflight import InFlight, QueueLimits


def test_a_queue_fetches_a_batch_then_waits_until_it_drops_to_its_threshold():
    inflight = InFlight({"a": QueueLimits(fetch=4, threshold=2)}, total=100)
    assert inflight.reserve("a") == 4  # 0 in flight: a full batch
    assert inflight.reserve("a", timeout=0.1) == 0  # 4 > threshold 2: no fetching
    inflight.done("a")
    inflight.done("a")  # 2 in flight: at the threshold, fetch again, up to fetch + threshold in all
    assert inflight.reserve("a") == 4
    assert inflight.count("a") == 6


def test_each_queue_has_its_own_limits_as_the_host_gives_each_queue_function():
    inflight = InFlight({"a": QueueLimits(4, 0), "b": QueueLimits(4, 0)}, total=100)
    assert inflight.reserve("a") == 4
    # "a" is busy, but that does not stop "b" (a shared limit would)
    assert inflight.reserve("b", timeout=0.1) == 4
    assert inflight.count() == 8 and inflight.count("a") == inflight.count("b") == 4


def test_the_overall_cap_limits_all_queues_together():
    inflight = InFlight({"a": QueueLimits(8, 8), "b": QueueLimits(8, 8)}, total=10)
    assert inflight.reserve("a") == 8
    assert inflight.reserve("b") == 2  # only 2 left under the cap of 10
    assert inflight.reserve("b", timeout=0.1) == 0
    inflight.done("a")
    assert inflight.reserve("b") == 1


def test_unused_room_is_given_back():
    inflight = InFlight({"a": QueueLimits(8, 0)}, total=8)
    wanted = inflight.reserve("a")
    inflight.unreserve("a", wanted - 3)  # the receive returned 3 messages
    assert inflight.count("a") == 3


def test_a_waiting_fetcher_wakes_when_work_finishes_or_the_count_closes():
    inflight = InFlight({"a": QueueLimits(2, 0)}, total=2)
    assert inflight.reserve("a") == 2
    got = []
    thread = threading.Thread(target=lambda: got.append(inflight.reserve("a")))
    thread.start()
    time.sleep(0.1)
    assert got == []
    inflight.done("a")
    inflight.done("a")
    thread.join(2)
    assert got == [2]
    inflight.close()
    assert inflight.reserve("a") == 0


def test_wait_idle_per_queue():
    inflight = InFlight({"a": QueueLimits(2, 0), "b": QueueLimits(2, 0)}, total=4)
    inflight.reserve("a")
    assert inflight.wait_idle("b", timeout=0.05)
    assert not inflight.wait_idle("a", timeout=0.05)
    inflight.unreserve("a", 2)
    assert inflight.wait_idle("a", timeout=0.05) and inflight.wait_idle(timeout=0.05)


def test_a_count_that_would_go_negative_is_a_bug_reported_loudly():
    inflight = InFlight({"a": QueueLimits(2, 0)}, total=2)
    with pytest.raises(RuntimeError):
        inflight.done("a")
