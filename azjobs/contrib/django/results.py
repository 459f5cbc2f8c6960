"""``get_result``: a Django ``TaskResult`` from the azjobs job state store.

Statuses map as follows (Django has four, the store seven):

=================  ====================================================================
store              Django
=================  ====================================================================
READY              READY
RUNNING            RUNNING
RETRYING           READY: an attempt failed and the next one is scheduled; ``errors``
                   holds what the failed attempts raised
SUCCESSFUL         SUCCESSFUL (``return_value`` is the task's JSON return value)
FAILED             FAILED: the last attempt raised, the task is in ``<queue>-poison``
DEAD_LETTERED      FAILED: dead-lettered without the task failing on that delivery
                   (a worker crashed or timed out on it ``maxDequeueCount`` times, ...)
CANCELLED          FAILED: cancelled (``azjobs.cancel``); Django 6 has no cancelled status
                   (FAILED is "unable to start" too) and no cancel API (no
                   ``supports_cancel``); ``errors`` holds only what earlier attempts raised
=================  ====================================================================

Each ``get_result`` is one Table Storage point read (a ``GET`` of one entity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from ...state.store import store_for as _client_store
from ...model.secrets import describe, get_logger
from ...state.entities import id_problem
from .known import JOB_PREFIX, discovered_task
from .times import to_django

log = get_logger("azjobs.django")


@dataclass
class History:
    """What earlier attempts of a job left in the store (empty when results are off or unknown)."""

    worker_ids: list[str] = field(default_factory=list)
    errors: list = field(default_factory=list)
    started_at: datetime | None = None


def _status(value: Any) -> Any:
    from django.tasks.base import TaskResultStatus

    from ...state import JobStatus

    return {
        JobStatus.READY: TaskResultStatus.READY,
        JobStatus.RUNNING: TaskResultStatus.RUNNING,
        JobStatus.RETRYING: TaskResultStatus.READY,
        JobStatus.SUCCESSFUL: TaskResultStatus.SUCCESSFUL,
        JobStatus.FAILED: TaskResultStatus.FAILED,
        JobStatus.DEAD_LETTERED: TaskResultStatus.FAILED,
        JobStatus.CANCELLED: TaskResultStatus.FAILED,
    }[JobStatus(value)]


def store_for(backend: Any) -> Any:
    """The job state store on the backend's storage account (its client's, built on first use)."""
    return _client_store(backend.client)


def with_ready_record(backend: Any, envelope: Any, at: datetime | None) -> Any:
    """Write the READY record of ``envelope`` (results on) and return the envelope to send.

    The message is marked tracked (``options.track``) so whichever worker runs it keeps the
    record, and carries the record's ETag so that worker's start is one conditional write. A
    store that cannot be reached does not stop the enqueue (the worker creates the record).
    """
    if not backend.results:
        return envelope
    from ...model.envelope import utcnow
    from ...model.tracking import ETAG_OPTION, TRACK_OPTION
    from ...storage.delays import plan_delivery

    envelope = envelope.evolve(options={**dict(envelope.options), TRACK_OPTION: True})
    now = utcnow()
    visible_at = now + timedelta(seconds=plan_delivery(at=at, now=now).visibility_timeout)
    try:
        etag = store_for(backend).enqueued(envelope, visible_at=visible_at)
    except Exception as exc:
        log.warning("READY record of %s %s not written (%s): sending anyway; the worker will create it",
                    envelope.job, envelope.id, describe(exc),
                    extra={"action": "state_unavailable", "job": envelope.job, "job_id": envelope.id,
                           "what": "ready"})
        return envelope
    return envelope.evolve(options={**dict(envelope.options), ETAG_OPTION: etag}) if etag else envelope


def forget_ready_record(backend: Any, envelope: Any) -> None:
    """Best effort, after a failed send: remove the READY record of a message that was never sent."""
    from ...model.tracking import ETAG_OPTION

    etag = envelope.options.get(ETAG_OPTION) if envelope.options else None
    if not backend.results or not etag:
        return
    try:
        store_for(backend).forget(envelope.id, etag)
    except Exception as exc:
        log.warning("could not remove the record of unsent task %s: %s", envelope.id, describe(exc),
                    extra={"action": "state_cleanup_failed", "job_id": envelope.id})


def _errors(record: Any) -> list:
    from django.tasks.base import TaskError

    return [TaskError(exception_class_path=error.exception_class_path, traceback=error.traceback)
            for error in record.errors]


def history(backend: Any, job_id: str) -> History:
    """Earlier attempts of ``job_id`` (worker ids, errors, first start) for the TaskResult a running task sees."""
    if not getattr(backend, "results", False):
        return History()
    try:
        record = store_for(backend).get(job_id)
    except Exception as exc:  # the task still runs; its context lacks the earlier attempts
        log.warning("could not read the state of job %s: %s", job_id, exc,
                    extra={"action": "django_history_unavailable", "job_id": job_id})
        return History()
    if record is None:
        return History()
    return History(list(record.worker_ids), _errors(record), to_django(record.started_at))


def read_result(backend: Any, result_id: str, discover_tasks: Callable[[], Any]) -> Any:
    """The TaskResult of ``result_id``; ``TaskResultDoesNotExist`` when the store has no such Django task.

    ``discover_tasks`` finds the tasks of ``INSTALLED_APPS`` when the record's task is not known yet.
    """
    from django.tasks.base import TaskResult
    from django.tasks.exceptions import TaskResultDoesNotExist

    why = id_problem(result_id) if isinstance(result_id, str) and result_id else None
    if why is not None:  # never sent to the table (its answer would be a 400 or a 500)
        raise TaskResultDoesNotExist(f"no result can have the id {result_id!r}: {why}")
    record = store_for(backend).get(result_id) if isinstance(result_id, str) and result_id else None
    if record is None:
        raise TaskResultDoesNotExist(f"no result with id {result_id!r} (unknown, or pruned after the retention)")
    if not record.job.startswith(JOB_PREFIX):
        raise TaskResultDoesNotExist(f"{result_id} is the azjobs job {record.job}, not a Django task")
    path = record.job[len(JOB_PREFIX):]
    task = discovered_task(path)
    if task is None:
        discover_tasks()  # the tasks modules of INSTALLED_APPS; a path from storage is never imported
        task = discovered_task(path) or loaded_task(path)
    if task is None:
        raise TaskResultDoesNotExist(f"{result_id} is a run of {path}, which is neither a task discovered in the "
                                     "tasks modules of INSTALLED_APPS nor one in a module this process imported")
    queue_name = _django_queue(backend, record.queue) or task.queue_name
    task = task.using(backend=backend.alias, queue_name=queue_name) if queue_name in backend.queues or \
        not backend.queues else task
    result = TaskResult(
        task=task, id=record.id, status=_status(record.status), enqueued_at=to_django(record.enqueued_at),
        started_at=to_django(record.started_at), finished_at=to_django(record.finished_at),
        last_attempted_at=to_django(record.last_attempted_at), args=list(record.args), kwargs=dict(record.kwargs),
        backend=backend.alias, errors=_errors(record), worker_ids=list(record.worker_ids),
    )
    object.__setattr__(result, "_return_value", record.return_value)
    return result


def loaded_task(path: str) -> Any | None:
    """The Task at ``path`` in a module this process has already imported (nothing is imported here)."""
    import sys

    from django.tasks import Task

    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        value: Any = module
        for name in parts[cut:]:
            value = getattr(value, name, None)
        if isinstance(value, Task) and value.module_path == path:
            return value
        return None
    return None


def _django_queue(backend: Any, azure_queue: str | None) -> str | None:
    """The Django queue name whose Azure queue is ``azure_queue`` (None if none of QUEUES maps there)."""
    for name in backend.queues:
        if backend.azure_queue(name) == azure_queue:
            return name
    return None


__all__ = ["History", "forget_ready_record", "history", "read_result", "store_for", "with_ready_record"]
