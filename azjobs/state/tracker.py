"""Job state as the execution core sees it: which jobs are tracked, and the writes around a run.

The core decides; this writes. ``StateTracker`` is the executor hook of job state
(azjobs/execution/hooks.py): RUNNING before the run or a veto (skip a finished job, defer one
running under another live lease, cancel a cancelled one), SUCCESSFUL or CANCELLED before the delete, RETRYING after the retry
copy, FAILED or DEAD_LETTERED after the poison record. Nothing here fails
or duplicates a job: a store that cannot be reached is logged (``state_unavailable``) and the
job runs; its record catches up with the next write that gets through (every write carries
the job's identity, so it can recreate a missing entity).

Whether a job is tracked: its message says so first (``options.track``: True from a producer
with state on, False from a call or job with ``track=False``), then its definition (``track=True``
or ``track=False``; the default None follows on), then this process (``azjobs.configure(state=True)``
or ``AZJOBS_STATE=1``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from ..execution.hooks import Handling, Hook, Verdict
from ..model.secrets import describe, get_logger
from ..model.tracking import ENV_FLAG, ETAG_OPTION, enable, enabled, is_tracked
from .record import JobStatus
from .running import RunningJobs
from .entities import Start, error_of, is_permanent
from .store import store_for

if TYPE_CHECKING:
    from ..execution.executor import Executor
    from ..execution.recorder import DeadLetter
    from ..model.context import Cancellation
    from ..model.definition import JobDefinition
    from ..model.envelope import Envelope
    from ..model.outcome import MessageInfo
    from ..model.poison_record import ErrorInfo, PoisonRecord
    from .store import StateStore

log = get_logger("azjobs.state")


RUN = Start("run")
# Outcome writes that failed (a Table outage) and are tried again after the next write that works.
MAX_PENDING = 10_000
# A kept write that fails this many times while the table answers others is given up (logged), so it
# never holds the writes behind it.
MAX_TRIES = 5


_worker_id: tuple[int, str] | None = None


def worker_id() -> str:
    """``host:pid`` of this process (looked up once per process)."""
    global _worker_id
    pid = os.getpid()
    if _worker_id is None or _worker_id[0] != pid:
        _worker_id = (pid, f"{socket.gethostname()}:{pid}")
    return _worker_id[1]


class _Kept:
    """An outcome write kept for a later try."""

    __slots__ = ("envelope", "what", "write", "tries")

    def __init__(self, envelope: "Envelope", what: str, write: Callable[[], None]) -> None:
        self.envelope, self.what, self.write, self.tries = envelope, what, write, 0


class StateTracker(Hook):
    """The state writes of one executor, each guarded: a store error is logged, never raised."""

    def __init__(self, executor: "Executor") -> None:
        super().__init__(executor)
        self._owner = executor
        self._pending: deque[_Kept] = deque(maxlen=MAX_PENDING)
        self._pending_lock = threading.Lock()
        self.running_jobs = RunningJobs(self._store)  # tracked runs of this process: their leases kept ahead

    @property
    def pending(self) -> int:
        """Outcome writes waiting for the store to come back."""
        return len(self._pending)

    def _outcome(self, envelope: "Envelope", what: str, write: Callable[[], None]) -> None:
        """Write an outcome; if the store fails, keep it and try again after the next write that works.

        A write the table refused for good (``is_permanent``: the store already wrote its fallback, or
        could not) is logged and never kept.
        """
        try:
            write()
        except Exception as exc:
            if is_permanent(exc):
                self._rejected(envelope, what, exc)
            else:
                self._unavailable(envelope, what, exc)
                with self._pending_lock:
                    self._pending.append(_Kept(envelope, what, write))
                return
        self.flush()

    def flush(self) -> int:
        """Try the outcome writes kept during an outage, oldest first; how many landed.

        A pass stops when the table is unreachable again (the rest would fail the same way). A write
        that fails while the table answers goes to the back of the queue, so it never blocks the ones
        behind it, and is given up after ``MAX_TRIES`` such failures (``state_write_dropped``).
        """
        done = 0
        with self._pending_lock:
            count = len(self._pending)
        for _ in range(count):
            with self._pending_lock:
                if not self._pending:
                    break
                kept = self._pending.popleft()
            try:
                kept.write()
            except Exception as exc:
                if is_permanent(exc):
                    self._rejected(kept.envelope, kept.what, exc)
                    continue
                store = self._store()
                if store is not None and getattr(store, "in_outage", lambda: False)():
                    with self._pending_lock:
                        self._pending.appendleft(kept)
                    break
                kept.tries += 1
                if kept.tries >= MAX_TRIES:
                    log.error("job state of %s %s given up after %d tries (%s): %s; its record may lag",
                              kept.envelope.job, kept.envelope.id, kept.tries, kept.what, describe(exc),
                              extra={"action": "state_write_dropped", "job": kept.envelope.job,
                                     "job_id": kept.envelope.id, "what": kept.what})
                    continue
                with self._pending_lock:
                    self._pending.append(kept)
                continue
            done += 1
            log.info("job state of %s %s caught up (%s)", kept.envelope.job, kept.envelope.id, kept.what,
                     extra={"action": "state_reconciled", "job": kept.envelope.job, "job_id": kept.envelope.id,
                            "what": kept.what})
        return done

    def _rejected(self, envelope: "Envelope", what: str, exc: BaseException) -> None:
        log.error("job state of %s %s refused by the table (%s): %s; not tried again", envelope.job, envelope.id,
                  what, describe(exc),
                  extra={"action": "state_rejected", "job": envelope.job, "job_id": envelope.id, "what": what})

    def _store(self) -> "StateStore | None":
        return store_for(self._owner.client)

    def _tracked(self, envelope: "Envelope | None", definition: "JobDefinition | None" = None) -> bool:
        if envelope is None:
            return False
        if definition is None and envelope.job in self._owner.registry:
            definition = self._owner.registry.get(envelope.job)
        return is_tracked(envelope, definition, self._owner.client)

    def _unavailable(self, envelope: "Envelope", what: str, exc: BaseException) -> None:
        log.warning("job state of %s %s not written (%s): %s; the job goes on and its record may lag",
                    envelope.job, envelope.id, what, describe(exc),
                    extra={"action": "state_unavailable", "job": envelope.job, "job_id": envelope.id, "what": what})

    def start(self, envelope: "Envelope", info: "MessageInfo", definition: "JobDefinition",
              cancellation: "Cancellation | None" = None) -> Start:
        """RUNNING before the run; or skip (finished) / defer (running elsewhere) / cancel (cancelled).

        ``cancellation`` is set if the job is cancelled while it runs (``azjobs.state.running``)."""
        if not self._tracked(envelope, definition):
            return RUN
        store = self._store()
        if store is None:
            return RUN
        etag = envelope.options.get(ETAG_OPTION) if envelope.options else None
        if self._pending:
            self.flush()  # first: a kept SUCCESSFUL write may be this very job's
        try:
            start = store.start(envelope, message_id=info.message_id, dequeue_count=info.dequeue_count,
                                worker_id=getattr(info, "worker_id", None) or worker_id(),
                                etag=etag if isinstance(etag, str) else None)
        except Exception as exc:
            (self._rejected if is_permanent(exc) else self._unavailable)(envelope, "running", exc)
            return RUN
        if start.action == "run":
            self.running_jobs.add(envelope, info.message_id, info.dequeue_count, start.etag, start.lease_until,
                             getattr(info, "held", None) or self._until_timeout(), cancellation)
        return start

    def _until_timeout(self) -> Callable[[], bool]:
        """For a runner that says nothing of its message: held until the job timeout (functionTimeout)."""
        limit = getattr(self._owner.settings, "function_timeout", None)
        if limit is None:
            return lambda: True
        deadline = time.monotonic() + limit.total_seconds()
        return lambda: time.monotonic() < deadline

    def finished(self, envelope: "Envelope | None") -> bool:
        """True if the record says SUCCESSFUL (checked before a redelivery is dead-lettered)."""
        if not self._tracked(envelope):
            return False
        store = self._store()
        if store is None:
            return False
        try:
            return store.status_of(envelope.id) == JobStatus.SUCCESSFUL  # type: ignore[union-attr]
        except Exception as exc:
            self._unavailable(envelope, "check", exc)  # type: ignore[arg-type]
            return False

    def record_success(self, envelope: "Envelope", definition: "JobDefinition", value: Any) -> None:
        self.running_jobs.end(envelope.id)
        if not self._tracked(envelope, definition):
            return
        store = self._store()
        if store is None:
            return
        self._outcome(envelope, "successful", lambda: store.succeeded(envelope, value))

    def record_cancelled(self, envelope: "Envelope") -> None:
        """CANCELLED after a run that was cancelled while it ran (before its message is deleted)."""
        self.running_jobs.end(envelope.id)
        if not self._tracked(envelope):
            return
        store = self._store()
        if store is None:
            return
        self._outcome(envelope, "cancelled", lambda: store.cancelled(envelope))

    def record_retry(self, envelope: "Envelope", error: BaseException, next_attempt: int, *,
                     attempted: bool = False) -> None:
        """RETRYING; ``attempted`` for a delivery that counts as an attempt though the job never started."""
        self.running_jobs.end(envelope.id)
        if not self._tracked(envelope):
            return
        store = self._store()
        if store is None:
            return
        recorded = error_of(error)
        self._outcome(envelope, "retrying",
                      lambda: store.retrying(envelope, recorded, next_attempt, attempted=attempted))

    def record_failure(self, envelope: "Envelope | None", info: "MessageInfo", error_info: "ErrorInfo",
                       error: BaseException | None) -> None:
        """FAILED when the job's own code raised on its last attempt, else DEAD_LETTERED."""
        if envelope is not None:
            self.running_jobs.end(envelope.id)
        if envelope is None or not self._tracked(envelope):
            return
        store = self._store()
        if store is None:
            return
        status = JobStatus.FAILED if error_info.reason in ("job_failed", "fail") else JobStatus.DEAD_LETTERED
        recorded = error_of(error) if error is not None else error_of(
            None, class_path=error_info.type, message=error_info.message, traceback=error_info.traceback)
        message_id = info.message_id
        attempted = error_info.reason == "unknown_job"
        self._outcome(envelope, status.value.lower(),
                      lambda: store.dead_lettered(envelope, recorded, status, message_id, attempted=attempted))

    # -- the executor's hook ---------------------------------------------------------------
    def finished_before(self, handling: Handling) -> bool:
        return self.finished(handling.envelope)

    def before_run(self, handling: Handling) -> Verdict | None:
        assert handling.envelope is not None and handling.definition is not None
        start = self.start(handling.envelope, handling.info, handling.definition, handling.cancellation)
        return None if start.action == "run" else Verdict(start.action, start.why, start.defer_s)

    def succeeded(self, handling: Handling, value: Any) -> None:
        assert handling.envelope is not None and handling.definition is not None
        self.record_success(handling.envelope, handling.definition, value)

    def cancelled(self, handling: Handling) -> None:
        assert handling.envelope is not None
        self.record_cancelled(handling.envelope)

    def retrying(self, handling: Handling, error: BaseException, next_attempt: int, *, attempted: bool) -> None:
        assert handling.envelope is not None
        self.record_retry(handling.envelope, error, next_attempt, attempted=attempted)

    def dead_lettered(self, handling: Handling, decision: "DeadLetter", record: "PoisonRecord | None",
                      error: BaseException | None) -> None:
        self.record_failure(decision.envelope, decision.info, decision.error, error)

    def close(self, deadline: float | None = None) -> None:
        self.flush()


__all__ = ["ENV_FLAG", "StateTracker", "enable", "enabled", "is_tracked", "worker_id"]
