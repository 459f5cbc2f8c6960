"""What scaling platforms need from a worker (a mixin of ``Worker``; ``self`` is the worker).

- ``max_jobs`` (``--max-jobs N``): once N jobs have started, fetching stops, prefetched messages
  are released at once (visibility 0), and the worker stops when the started jobs are settled:
  a Kubernetes ``ScaledJob`` or Container Apps Job execution works a slice and ends (exit 0).
  ``fetch`` is capped at N, so a slice never leases more than it may work.
- ``heartbeat`` (``--heartbeat PATH``): a file rewritten every ``heartbeat_interval`` seconds that
  says when storage last answered, read by ``azjobs check`` (azjobs/runtime/heartbeat.py).
"""

from __future__ import annotations

from typing import Any

from ..model.secrets import get_logger

log = get_logger("azjobs.worker")


class Scaling:
    """``--max-jobs`` slices and the heartbeat's view of the worker."""

    def _claim(self) -> bool:
        """--max-jobs: True while another job may start; the last one stops fetching (a no-op without it)."""
        if self.max_jobs is None:
            return True
        with self._cond:
            if self._claimed >= self.max_jobs:
                return False
            self._claimed += 1
            last = self._claimed == self.max_jobs
            if last:
                self.stats.max_jobs_reached = True
        if last:
            self.inflight.close()
            log.info("started %d jobs (--max-jobs): no more fetching; stopping once they are settled",
                     self.max_jobs, extra={"action": "max_jobs_reached", "max_jobs": self.max_jobs})
        return True

    def _slice_done(self) -> bool:
        """--max-jobs reached and every delivery settled or released."""
        return self.stats.max_jobs_reached and len(self.inflight) == 0

    def _probe_storage(self) -> None:
        self._queue_clients[self.queues[0]].get_queue_properties()

    def _heartbeat_snapshot(self) -> dict[str, Any]:
        with self._stats_lock:
            handled = self.stats.handled
        return {"queues": self.queues, "running": self._running, "handled": handled,
                "stopping": self._stopping.is_set()}


__all__ = ["Scaling"]
