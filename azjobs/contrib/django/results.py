"""``get_result``: a Django ``TaskResult`` from the azjobs job state store.

Statuses map as follows (Django has four, the store six):

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
=================  ====================================================================

Each ``get_result`` is one Table Storage point read (a ``GET`` of one entity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ...secrets import get_logger
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
    }[JobStatus(value)]


def store_for(backend: Any) -> Any:
    """The job state store on the backend's storage account (built once per backend)."""
    if backend._store is None:
        from ...state import StateStore

        backend._store = StateStore.from_connection(backend.connection)
    return backend._store


def tracking_options(backend: Any) -> dict[str, Any]:
    """The envelope options that make the store record a task: all of them while results are on."""
    return {"track": True} if backend.results else {}


def _errors(record: Any) -> list:
    from django.tasks.base import TaskError

    return [TaskError(exception_class_path=error.exception_class_path, traceback=error.traceback)
            for error in record.errors]


def history(backend: Any, job_id: str) -> History:
    """Earlier attempts of ``job_id`` (worker ids, errors, first start) for the TaskResult a running task sees."""
    if not getattr(backend, "results", False):
        return History()
    from ...state import JobNotFoundError

    try:
        record = store_for(backend).get(job_id)
    except JobNotFoundError:
        return History()
    except Exception as exc:  # the task still runs; its context lacks the earlier attempts
        log.warning("could not read the state of job %s: %s", job_id, exc,
                    extra={"action": "django_history_unavailable", "job_id": job_id})
        return History()
    return History(list(record.worker_ids), _errors(record), to_django(record.started_at))


def read_result(backend: Any, result_id: str) -> Any:
    """The TaskResult of ``result_id``; ``TaskResultDoesNotExist`` when the store has no such Django task."""
    from django.tasks.base import TaskResult
    from django.tasks.exceptions import TaskResultDoesNotExist

    from ...state import JobNotFoundError
    from .discovery import JOB_PREFIX, discover_tasks, discovered_task

    try:
        record = store_for(backend).get(result_id)
    except JobNotFoundError:
        raise TaskResultDoesNotExist(result_id) from None
    if not record.job.startswith(JOB_PREFIX):
        raise TaskResultDoesNotExist(f"{result_id} is the azjobs job {record.job}, not a Django task")
    path = record.job[len(JOB_PREFIX):]
    task = discovered_task(path)
    if task is None:
        discover_tasks()  # the tasks modules of INSTALLED_APPS; a path from storage is never imported
        task = discovered_task(path)
    if task is None:
        raise TaskResultDoesNotExist(f"{result_id} is a run of {path}, which is not a task discovered in the "
                                     "tasks modules of INSTALLED_APPS")
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


def _django_queue(backend: Any, azure_queue: str | None) -> str | None:
    """The Django queue name whose Azure queue is ``azure_queue`` (None if none of QUEUES maps there)."""
    for name in backend.queues:
        if backend.azure_queue(name) == azure_queue:
            return name
    return None


__all__ = ["History", "history", "read_result", "store_for", "tracking_options"]
