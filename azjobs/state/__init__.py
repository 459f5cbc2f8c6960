"""Job state in Table Storage: status and results, duplicate-proof runs, unique jobs.

Off by default; on for a process with ``azjobs.configure(state=True)`` (or the
``AZJOBS_STATE=1`` setting), or per job with ``track=True``. See the README section
"Job state and results".
"""

from .errors import JobFailedError, JobNotFoundError, StateRejected, StateUnavailable
from .reading import result, wait
from .record import JobError, JobRecord, JobStatus
from .entities import DEFAULT_RETENTION, DEFAULT_TABLE
from .store import StateStore
from ..model.tracking import enable, enabled

__all__ = ["DEFAULT_RETENTION", "DEFAULT_TABLE", "JobError", "JobFailedError", "JobNotFoundError", "JobRecord",
           "JobStatus", "StateRejected", "StateStore", "StateUnavailable", "enable", "enabled", "result", "wait"]
