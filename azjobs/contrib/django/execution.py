"""Running one Django task inside the azjobs execution core.

The core decodes the message, checks the arguments against the task's signature, runs the
job and writes the retry copy or poison record. What is Django's is done here, around the
task function: the ``TaskResult`` the task and the signals see (with the real attempt
number), a ``TaskContext`` for ``takes_context=True`` tasks, the ``task_started`` and
``task_finished`` signals, and closing unusable or expired database connections before and
after each task, as Django does around a request.

``task_finished`` is sent after every attempt. Its ``task_result.status`` says where the
task stands: SUCCESSFUL; READY when the attempt failed and the retry policy schedules
another (Django has no "retrying" status); FAILED when it will not run again.

A task whose return value JSON cannot carry FAILED, as in Django's own ImmediateBackend, and
is not retried (``ReturnValueError`` is an ``azjobs.Fail``): every attempt would return such a
value again, after repeating the task's side effects.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import traceback
from types import SimpleNamespace
from typing import Any, Callable

from ...errors import Fail
from ...model.context import current_job
from ...model.envelope import parse_time
from ...model.secrets import get_logger
from .known import OPTIONS_KEY
from .results import history
from .times import now, to_django

log = get_logger("azjobs.django")


def worker_id() -> str:
    """This process, as ``TaskResult.worker_ids`` names it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def task_runner(task: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The job callable for a discovered task, and what its signature is checked against.

    ``takes_context`` tasks are called with a ``TaskContext`` first; the message carries only
    the task's own arguments, so the signature checked drops ``context``.
    """
    signature = inspect.signature(task.func)
    if task.takes_context:
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])

    if inspect.iscoroutinefunction(task.func):
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await _run_async(task, args, kwargs)
    else:
        def call(*args: Any, **kwargs: Any) -> Any:
            return _run_sync(task, args, kwargs)

    call.__signature__ = signature  # type: ignore[attr-defined]
    call.__name__ = call.__qualname__ = task.func.__name__
    call.__module__ = task.func.__module__
    return call, call


class ReturnValueError(Fail, TypeError):
    """A Django task returned a value JSON cannot carry: the task FAILED on that attempt, with no retry."""


def json_return_value(task: Any, value: Any) -> Any:
    """``value`` as Django normalizes a task's return value (tuples to lists, UTF-8 bytes to str), checked to
    be strict JSON (no NaN or infinity, which the job state store cannot record either).

    Raises ``ReturnValueError`` (from what made it fail) for anything else.
    """
    from django.utils.json import normalize_json

    try:
        value = normalize_json(value)
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ReturnValueError(f"task {task.module_path} returned a value JSON cannot carry ({exc}); a Django "
                               "task's return value must be JSON (the task is failed, not retried)") from exc
    return value


# -- one run ------------------------------------------------------------------
class _Run:
    """The TaskResult of one attempt, and how to move it along."""

    def __init__(self, discovered: Any, args: tuple, kwargs: dict) -> None:
        from django.tasks import task_backends
        from django.tasks.base import TaskResult, TaskResultStatus

        job = current_job()
        self.job = job
        sent = job.options.get(OPTIONS_KEY) if isinstance(job.options.get(OPTIONS_KEY), dict) else {}
        alias = sent.get("backend") or discovered.backend
        queue_name = sent.get("queue") or discovered.queue_name
        self.backend = task_backends[alias]
        self.task = discovered.using(backend=alias, queue_name=queue_name)
        earlier = history(self.backend, job.id)
        started = now()
        ids = list(earlier.worker_ids[: job.attempt - 1])
        ids = [""] * (job.attempt - 1 - len(ids)) + ids
        current = earlier.worker_ids[job.attempt - 1] if len(earlier.worker_ids) >= job.attempt else worker_id()
        self.result = TaskResult(
            task=self.task, id=job.id, status=TaskResultStatus.RUNNING,
            enqueued_at=to_django(parse_time(job.enqueued_at)),
            started_at=earlier.started_at or started, finished_at=None, last_attempted_at=started,
            args=list(args), kwargs=dict(kwargs), backend=alias, errors=list(earlier.errors),
            worker_ids=ids + [current],
        )

    @property
    def sender(self) -> type:
        return type(self.backend)

    def call_args(self, args: tuple) -> tuple:
        if self.task.takes_context:
            from django.tasks.base import TaskContext

            return (TaskContext(task_result=self.result), *args)
        return args

    def succeeded(self, value: Any) -> Any:
        from django.tasks.base import TaskResultStatus

        value = json_return_value(self.task, value)  # not JSON: FAILED, as in Django's own backends
        object.__setattr__(self.result, "_return_value", value)
        object.__setattr__(self.result, "finished_at", now())
        object.__setattr__(self.result, "status", TaskResultStatus.SUCCESSFUL)
        return value

    def failed(self, error: BaseException) -> None:
        from django.tasks.base import TaskError, TaskResultStatus

        kind = type(error)
        self.result.errors.append(TaskError(exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                                            traceback="".join(traceback.format_exception(error))))
        retried = _will_retry(self.job, error)
        object.__setattr__(self.result, "status", TaskResultStatus.READY if retried else TaskResultStatus.FAILED)
        if not retried:
            object.__setattr__(self.result, "finished_at", now())

    def finished_receivers_failed(self, responses: list) -> None:
        for receiver, response in responses:
            if isinstance(response, BaseException):
                log.error("a task_finished receiver (%r) raised for task %s %s: %s: %s", receiver,
                          self.task.module_path, self.job.id, type(response).__name__, response,
                          extra={"action": "django_signal_failed", "job": self.job.job, "job_id": self.job.id})


def _will_retry(job: Any, error: BaseException) -> bool:
    """What the core is about to decide for this failure (the job's retry policy, as ``finish`` asks it)."""
    from ...model.registry import registry

    try:
        definition = registry.get(job.job)
        return definition.policy_for(SimpleNamespace(options=job.options)).decide(error, job.attempt).should_retry
    except Exception:  # the core handles a broken policy by dead-lettering
        return False


def _run_sync(discovered: Any, args: tuple, kwargs: dict) -> Any:
    from django.db import close_old_connections
    from django.tasks.signals import task_finished, task_started

    close_old_connections()
    try:
        run = _Run(discovered, args, kwargs)
        task_started.send(run.sender, task_result=run.result)
        try:
            value = run.succeeded(run.task.call(*run.call_args(args), **kwargs))
        except BaseException as error:
            run.failed(error)
            run.finished_receivers_failed(task_finished.send_robust(run.sender, task_result=run.result))
            raise
        run.finished_receivers_failed(task_finished.send_robust(run.sender, task_result=run.result))
        return value
    finally:
        close_old_connections()


async def _run_async(discovered: Any, args: tuple, kwargs: dict) -> Any:
    from asgiref.sync import sync_to_async
    from django.db import close_old_connections
    from django.tasks.signals import task_finished, task_started

    await sync_to_async(close_old_connections)()
    try:
        run = await sync_to_async(_Run)(discovered, args, kwargs)
        await task_started.asend(run.sender, task_result=run.result)
        try:
            value = run.succeeded(await run.task.acall(*run.call_args(args), **kwargs))
        except BaseException as error:
            run.failed(error)
            run.finished_receivers_failed(await task_finished.asend_robust(run.sender, task_result=run.result))
            raise
        run.finished_receivers_failed(await task_finished.asend_robust(run.sender, task_result=run.result))
        return value
    finally:
        await sync_to_async(close_old_connections)()


__all__ = ["ReturnValueError", "json_return_value", "task_runner", "worker_id"]
