"""The errors of reading job state: an unknown id, and a job that finished without success."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import AzjobsError

if TYPE_CHECKING:
    from .record import JobRecord


class JobNotFoundError(AzjobsError, LookupError):
    """No record of this job id: never enqueued with state on, pruned after its retention, or a typo."""

    def __init__(self, job_id: str, table: str | None = None) -> None:
        where = f" in table {table!r}" if table else ""
        super().__init__(
            f"no record of job {job_id!r}{where}: it was not enqueued with job state on (azjobs.configure(state=True) "
            "or track=True), its record was pruned after the retention period, or the id is wrong"
        )
        self.job_id = job_id


class JobFailedError(AzjobsError):
    """``azjobs.wait`` on a job that FAILED or was DEAD_LETTERED; ``.record`` is its JobRecord."""

    def __init__(self, record: "JobRecord") -> None:
        last = record.errors[-1] if record.errors else None
        what = f"{last.exception_class_path}: {last.message}" if last else "no error was recorded"
        super().__init__(f"job {record.job} {record.id} {record.status.value} after {record.attempts} attempt(s): {what}")
        self.record = record


class StateUnavailable(AzjobsError):
    """The state store could not be reached or answered with an error (``__cause__`` says which)."""


__all__ = ["JobFailedError", "JobNotFoundError", "StateUnavailable"]
