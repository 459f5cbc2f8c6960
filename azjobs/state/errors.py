"""The errors of reading job state: an unknown id, and a job that finished without success."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import AzjobsError

if TYPE_CHECKING:
    from .record import JobRecord


class JobNotFoundError(AzjobsError, LookupError):
    """No record of this job id: never enqueued with state on, pruned after its retention, or a typo."""

    def __init__(self, job_id: str, table: str | None = None, *, why: str | None = None) -> None:
        where = f" in table {table!r}" if table else ""
        if why:
            # An id Table Storage cannot hold as a key: no job ever had it, and nothing was asked of the table.
            text = f"no job can have the id {job_id!r}: {why} (job ids are what enqueue returned)"
        else:
            text = (f"no record of job {job_id!r}{where}: it was not enqueued with job state on (azjobs.configure("
                    "state=True) or track=True), its record was pruned after the retention period, or the id is wrong")
        super().__init__(text)
        self.job_id = job_id
        self.why = why


class JobFailedError(AzjobsError):
    """``azjobs.wait`` on a job that FAILED, was DEAD_LETTERED or CANCELLED; ``.record`` is its JobRecord."""

    def __init__(self, record: "JobRecord") -> None:
        last = record.errors[-1] if record.errors else None
        what = f"{last.exception_class_path}: {last.message}" if last else "no error was recorded"
        if record.status.value == "CANCELLED":
            what = "it was cancelled (azjobs.cancel)"
        super().__init__(f"job {record.job} {record.id} {record.status.value} after {record.attempts} attempt(s): {what}")
        self.record = record


class StateUnavailable(AzjobsError):
    """The state store could not be reached or answered with an error (``__cause__`` says which)."""


class StateRejected(StateUnavailable):
    """The table refused a write for good (a 4xx such as 400 PropertyValueTooLarge, or a key it cannot hold):
    sending it again cannot succeed, so it is never kept for a later try."""


__all__ = ["JobFailedError", "JobNotFoundError", "StateRejected", "StateUnavailable"]
