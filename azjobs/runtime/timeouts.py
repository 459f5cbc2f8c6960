"""The job timeout: a watchdog over running jobs, as the host's ``functionTimeout``.

Each job between ``Executor.run`` and ``Executor.finish`` is ``Watched``: its deadline, the
thread running it and, for an ``async def`` job, the future of its coroutine (so it can be
cancelled). One watchdog thread checks the deadlines and hands each job that runs past its
own to ``on_timeout`` exactly once; a job that finishes first is never reported. What a
timeout means (release the message, replace the thread) is the worker's business.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

WATCH_INTERVAL_S = 0.1


class Watched:
    """One running job under the watch: its deadline, its thread, its coroutine's future."""

    __slots__ = ("delivery", "step", "deadline", "future", "timed_out", "finished", "returned", "lock", "thread")

    def __init__(self, delivery: Any, step: Any, deadline: float | None) -> None:
        self.thread = threading.current_thread()
        self.delivery = delivery
        self.step = step
        self.deadline = deadline
        self.future: Any = None
        self.timed_out = False
        self.finished = False
        self.returned = False  # (the runner's) its thread is back from the job
        self.lock = threading.Lock()

    def set_future(self, future: Any) -> None:
        """The concurrent future of an async job's coroutine (cancelled at once if already timed out)."""
        with self.lock:
            self.future = future
            cancel = self.timed_out
        if cancel:
            future.cancel()

    def finish(self) -> bool:
        """The job returned: True if it had timed out first (its outcome is not to be recorded)."""
        with self.lock:
            self.finished = True
            return self.timed_out

    def expire(self) -> tuple[bool, Any]:
        """Mark it timed out unless it finished; (whether it was, the future to cancel)."""
        with self.lock:
            if self.finished or self.timed_out:
                return False, None
            self.timed_out = True
            return True, self.future


class Watchdog:
    """Calls ``on_timeout(watched, future)`` for each watched job past its deadline."""

    def __init__(self, timeout_s: float, on_timeout: Callable[[Watched, Any], None], *,
                 interval: float = WATCH_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._on_timeout = on_timeout
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._watched: dict[int, Watched] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Watchdog":
        self._thread = threading.Thread(target=self._loop, name="azjobs-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def watch(self, delivery: Any, step: Any) -> Watched:
        """Start watching the job about to run in this thread."""
        watched = Watched(delivery, step, self._clock() + self.timeout_s)
        with self._lock:
            self._watched[id(watched)] = watched
        return watched

    def unwatch(self, watched: Watched) -> None:
        with self._lock:
            self._watched.pop(id(watched), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._watched)

    def check(self) -> int:
        """Report every job past its deadline now; how many were reported."""
        now = self._clock()
        with self._lock:
            due = [w for w in self._watched.values() if w.deadline is not None and now >= w.deadline]
        reported = 0
        for watched in due:
            expired, future = watched.expire()
            if expired:
                reported += 1
                self._on_timeout(watched, future)
        return reported

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()


__all__ = ["Watchdog", "Watched"]
