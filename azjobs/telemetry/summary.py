"""The worker's periodic summary line (``azjobs --stats-interval SECONDS``; off by default).

Every interval one INFO line (event ``worker_summary``) says what the worker did since the
last one and what it holds now, from the worker's own counters, so it needs no OpenTelemetry:

    worker summary (last 60s): 118 succeeded, 3 retries scheduled, 1 dead-lettered, 0 skipped, 0 cancelled, 0 throttled,
    0 released for redelivery; 2.0 jobs/s; 4 running, 12 in flight
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable

from ..model.secrets import get_logger

log = get_logger("azjobs.worker")

# WorkerStats fields the line reports, in order, with their words.
FIELDS = (("succeeded", "succeeded"), ("retry_scheduled", "retries scheduled"), ("dead_lettered", "dead-lettered"),
          ("skipped", "skipped"), ("cancelled", "cancelled"), ("throttled", "throttled"),
          ("redelivered", "released for redelivery"))


class Summary:
    """A daemon thread logging one summary line every ``interval_s`` until ``stop()``.

    ``snapshot`` returns ``(stats, running, in_flight)``: a copy of the worker's
    ``WorkerStats``, the jobs running now and the messages held.
    """

    def __init__(self, interval_s: float, snapshot: Callable[[], tuple[Any, int, int]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s <= 0:
            raise ValueError(f"the summary interval must be positive, got {interval_s}")
        self.interval_s = interval_s
        self._snapshot = snapshot
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[str, int] = {}
        self._last_at = clock()

    def start(self) -> "Summary":
        stats, _, _ = self._snapshot()
        self._last, self._last_at = _counts(stats), self._clock()
        self._thread = threading.Thread(target=self._loop, name="azjobs-summary", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.log_once()
            except Exception:  # a summary must never take the worker down
                log.exception("worker summary failed", extra={"action": "worker_summary_failed"})

    def log_once(self) -> dict[str, Any]:
        """Log the line for the time since the last one; returns its fields."""
        stats, running, in_flight = self._snapshot()
        now, counts = self._clock(), _counts(stats)
        window = max(now - self._last_at, 1e-9)
        delta = {name: counts[name] - self._last.get(name, 0) for name in counts}
        self._last, self._last_at = counts, now
        done = sum(delta[name] for name, _ in FIELDS)
        rate = done / window
        fields: dict[str, Any] = {"action": "worker_summary", "window_s": round(window, 3),
                                  "jobs_per_s": round(rate, 3), "running": running, "in_flight": in_flight,
                                  **delta}
        log.info("worker summary (last %ss): %s; %.1f jobs/s; %d running, %d in flight",
                 f"{window:.0f}" if window >= 10 else f"{window:.1f}",
                 ", ".join(f"{delta[name]} {words}" for name, words in FIELDS), rate, running, in_flight,
                 extra=fields)
        return fields


def _counts(stats: Any) -> dict[str, int]:
    values = dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else dict(stats)
    return {name: int(values.get(name, 0)) for name, _ in FIELDS}


__all__ = ["FIELDS", "Summary"]
