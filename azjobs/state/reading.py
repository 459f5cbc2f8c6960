"""Reading job state: ``azjobs.result(job_id)`` and ``azjobs.wait(job_id, timeout=...)``."""

from __future__ import annotations

import time
from typing import Any

from .errors import JobFailedError, JobNotFoundError
from .record import JobRecord, JobStatus
from .entities import id_problem
from .store import store_for

DEFAULT_POLL_S = 0.5


def _store(client: Any = None):
    if client is None:
        from ..storage.client import default_client

        client = default_client()
    return store_for(client)


def result(job_id: str, *, client: Any = None) -> JobRecord:
    """The record of ``job_id``; ``JobNotFoundError`` if there is none.

    An id no job can have (``/ \\ # ?`` or a control character in it, over 1 KiB) raises
    ``JobNotFoundError`` saying why, without a call to the table.

    ``client`` (an ``azjobs.Client``) names the storage account; the default client otherwise.
    """
    if not isinstance(job_id, str) or not job_id.strip():
        raise ValueError(f"a job id is a non-empty string (what enqueue returned), got {job_id!r}")
    why = id_problem(job_id)
    if why is not None:  # checked here, never sent: the table's answer to such a key is a 400 or a 500
        raise JobNotFoundError(job_id, why=why)
    store = _store(client)
    record = store.get(job_id)
    if record is None:
        raise JobNotFoundError(job_id, store.table_name)
    return record


def wait(job_id: str, timeout: float | None = None, *, poll_s: float = DEFAULT_POLL_S, client: Any = None) -> Any:
    """Wait until ``job_id`` is finished; its return value if SUCCESSFUL.

    Raises ``JobFailedError`` (``.record``) for a FAILED, DEAD_LETTERED or CANCELLED job,
    ``TimeoutError`` when ``timeout`` seconds pass first (None: wait for ever), and
    ``JobNotFoundError`` at once for an id with no record.
    """
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be zero or more seconds, got {timeout!r}")
    if poll_s <= 0:
        raise ValueError(f"poll_s must be more than zero, got {poll_s!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        record = result(job_id, client=client)
        if record.status is JobStatus.SUCCESSFUL:
            return record.return_value
        if record.finished:
            raise JobFailedError(record)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {record.job} {job_id} is still {record.status.value} after {timeout:g}s")
            time.sleep(min(poll_s, left))
        else:
            time.sleep(poll_s)


__all__ = ["result", "wait"]
