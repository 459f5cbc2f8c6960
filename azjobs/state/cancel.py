"""Cancelling a job: ``azjobs.cancel(job_id)`` and ``await azjobs.cancel_async(job_id)``.

Only a tracked job (job state on, or ``track=True``) can be cancelled: its record is what every
delivery of its message checks before it runs. A job not yet started (READY, RETRYING, waiting
for its due time) becomes CANCELLED at once and never runs; a running one is asked to stop
(``current_job().cancelled``; an async job's task is cancelled) and becomes CANCELLED when its
run ends. A finished job is left as it is. See ``azjobs.state.cancels`` for the races.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..model.secrets import get_logger
from .cancels import CANCELLED, FINISHED, REQUESTED
from .entities import id_problem
from .errors import JobNotFoundError
from .reading import _store
from .record import JobRecord

log = get_logger("azjobs.state")

_UNTRACKED = ("only a tracked job can be cancelled (enqueued with job state on: azjobs.configure(state=True), "
              "AZJOBS_STATE=1, or track=True); nothing was cancelled")


def cancel(job_id: str, *, client: Any = None) -> JobRecord:
    """Cancel ``job_id``; its record as the cancel left it (see ``cancel_job``)."""
    return cancel_job(job_id, client=client)[0]


def cancel_job(job_id: str, *, client: Any = None) -> tuple[JobRecord, str]:
    """Cancel ``job_id``; its record as the cancel left it, and what the cancel did: ``"cancelled"``,
    ``"requested"`` or ``"finished"`` (nothing changed).

    ``CANCELLED`` when it was not running (it never runs now); ``RUNNING`` with
    ``cancel_requested`` when it runs (it becomes CANCELLED once that run ends, or SUCCESSFUL /
    FAILED if the cancel crossed its end); a finished job's record unchanged. Raises
    ``JobNotFoundError`` for an id with no record (an untracked job, a typo, a pruned record) and
    ``StateUnavailable`` when the table cannot be reached.
    """
    if not isinstance(job_id, str) or not job_id.strip():
        raise ValueError(f"a job id is a non-empty string (what enqueue returned), got {job_id!r}")
    why = id_problem(job_id)
    if why is not None:
        raise JobNotFoundError(job_id, why=why)
    store = _store(client)
    answer = store.cancel(job_id)
    if answer is None:
        error = JobNotFoundError(job_id, store.table_name)
        error.args = (f"{error}; {_UNTRACKED}",)
        raise error
    record, what = answer
    if what == CANCELLED:
        log.info("job %s %s cancelled before it ran", record.job, job_id,
                 extra={"action": "job_cancel_requested", "job": record.job, "job_id": job_id, "running": False})
    elif what == REQUESTED:
        log.info("job %s %s cancelled while it runs: its run is asked to stop", record.job, job_id,
                 extra={"action": "job_cancel_requested", "job": record.job, "job_id": job_id, "running": True})
    else:
        assert what == FINISHED
    return record, what


async def cancel_async(job_id: str, *, client: Any = None) -> JobRecord:
    """``cancel`` for asyncio apps (the table calls run in a worker thread)."""
    return await asyncio.to_thread(cancel, job_id, client=client)


__all__ = ["CANCELLED", "FINISHED", "REQUESTED", "cancel", "cancel_async", "cancel_job"]
