"""In-flight accounting: how many fetched messages each queue holds, and when to fetch again.

The Functions host applies its batch rules per queue function: receive up to
``batchSize`` messages, and fetch again only when that function's messages in flight drop
to ``newBatchThreshold``, so at most ``batchSize + newBatchThreshold`` per queue. The
worker does the same for every queue it works, and ``total`` caps all queues together
(``-c`` plus one waiting batch with an explicit ``-c``).

A message is in flight from the moment a receive is reserved for it until its settlement
was attempted (delete, release, or hand-off to the poison path), so fetching never runs
ahead of deleting. Thread-safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class QueueLimits:
    """One queue's batch rules: messages per receive, and the in-flight level to fetch again at."""

    fetch: int
    threshold: int

    @property
    def most(self) -> int:
        return self.fetch + self.threshold


class InFlight:
    """Per-queue in-flight counts under one overall cap."""

    def __init__(self, limits: Mapping[str, QueueLimits], total: int) -> None:
        if not limits:
            raise ValueError("in-flight accounting needs at least one queue")
        if total < 1:
            raise ValueError(f"the overall in-flight cap must be at least 1, got {total}")
        self.limits = dict(limits)
        self.total = total
        self._counts = {name: 0 for name in self.limits}
        self._sum = 0
        # Who waits, so a settled message wakes only those it can let through (one wake-up
        # per job for every waiting receiver cost a busy worker a large share of its CPU).
        self._waiting = {name: 0 for name in self.limits}
        self._idle_waiting = 0
        self._closed = False
        self._cond = threading.Condition()

    # -- reading -------------------------------------------------------------
    def count(self, queue: str | None = None) -> int:
        with self._cond:
            return self._sum if queue is None else self._counts[queue]

    def __len__(self) -> int:
        return self.count()

    # -- fetching ------------------------------------------------------------
    def reserve(self, queue: str, timeout: float | None = None) -> int:
        """Wait until ``queue`` may fetch, then claim room for one batch; 0 once closed (or on timeout).

        A queue may fetch when its own count is at or below its threshold and the overall
        cap leaves room; the batch is as large as both allow, up to the queue's ``fetch``.
        """
        limits = self.limits[queue]
        with self._cond:
            self._waiting[queue] += 1
            try:
                ready = self._cond.wait_for(lambda: self._closed or self._room(queue, limits) > 0, timeout)
            finally:
                self._waiting[queue] -= 1
            if not ready:
                return 0
            if self._closed:
                return 0
            wanted = self._room(queue, limits)
            self._counts[queue] += wanted
            self._sum += wanted
            return wanted

    def _room(self, queue: str, limits: QueueLimits) -> int:
        count = self._counts[queue]
        if count > limits.threshold:
            return 0
        return max(0, min(limits.fetch, limits.most - count, self.total - self._sum))

    def unreserve(self, queue: str, count: int) -> None:
        """Give back room a receive did not use (it returned fewer messages, or failed)."""
        if count:
            self._add(queue, -count)

    def done(self, queue: str) -> None:
        """One message of ``queue`` is settled (or handed off): it no longer counts."""
        self._add(queue, -1)

    def _add(self, queue: str, delta: int) -> None:
        with self._cond:
            self._counts[queue] += delta
            self._sum += delta
            if self._counts[queue] < 0 or self._sum < 0:
                raise RuntimeError(f"in-flight count of {queue} went negative")
            if self._wakes_anyone(queue):
                self._cond.notify_all()

    def _wakes_anyone(self, changed: str) -> bool:
        """Whether a waiter may proceed now (under ``_cond``)."""
        if self._idle_waiting and (self._sum == 0 or self._counts[changed] == 0):
            return True
        for name, waiting in self._waiting.items():
            # a queue at or below its threshold waits only for room under the overall cap
            if waiting and self._counts[name] <= self.limits[name].threshold:
                return True
        return False

    # -- waiting -------------------------------------------------------------
    def wait_idle(self, queue: str | None = None, timeout: float | None = None) -> bool:
        """Wait until nothing of ``queue`` (of any queue with None) is in flight; False on timeout or close."""
        with self._cond:
            self._idle_waiting += 1
            try:
                return self._cond.wait_for(
                    lambda: self._closed or (self._sum if queue is None else self._counts[queue]) == 0, timeout
                ) and (self._sum if queue is None else self._counts[queue]) == 0
            finally:
                self._idle_waiting -= 1

    def close(self) -> None:
        """Stop handing out room: waiting ``reserve`` calls return 0."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


__all__ = ["InFlight", "QueueLimits"]
