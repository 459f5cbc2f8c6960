"""What the store keeps of one job: ``JobRecord``, its ``JobStatus`` and the ``JobError``s of its attempts."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class JobStatus(str, enum.Enum):
    """Where a job is. The values are the names, so ``JobStatus.SUCCESSFUL == "SUCCESSFUL"``.

    - ``READY``: enqueued, not started (or waiting for its due time);
    - ``RUNNING``: an attempt is running;
    - ``RETRYING``: an attempt failed and the next one is scheduled;
    - ``SUCCESSFUL``: an attempt returned; the job will not run again;
    - ``FAILED``: the job's code raised on its last attempt (no retries left, ``azjobs.Fail``,
      or the retry policy gave up); it was dead-lettered to ``<queue>-poison`` and will not
      run again unless replayed;
    - ``DEAD_LETTERED``: azjobs dead-lettered the message without the job failing on that
      delivery (it crashed or timed out its worker ``maxDequeueCount`` times, names an unknown
      job, or its arguments no longer fit); it will not run again unless replayed;
    - ``CANCELLED``: cancelled (``azjobs.cancel``) before it ran, or while it ran and that run has
      ended; nothing of it runs any more and it will not run again.

    A RUNNING job that was asked to stop stays RUNNING (``JobRecord.cancel_requested``) until its
    run ends: then CANCELLED, or SUCCESSFUL / FAILED when the cancel crossed its end.
    """

    READY = "READY"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCESSFUL = "SUCCESSFUL"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value


FINISHED = frozenset({JobStatus.SUCCESSFUL, JobStatus.FAILED, JobStatus.DEAD_LETTERED, JobStatus.CANCELLED})


@dataclass(frozen=True)
class JobError:
    """One failed attempt: what it raised. Text is redacted (no keys, SAS signatures or passwords)."""

    exception_class_path: str
    message: str
    traceback: str

    def to_dict(self) -> dict[str, str]:
        return {"exception_class_path": self.exception_class_path, "message": self.message,
                "traceback": self.traceback}

    @classmethod
    def from_dict(cls, data: Any) -> "JobError":
        data = data if isinstance(data, dict) else {}
        return cls(str(data.get("exception_class_path", "")), str(data.get("message", "")),
                   str(data.get("traceback", "")))


@dataclass(frozen=True)
class JobRecord:
    """The durable record of one job id, as the state store holds it.

    Times are timezone-aware UTC datetimes, or None when the job has not got there.
    ``attempts`` counts the runs that started (``len(worker_ids)`` unless the list was
    trimmed); ``worker_ids`` are ``host:pid`` for the ``azjobs`` worker and the invocation
    id on Azure Functions. ``return_value`` is the job's JSON return value once SUCCESSFUL. ``cancel_requested``: the job was
    cancelled (``azjobs.cancel``); while RUNNING, its run was asked to stop.
    """

    id: str
    job: str
    queue: str | None
    status: JobStatus
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_attempted_at: datetime | None = None
    attempts: int = 0
    worker_ids: list[str] = field(default_factory=list)
    return_value: Any = None
    errors: list[JobError] = field(default_factory=list)
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    # Why ``args``/``kwargs`` are empty though the call had arguments ("" when they were kept).
    arguments_note: str = ""
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        """True once the job will not run again: SUCCESSFUL, FAILED, DEAD_LETTERED or CANCELLED."""
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601 text): what ``azjobs status --json`` prints."""

        def when(moment: datetime | None) -> str | None:
            return moment.isoformat().replace("+00:00", "Z") if moment is not None else None

        return {
            "id": self.id, "job": self.job, "queue": self.queue, "status": self.status.value,
            "enqueued_at": when(self.enqueued_at), "started_at": when(self.started_at),
            "finished_at": when(self.finished_at), "last_attempted_at": when(self.last_attempted_at),
            "attempts": self.attempts, "worker_ids": list(self.worker_ids), "return_value": self.return_value,
            "errors": [error.to_dict() for error in self.errors], "args": list(self.args),
            "kwargs": dict(self.kwargs), "cancel_requested": self.cancel_requested,
            **({"arguments_note": self.arguments_note} if self.arguments_note else {}),
        }


# What a record says of arguments too large for a Table string property (64 KiB: 32K UTF-16 units).
ARGUMENTS_NOT_KEPT = "not kept: over 32K characters (a Table string property holds 32K UTF-16 units)"

__all__ = ["ARGUMENTS_NOT_KEPT", "FINISHED", "JobError", "JobRecord", "JobStatus"]
