"""Cancelling a workflow the azjobs worker runs (``handle.cancel()``, ``azjobs cancel WORKFLOW_ID``).

``terminate`` writes the workflow's ``terminated`` marker, then commits a last episode whose
status is ``Terminated`` (as Durable's ``terminate``): no episode follows it, so no step is
scheduled any more and late step reports, timers and a start message that had not run yet are
ignored. Steps already sent are stopped from here, in the process that works them
(``StepHook``, azjobs/workflows/hook.py): one not started reads the marker before it runs (one
point read per step delivery) and is deleted without running; a running one is watched by
``RunningSteps`` (one point read per workflow with steps running in the process, every
``CANCEL_CHECK_S`` seconds) and cancelled as a job is (``current_job().cancelled``; an async
step's task is cancelled). On Durable Functions, ``handle.cancel_async()`` with a durable client
terminates the orchestration instead.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..model.context import Cancellation
from ..model.envelope import utcnow
from ..model.secrets import describe, get_logger
from . import replay as events
from .history import (ENDED, TASK_COMPLETED, TASK_FAILED, TASK_SCHEDULED, TERMINATED, Episode,
                      History, HistoryStore)

log = get_logger("azjobs.workflows")

REASON = "cancelled (handle.cancel() or azjobs cancel)"
CANCEL_CHECK_S = 5.0
COMMIT_ATTEMPTS = 20


def terminate(store: HistoryStore, workflow_id: str, reason: str = REASON) -> tuple[str, list[int]] | None:
    """Cancel the workflow: its status after (``Terminated``, or how it had already ended) and the task ids of
    the steps that were in flight; None when it was never enqueued in ``store``."""
    for _ in range(COMMIT_ATTEMPTS):
        history = store.load(workflow_id)
        if not history.episodes and not history.enqueued:
            return None
        if history.status in ENDED:
            return str(history.status), []
        store.mark_terminated(workflow_id, reason)  # first: a step that reads it does not start
        now = utcnow()
        episode = Episode(seq=history.next_seq, sources=[], sent=True, status=TERMINATED,
                          events=[events.orchestrator_started(now),
                                  events.execution_completed(now, TERMINATED, reason=reason),
                                  events.orchestrator_completed(now)])
        if store.commit(workflow_id, episode):
            in_flight = _in_flight(history)
            log.info("workflow %s cancelled (%d step(s) in flight)", workflow_id, len(in_flight),
                     extra={"action": "workflow_cancelled", "workflow_id": workflow_id, "in_flight": len(in_flight)})
            return TERMINATED, in_flight
    raise RuntimeError(f"workflow {workflow_id}: {COMMIT_ATTEMPTS} commit conflicts in a row; not cancelled")


def _in_flight(history: History) -> list[int]:
    ended = {e.get("TaskScheduledId") for e in history.events if e.get("EventType") in (TASK_COMPLETED, TASK_FAILED)}
    return [e["EventId"] for e in history.events
            if e.get("EventType") == TASK_SCHEDULED and e["EventId"] not in ended]


class RunningSteps:
    """The workflow steps running in this process; a step whose workflow was cancelled is told to stop."""

    def __init__(self, store: Callable[[], HistoryStore | None]) -> None:
        self._store = store
        self._runs: dict[int, tuple[str, Cancellation]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._next = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._runs)

    def add(self, workflow_id: str, cancellation: Cancellation) -> int:
        with self._cond:
            self._next += 1
            self._runs[self._next] = (workflow_id, cancellation)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="azjobs-workflow-cancels", daemon=True)
                self._thread.start()
            return self._next

    def end(self, key: int) -> None:
        with self._cond:
            self._runs.pop(key, None)

    def _loop(self) -> None:
        next_check = time.monotonic() + CANCEL_CHECK_S
        while True:
            with self._cond:
                if not self._runs:
                    self._thread = None
                    return
                left = next_check - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                runs = list(self._runs.values())
            next_check = time.monotonic() + CANCEL_CHECK_S
            self.check(runs)

    def check(self, runs: list[tuple[str, Cancellation]]) -> None:
        store = self._store()
        if store is None:
            return
        for workflow_id in {workflow_id for workflow_id, cancellation in runs if not cancellation.is_set()}:
            try:
                terminated = store.terminated(workflow_id)
            except Exception as exc:  # tried again at the next check
                log.warning("could not check workflow %s for a cancel: %s", workflow_id, describe(exc),
                            extra={"action": "workflow_cancel_check_failed", "workflow_id": workflow_id})
                continue
            if terminated:
                for other, cancellation in runs:
                    if other == workflow_id:
                        cancellation.set()


__all__ = ["CANCEL_CHECK_S", "REASON", "RunningSteps", "terminate"]
