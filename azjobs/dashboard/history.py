"""Queue depth over time, sampled by the dashboard itself (storage keeps no history of depths).

Each sample is one ``StorageReader.depths()`` reading. The dashboard samples in the
background while it is served by ``azjobs dashboard``, and on a page view when the last
sample is older than the interval (the only way under Functions, where an instance lives
only while requests arrive). The history is in memory: it starts empty with each process.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from .storage import QueueDepth

DEFAULT_INTERVAL_S = 10.0
DEFAULT_KEEP = 360  # samples per queue: an hour at the default interval


@dataclass(frozen=True)
class Point:
    at: float
    depth: int
    poison_depth: int


class DepthHistory:
    """Thread-safe per-queue series of depth samples."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, keep: int = DEFAULT_KEEP, clock=time.time) -> None:
        self.interval_s = interval_s
        self.keep = keep
        self.clock = clock
        self._lock = threading.Lock()
        self._series: dict[str, deque[Point]] = {}
        self.last_sampled_at: float | None = None

    def due(self) -> bool:
        """True when a new sample should be taken."""
        with self._lock:
            return self.last_sampled_at is None or self.clock() - self.last_sampled_at >= self.interval_s

    def add(self, depths: list[QueueDepth]) -> None:
        with self._lock:
            for d in depths:
                series = self._series.setdefault(d.name, deque(maxlen=self.keep))
                series.append(Point(d.sampled_at, d.depth or 0, d.poison_depth or 0))
            self.last_sampled_at = max((d.sampled_at for d in depths), default=self.clock())

    def series(self, queue: str) -> list[Point]:
        with self._lock:
            return list(self._series.get(queue, ()))

    def rate_per_min(self, queue: str, window_s: float = 60.0) -> float | None:
        """How fast the depth changed over about the last ``window_s`` (messages per minute; negative:
        the queue is draining); None with fewer than two samples."""
        points = self.series(queue)
        if len(points) < 2:
            return None
        last = points[-1]
        first = next((p for p in points if last.at - p.at <= window_s), points[0])
        if first is last:
            first = points[-2]
        span = last.at - first.at
        return None if span <= 0 else (last.depth - first.depth) * 60.0 / span
