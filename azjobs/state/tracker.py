"""Job state as the execution core sees it: which jobs are tracked, and the writes around a run.

The core decides; this writes (``Recorder.state`` is a ``StateTracker``). Nothing here fails
or duplicates a job: a store that cannot be reached is logged (``state_unavailable``) and the
job runs; its record catches up with the next write that gets through (every write carries
the job's identity, so it can recreate a missing entity).

A job is tracked when any of these says so: its message (``options.track``, set by a
producer with state on), its definition (``track=True``), or this process
(``azjobs.configure(state=True)`` or ``AZJOBS_STATE=1``).
"""

from __future__ import annotations

import os
import socket
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from ..secrets import describe, get_logger
from .record import JobStatus
from .store import Start, error_of

if TYPE_CHECKING:
    from ..core import Executor, MessageInfo
    from ..job import JobDefinition
    from ..message import Envelope
    from ..poison import ErrorInfo
    from .store import StateStore

log = get_logger("azjobs.state")

ENV_FLAG = "AZJOBS_STATE"
TRACK_OPTION = "track"
ETAG_OPTION = "state_etag"

_process_state: bool | None = None
_lock = threading.Lock()

RUN = Start("run")
# Outcome writes that failed (a Table outage) and are tried again after the next write that works.
MAX_PENDING = 10_000


def enable(on: bool = True) -> None:
    """Turn job state on (or off) for every job this process enqueues and runs."""
    global _process_state
    with _lock:
        _process_state = bool(on)


def enabled() -> bool:
    """Whether this process tracks every job: ``enable()``, else the ``AZJOBS_STATE`` setting."""
    if _process_state is not None:
        return _process_state
    return os.environ.get(ENV_FLAG, "").strip().lower() in ("1", "true", "yes", "on")


_worker_id: tuple[int, str] | None = None


def worker_id() -> str:
    """``host:pid`` of this process (looked up once per process)."""
    global _worker_id
    pid = os.getpid()
    if _worker_id is None or _worker_id[0] != pid:
        _worker_id = (pid, f"{socket.gethostname()}:{pid}")
    return _worker_id[1]


def is_tracked(envelope: "Envelope | None", definition: "JobDefinition | None" = None, client: Any = None) -> bool:
    if envelope is None:
        return False
    if envelope.options and envelope.options.get(TRACK_OPTION) is True:
        return True
    if definition is not None and getattr(definition, "track", False):
        return True
    client_flag = getattr(client, "state", None)
    if isinstance(client_flag, bool):
        return client_flag
    return enabled()


class StateTracker:
    """The state writes of one executor, each guarded: a store error is logged, never raised."""

    def __init__(self, owner: "Executor") -> None:
        self._owner = owner
        self._pending: deque[tuple["Envelope", str, Callable[[], None]]] = deque(maxlen=MAX_PENDING)
        self._pending_lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Outcome writes waiting for the store to come back."""
        return len(self._pending)

    def _outcome(self, envelope: "Envelope", what: str, write: Callable[[], None]) -> None:
        """Write an outcome; if the store fails, keep it and try again after the next write that works."""
        try:
            write()
        except Exception as exc:
            self._unavailable(envelope, what, exc)
            with self._pending_lock:
                self._pending.append((envelope, what, write))
            return
        self.flush()

    def flush(self) -> int:
        """Try the outcome writes kept during an outage, oldest first; stops at the first that fails."""
        done = 0
        while True:
            with self._pending_lock:
                if not self._pending:
                    break
                envelope, what, write = self._pending.popleft()
            try:
                write()
            except Exception:
                with self._pending_lock:
                    self._pending.appendleft((envelope, what, write))
                break
            done += 1
            log.info("job state of %s %s caught up (%s)", envelope.job, envelope.id, what,
                     extra={"action": "state_reconciled", "job": envelope.job, "job_id": envelope.id, "what": what})
        return done

    def _store(self) -> "StateStore | None":
        return getattr(self._owner.client, "state_store", None)

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

    def start(self, envelope: "Envelope", info: "MessageInfo", definition: "JobDefinition") -> Start:
        """RUNNING before the run; or skip (finished) / defer (running elsewhere)."""
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
            self._unavailable(envelope, "running", exc)
            return RUN
        return start

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

    def succeeded(self, envelope: "Envelope", definition: "JobDefinition", value: Any) -> None:
        if not self._tracked(envelope, definition):
            return
        store = self._store()
        if store is None:
            return
        self._outcome(envelope, "successful", lambda: store.succeeded(envelope, value))

    def retrying(self, envelope: "Envelope", error: BaseException, next_attempt: int) -> None:
        if not self._tracked(envelope):
            return
        store = self._store()
        if store is None:
            return
        recorded = error_of(error)
        self._outcome(envelope, "retrying", lambda: store.retrying(envelope, recorded, next_attempt))

    def dead_lettered(self, envelope: "Envelope | None", info: "MessageInfo", error_info: "ErrorInfo",
                      error: BaseException | None) -> None:
        """FAILED when the job's own code raised on its last attempt, else DEAD_LETTERED."""
        if envelope is None or not self._tracked(envelope):
            return
        store = self._store()
        if store is None:
            return
        status = JobStatus.FAILED if error_info.reason in ("job_failed", "fail") else JobStatus.DEAD_LETTERED
        recorded = error_of(error) if error is not None else error_of(
            None, class_path=error_info.type, message=error_info.message, traceback=error_info.traceback)
        message_id = info.message_id
        self._outcome(envelope, status.value.lower(),
                      lambda: store.dead_lettered(envelope, recorded, status, message_id))


__all__ = ["ENV_FLAG", "StateTracker", "enable", "enabled", "is_tracked", "worker_id"]
