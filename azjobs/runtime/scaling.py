"""What scaling platforms need from a worker (a mixin of ``Worker``; ``self`` is the worker).

- ``max_jobs`` (``--max-jobs N``): once N jobs have started, fetching stops, prefetched messages
  are released at once (visibility 0), and the worker stops when the started jobs are settled:
  a Kubernetes ``ScaledJob`` or Container Apps Job execution works a slice and ends (exit 0).
  ``fetch`` is capped at N, so a slice never leases more than it may work.
- the end of a drain (``_release_abandoned``): when the grace period ends with jobs still
  running, their messages are released (visibility 0) so another replica runs them now rather
  than when the lease ends; the process exits next (at least once: the job runs again).
- ``heartbeat`` (``--heartbeat PATH``): a file rewritten every ``heartbeat_interval`` seconds that
  says when storage last answered, read by ``azjobs check`` (azjobs/runtime/heartbeat.py).
"""

from __future__ import annotations

import threading
import time
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

    def _release_abandoned(self, budget_s: float) -> None:
        """The grace period is over: release the message of every job still running, within ``budget_s``.

        Each release closes the lease first (so no renewal races it) and gets one try; one that storage
        (or a renewal under way) does not let finish in time is left behind, and its message reappears
        when the lease ends.
        """
        with self._cond:
            running = list(self._active.values())
        released: list[str] = []

        def release(delivery: Any) -> None:
            if delivery.lease.closed:
                return  # settled meanwhile (a timed-out job's message was already released or poisoned)
            receipt = self.keeper.close(delivery.lease)  # waits for a renewal under way (bounded)
            if receipt is None:
                return  # settled meanwhile, or not ours any more
            status = self._settler.release(delivery.queue_client, delivery.queue, delivery.message.id, receipt, 0)
            if status == "ok":
                released.append(delivery.message.id)

        threads = []
        for delivery in running:  # on threads of their own: the stop waits for none past the budget
            thread = threading.Thread(target=release, args=(delivery,), name="azjobs-release", daemon=True)
            thread.start()
            threads.append(thread)
        until = time.monotonic() + budget_s
        for thread in threads:
            thread.join(max(0.0, until - time.monotonic()))
        with self._stats_lock:
            self.stats.abandoned_released = len(released)
        log.warning("released %d of %d running jobs' messages for another worker to run now", len(released),
                    len(running), extra={"action": "abandoned_released", "released": len(released),
                                         "running": len(running)})

    def _probe_storage(self) -> None:
        self._queue_clients[self.queues[0]].get_queue_properties()

    def _heartbeat_snapshot(self) -> dict[str, Any]:
        with self._stats_lock:
            handled = self.stats.handled
        return {"queues": self.queues, "running": self._running, "handled": handled,
                "stopping": self._stopping.is_set()}


__all__ = ["Scaling"]
