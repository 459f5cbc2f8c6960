"""Reading job state: ``azjobs.result(job_id)`` and ``azjobs.wait(job_id, timeout=...)``."""

from __future__ import annotations

import time
from typing import Any

from ..storage.diagnosis import AUTH, storage_error_kind, storage_problem, storage_target
from .errors import JobFailedError, JobNotFoundError, StateRejected, StateUnavailable
from .record import JobRecord, JobStatus
from .entities import id_problem
from .store import store_for

DEFAULT_POLL_S = 0.5


def _client(client: Any = None) -> Any:
    if client is None:
        from ..storage.client import default_client

        client = default_client()
    return client


def _store(client: Any = None):
    """The job state store of ``client`` (the default client when None)."""
    return store_for(_client(client))


def _one_line(exc: StateUnavailable, client: Any, table: str | None, job_id: str) -> StateUnavailable:
    """``exc`` saying its cause as the ``azjobs`` command does: one line naming the table endpoint tried
    (never the SDK's retry story); the same class, the SDK error kept as ``__cause__``."""
    cause, connection = exc.__cause__, getattr(client, "connection", None)
    if connection is None:
        return exc
    target = storage_target(connection, service="table")
    if cause is None:  # the store's pause after a failure: no call was made
        return type(exc)(f"state table {table} at {target.endpoint}: {exc}")
    problem = type(exc)(storage_problem(cause, target, f"reading job {job_id} from state table {table}"))
    problem.__cause__ = cause
    return problem


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
    client = _client(client)
    store = store_for(client)
    try:
        record = store.get(job_id)
    except StateUnavailable as exc:
        raise _one_line(exc, client, store.table_name, job_id) from exc.__cause__
    if record is None:
        raise JobNotFoundError(job_id, store.table_name)
    return record


def wait(job_id: str, timeout: float | None = None, *, poll_s: float = DEFAULT_POLL_S, client: Any = None) -> Any:
    """Wait until ``job_id`` is finished; its return value if SUCCESSFUL.

    Raises ``JobFailedError`` (``.record``) for a FAILED, DEAD_LETTERED or CANCELLED job,
    ``TimeoutError`` when ``timeout`` seconds pass first (None: wait for ever), and
    ``JobNotFoundError`` at once for an id with no record.

    A state table that does not answer (or answers 5xx) is asked again until the timeout, and
    ``StateUnavailable`` (one line: which endpoint, why) is raised only if it still does not answer
    then; rejected credentials and a refused read raise at once.
    """
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be zero or more seconds, got {timeout!r}")
    if poll_s <= 0:
        raise ValueError(f"poll_s must be more than zero, got {poll_s!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    unavailable: StateUnavailable | None = None
    while True:
        try:
            record = result(job_id, client=client)
        except StateRejected:
            raise
        except StateUnavailable as exc:
            if exc.__cause__ is not None and storage_error_kind(exc.__cause__) == AUTH:
                raise  # a wrong key does not mend itself
            # A blip (or the store's pause after one): the last error that said why is what a timeout raises.
            if exc.__cause__ is not None or unavailable is None:
                unavailable = exc
            record = None
        if record is not None:
            unavailable = None
            if record.status is JobStatus.SUCCESSFUL:
                return record.return_value
            if record.finished:
                raise JobFailedError(record)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                if record is None and unavailable is not None:
                    raise unavailable
                assert record is not None
                raise TimeoutError(f"job {record.job} {job_id} is still {record.status.value} after {timeout:g}s")
            time.sleep(min(poll_s, left))
        else:
            time.sleep(poll_s)


__all__ = ["result", "wait"]
