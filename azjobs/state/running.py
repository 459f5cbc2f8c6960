"""Running tracked jobs: each RUNNING record's lease is kept ahead of its run.

A RUNNING record carries ``LeaseUntil``; another message with the same job id that arrives
while that lease is live is deferred, not run (``StateStore._decide``). The lease is written
for ``RUNNING_LEASE`` (10 minutes) when the run starts, so a run longer than that would let
a duplicate start beside it. ``RunningJobs`` prevents that: while a run still holds its
message, its record's lease is extended once less than half of it is left.

"Still holds its message" is ``MessageInfo.held``: on the worker, the message's lease is not
closed or lost (the ``LeaseKeeper`` renews it while the job runs); on Functions, the
invocation has not ended and its ``functionTimeout`` has not passed (the host keeps the
message hidden until then). A run whose message is gone is extended no more, so the lease of
a run that stopped runs out as before and a redelivery can take over.

Cost: one conditional merge (through the state writer, so it shares transactions with the
other writes of its partition) per running job every ~5 minutes: at most 12 table writes an
hour for each job that runs longer than 5 minutes, none for shorter ones. The check itself is
in memory, every ``CHECK_S`` seconds, on one thread per process that exists only while
tracked jobs run.

Cancellation: every ``CANCEL_CHECK_S`` seconds, while tracked jobs run, the same thread reads
which of them were cancelled (``StateStore.cancel_requests``: one query per partition and 14
running jobs, only the RowKey, status and cancel flag selected) and sets the run's
``Cancellation`` (``current_job().cancelled``; an async job's task is cancelled). Cost: 12
queries a minute for a process with one tracked job running, the same 12 for up to 14 running
jobs of one partition, at most 12 × (8 + n / 14) for n running jobs: under one table call per
running job per minute once 14 or more run. A job learns of its cancel within about
``CANCEL_CHECK_S`` seconds (plus the query's own time).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from ..model.context import Cancellation
from ..model.secrets import describe, get_logger
from .entities import RUNNING_LEASE

if TYPE_CHECKING:
    from ..model.envelope import Envelope
    from .store import StateStore

log = get_logger("azjobs.state")

CHECK_S = 15.0  # how often (real time) the leases are looked at; a table call only when one is half gone
CANCEL_CHECK_S = 5.0  # how often (real time) the running jobs' records are read for a cancel


class Run:
    """One tracked delivery running in this process, and its record's lease as last written."""

    __slots__ = ("envelope", "message_id", "dequeue_count", "etag", "lease_until", "held", "extensions",
                 "cancellation")

    def __init__(self, envelope: "Envelope", message_id: str, dequeue_count: int, etag: str | None,
                 lease_until: datetime, held: Callable[[], bool], cancellation: Cancellation | None = None) -> None:
        self.envelope = envelope
        self.message_id = message_id
        self.dequeue_count = dequeue_count
        self.etag = etag
        self.lease_until = lease_until
        self.held = held
        self.extensions = 0
        self.cancellation = cancellation if cancellation is not None else Cancellation()


class RunningJobs:
    """The tracked runs of one process (``StateTracker.running``); extends their RUNNING leases."""

    def __init__(self, store: Callable[[], "StateStore | None"]) -> None:
        self._store = store
        self._runs: dict[int, Run] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        with self._cond:
            return len(self._runs)

    def runs(self) -> list[Run]:
        with self._cond:
            return list(self._runs.values())

    def add(self, envelope: "Envelope", message_id: str, dequeue_count: int, etag: str | None,
            lease_until: datetime | None, held: Callable[[], bool] | None,
            cancellation: Cancellation | None = None) -> Run | None:
        """Keep the lease of a run that just started; ``held`` says whether it still holds its message;
        ``cancellation`` is set when its record says it was cancelled."""
        if lease_until is None:
            return None
        run = Run(envelope, message_id, dequeue_count, etag, lease_until, held or (lambda: True), cancellation)
        with self._cond:
            self._runs[id(run)] = run
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="azjobs-state-leases", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return run

    def end(self, job_id: str) -> None:
        """The runs of ``job_id`` in this process ended (its outcome is being written)."""
        with self._cond:
            for key, run in list(self._runs.items()):
                if run.envelope.id == job_id:
                    del self._runs[key]

    def _loop(self) -> None:
        next_cancels, next_leases = time.monotonic() + CANCEL_CHECK_S, time.monotonic() + CHECK_S
        while True:
            with self._cond:
                if not self._runs:
                    self._thread = None
                    return
                left = min(next_cancels, next_leases) - time.monotonic()
                if left > 0:  # woken early (a run started): the cadence stays, whatever starts
                    self._cond.wait(left)
                    continue
                runs = list(self._runs.items())
            if time.monotonic() >= next_cancels:
                next_cancels = time.monotonic() + CANCEL_CHECK_S
                self._check_cancels([run for _, run in runs])
            if time.monotonic() >= next_leases:
                next_leases = time.monotonic() + CHECK_S
                for key, run in runs:
                    self._visit(key, run)

    def _check_cancels(self, runs: list[Run]) -> None:
        """One batched read of the running jobs' records; the cancelled ones are told."""
        waiting = [run for run in runs if not run.cancellation.is_set()]
        store = self._store()
        if not waiting or store is None:
            return
        ids = {run.envelope.id for run in waiting}
        try:
            cancelled = store.cancel_requests(ids)
        except Exception as exc:  # tried again at the next check
            log.warning("could not check %d running job(s) for a cancel: %s", len(ids), describe(exc),
                        extra={"action": "state_cancel_check_failed"})
            return
        for run in waiting:
            if run.envelope.id in cancelled:
                log.info("job %s %s was cancelled: its run is asked to stop", run.envelope.job, run.envelope.id,
                         extra={"action": "job_cancel_seen", "job": run.envelope.job, "job_id": run.envelope.id})
                run.cancellation.set()

    def _visit(self, key: int, run: Run) -> None:
        try:
            holding = bool(run.held())
        except Exception:  # noqa: BLE001 - a broken predicate must not stop the others
            holding = False
        if not holding:
            self._drop(key)
            return
        store = self._store()
        if store is None:
            return
        if run.lease_until - store.clock() > RUNNING_LEASE / 2:
            return
        try:
            extended = store.extend_lease(run.envelope.id, message_id=run.message_id,
                                          dequeue_count=run.dequeue_count, etag=run.etag)
        except Exception as exc:  # tried again at the next check; half a lease is left for it
            log.warning("could not extend the RUNNING lease of %s %s: %s", run.envelope.job, run.envelope.id,
                        describe(exc), extra={"action": "state_lease_extend_failed", "job": run.envelope.job,
                                              "job_id": run.envelope.id})
            return
        if extended is None:  # another delivery owns the record now (or it finished): nothing to keep
            self._drop(key)
            return
        run.etag, run.lease_until = extended
        run.extensions += 1
        log.debug("RUNNING lease of %s %s extended to %s", run.envelope.job, run.envelope.id, run.lease_until,
                  extra={"action": "state_lease_extended", "job": run.envelope.job, "job_id": run.envelope.id})

    def _drop(self, key: int) -> None:
        with self._cond:
            self._runs.pop(key, None)


__all__ = ["CANCEL_CHECK_S", "CHECK_S", "Run", "RunningJobs"]
