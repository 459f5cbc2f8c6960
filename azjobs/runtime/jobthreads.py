"""Job threads of the local runner: each takes fetched messages in order and hands them to the core.

A job thread survives anything a job raises. The coroutine of an ``async def`` job runs on the
worker's one event-loop thread while its job thread waits for it. A job past its timeout gets
the host's outcome (released, or poisoned at ``maxDequeueCount``); a sync job's thread cannot
be killed, so it is left to finish, its result discarded, and a replacement thread keeps ``-c``
jobs running; when as many are stuck as ``-c``, the worker stops so a fresh process can start.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..errors import JobTimeout
from ..execution.executor import Prepared, Redeliver
from ..model.outcome import Result
from ..execution.recorder import describe
from ..model.secrets import get_logger
from .settlement import Delivery
from .timeouts import Watched

log = get_logger("azjobs.worker")


class _Replaced(Exception):
    """This job thread's job timed out: its outcome is discarded; ``replaced``: another thread took its place."""

    def __init__(self, replaced: bool) -> None:
        super().__init__("replaced" if replaced else "discarded")
        self.replaced = replaced


class JobThreads:
    """The running half of ``Worker`` (a mixin: ``self`` is the worker)."""

    def _start_job_thread(self) -> None:
        with self._cond:
            self._thread_seq += 1
            index = self._thread_seq
        thread = threading.Thread(target=self._job_loop, name=f"azjobs-job-{index}", daemon=True)
        thread.start()
        self._threads.append(thread)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    # -- running -----------------------------------------------------------
    def _job_loop(self) -> None:
        while True:
            delivery = self._ready.get()
            if delivery is None:
                return
            if self._stopping.is_set() or not self._claim():
                self.settlement.release_unstarted(delivery, lambda d=delivery: self._done(d))
                continue
            try:
                self._work(delivery)
            except _Replaced as done:
                if done.replaced:
                    return  # a replacement thread runs jobs now
            except BaseException:  # never lose a job thread
                log.exception("unexpected error settling message %s", delivery.message.id,
                              extra={"action": "worker_error", "queue": delivery.queue})

    def _work(self, delivery: Delivery) -> None:
        message, info = delivery.message, delivery.info
        with self._cond:
            self._running += 1
            self._active[id(delivery)] = delivery  # released at once if still running when the grace ends
            if self._running > self.stats.peak_running:
                self.stats.peak_running = self._running
        settled = False
        try:
            try:
                step = self.executor.begin(message.content, info, encoded=True)
                if isinstance(step, Result):
                    outcome: Result | BaseException = step
                else:
                    outcome = self._run(delivery, step)
            except Redeliver as exc:
                outcome = exc
            except _Replaced:
                settled = True  # the timeout settled this delivery; its thread is done
                raise
            except Exception as exc:  # the core itself failed: the host would release the message too
                log.error("execution core failed on message %s of %s: %s", message.id, delivery.queue,
                          describe(exc), exc_info=True,
                          extra={"action": "core_failed", "queue": delivery.queue, "message_id": message.id})
                outcome = exc
            settled = True
            self.settlement.settle(delivery, outcome, lambda: self._done(delivery))
        finally:
            with self._cond:
                self._running -= 1
                self._active.pop(id(delivery), None)
            if not settled:
                self._done(delivery)  # a no-op when the timeout already settled it

    def _run(self, delivery: Delivery, step: Prepared) -> Result:
        """Run the job under the timeout watch, then let the core record its outcome."""
        if self._watchdog is None:
            return self.executor.finish(step, self.executor.run(step, loop=self._loop))
        watched = self._watchdog.watch(delivery, step)
        try:
            run = self.executor.run(step, loop=self._loop, on_future=watched.set_future)
        finally:
            self._watchdog.unwatch(watched)
        if watched.finish():
            env = step.envelope
            log.warning("job %s %s returned %.1fs after its timeout; its outcome is discarded (the message was "
                        "already released)", env.job, env.id, run.duration_s - (self.timeout_s or 0),
                        extra={"action": "timed_out_job_returned", "job": env.job, "job_id": env.id,
                               "queue": delivery.queue})
            thread = threading.current_thread()
            with self._cond:
                watched.returned = True
                replaced = getattr(thread, "_azjobs_stuck", False)
                if replaced:
                    thread._azjobs_stuck = False  # type: ignore[attr-defined]
                    self.stats.stuck -= 1
            raise _Replaced(replaced)
        return self.executor.finish(step, run)

    # -- the job timeout ---------------------------------------------------
    def _timed_out(self, slot: Watched, future: Any) -> None:
        delivery, env = slot.delivery, slot.step.envelope
        self._count("timed_out")
        error = JobTimeout(f"job {env.job} {env.id} ran longer than the job timeout of {self.timeout_s:g}s "
                           "(host.json functionTimeout or --timeout)")
        log.error("job %s %s on %s timed out after %gs (attempt %d, dequeue count %d): %s", env.job, env.id,
                  delivery.queue, self.timeout_s, env.attempt, delivery.info.dequeue_count,
                  "cancelled" if future is not None else "its thread is left to finish and is replaced",
                  extra={"action": "job_timed_out", "job": env.job, "job_id": env.id, "queue": delivery.queue,
                         "attempt": env.attempt, "timeout_s": self.timeout_s})
        self.executor.raised(slot.step, error, "timed_out")
        if future is not None:
            future.cancel()
        # The hung thread keeps its place until it returns; another one takes over its work.
        with self._cond:
            still_inside = not slot.returned  # else its thread already took its place back
            if still_inside:
                slot.thread._azjobs_stuck = True  # type: ignore[attr-defined]
                self.stats.stuck += 1
            stuck = self.stats.stuck
        if still_inside:
            if not self._stopping.is_set():
                self._start_job_thread()
            if stuck >= self.concurrency and not self._stopping.is_set():
                with self._cond:
                    self.stats.restart_needed = True
                log.error("%d threads are stuck in timed-out jobs (as many as -c): stopping so a fresh process can "
                          "take over", stuck, extra={"action": "worker_restart_needed", "stuck": stuck})
                self.stop()
        # The host's outcome for a timed-out invocation: release, or poison at maxDequeueCount.
        threading.Thread(target=self.settlement.redeliver, args=(delivery, error, lambda: self._done(delivery)),
                         name="azjobs-timeout", daemon=True).start()

    def _done(self, delivery: Delivery) -> None:
        """The delivery's settlement was attempted: it leaves the in-flight count (once)."""
        with self._cond:
            if delivery.finished:
                return
            delivery.finished = True
        self.inflight.done(delivery.queue)
        if self._stopping.is_set() or not self.inflight.count():
            with self._cond:
                self._cond.notify_all()  # the main thread waits for in-flight work to end

    def _stuck_threads(self) -> set[threading.Thread]:
        with self._cond:
            return {thread for thread in self._threads if getattr(thread, "_azjobs_stuck", False)}


__all__ = ["JobThreads"]
