"""The job-timeout watchdog (no storage, a fake clock)."""

from __future__ import annotations

from azjobs.runtime.timeouts import Watchdog


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Future:
    def __init__(self):
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


def test_a_job_past_its_deadline_is_reported_once_with_its_future():
    clock, seen = Clock(), []
    dog = Watchdog(5.0, lambda watched, future: seen.append((watched.delivery, future)), clock=clock)
    watched = dog.watch("d1", "step")
    future = Future()
    watched.set_future(future)
    clock.now = 4.9
    assert dog.check() == 0
    clock.now = 5.0
    assert dog.check() == 1 and seen == [("d1", future)]
    assert dog.check() == 0  # once
    assert watched.finish() is True  # when it returns, its outcome is to be discarded


def test_a_job_that_finished_in_time_is_never_reported():
    clock, seen = Clock(), []
    dog = Watchdog(1.0, lambda *a: seen.append(a), clock=clock)
    watched = dog.watch("d", "s")
    assert watched.finish() is False
    clock.now = 10
    assert dog.check() == 0 and seen == []
    dog.unwatch(watched)
    assert len(dog) == 0


def test_a_future_set_after_the_timeout_is_cancelled_at_once():
    clock = Clock()
    dog = Watchdog(1.0, lambda *a: None, clock=clock)
    watched = dog.watch("d", "s")
    clock.now = 2
    dog.check()
    future = Future()
    watched.set_future(future)
    assert future.cancelled
