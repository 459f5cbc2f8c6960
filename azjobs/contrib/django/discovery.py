"""Which Django tasks may run from a message: the ones discovered in this process.

Discovery imports the ``tasks`` module of every app in ``INSTALLED_APPS`` (and any module
the worker's ``-i`` names) and registers each module-level ``django.tasks.Task`` found there
as an azjobs job named ``django:<module path>``. A message can only name one of those: the
path it carries is looked up, never imported. The ``django:`` names are then closed
(``Registry.close_namespace``): a message naming any other ``django:`` path goes straight to
the poison queue and runs nothing (``azjobs poison requeue`` replays it once a deploy has
the task).

Every queue of every ``AzureQueueBackend`` is added to the registry's queues, so the
worker's default queues and ``azjobs.blueprint()``'s triggers cover the queues a task can
be sent to with ``.using(queue_name=...)``, not only the ones tasks declare.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Iterable

from ...model.definition import JobDefinition
from ...model.registry import Registry
from ...model.registry import registry as default_registry
from ...model.secrets import get_logger
from .execution import task_runner
from .known import JOB_PREFIX, _lock, _tasks, discovered_task, job_name

log = get_logger("azjobs.django")



def tasks_modules() -> list[str]:
    """The ``<app>.tasks`` modules that exist among ``INSTALLED_APPS``, in app order."""
    from importlib.util import find_spec

    from django.apps import apps

    found = []
    for config in apps.get_app_configs():
        name = f"{config.name}.tasks"
        try:
            if find_spec(name) is not None:
                found.append(name)
        except ModuleNotFoundError:  # pragma: no cover - an app package that vanished
            continue
    return found


def azure_backends() -> list[Any]:
    """Every configured backend that is an ``AzureQueueBackend`` (instantiated as Django does)."""
    from django.tasks import task_backends

    return [backend for backend in task_backends.all() if getattr(type(backend), "azjobs_backend", False) is True]


def discover_tasks(modules: Iterable[str | ModuleType] = (), *, registry: Registry | None = None) -> list[str]:
    """Import the ``tasks`` modules of ``INSTALLED_APPS`` and ``modules``; register their Tasks.

    Returns the module paths of the tasks registered by this call and earlier ones. Calling
    it again is cheap and idempotent.
    """
    registry = default_registry if registry is None else registry
    loaded = [importlib.import_module(name) for name in tasks_modules()]
    loaded += [importlib.import_module(m) if isinstance(m, str) else m for m in modules]
    backends = azure_backends()
    for module in loaded:
        for value in list(vars(module).values()):
            if _is_module_level_task(value):
                _register(value, registry, backends)
    for backend in backends:
        for queue in backend.azure_queues():
            registry.add_queue(queue)
    registry.close_namespace(
        JOB_PREFIX,
        "only the Django tasks discovered in the tasks modules of INSTALLED_APPS (and the worker's -i modules) "
        "may run; this path is not one of them",
    )
    return sorted(_tasks)


def _is_module_level_task(value: Any) -> bool:
    from django.tasks import Task

    if not isinstance(value, Task):
        return False
    func = value.func
    qualname = getattr(func, "__qualname__", "")
    return "<locals>" not in qualname and "<lambda>" not in qualname and "." not in qualname


def _register(task: Any, registry: Registry, backends: list[Any]) -> None:
    with _lock:
        known = _tasks.get(task.module_path)
        if known is not None and known.func is task.func:
            return
        backend = _backend_for(task, backends)
        if backend is None:
            return
        call, signature_of = task_runner(task)
        registry.register(JobDefinition(
            name=job_name(task), queue=backend.azure_queue(task.queue_name), call=call, signature_of=signature_of,
            target_id=job_name(task), **backend.retry_options(),
        ))
        _tasks[task.module_path] = task
    log.debug("discovered Django task %s", task.module_path,
              extra={"action": "django_task_discovered", "task": task.module_path})


def _backend_for(task: Any, backends: list[Any]) -> Any | None:
    """The task's own backend if it is an Azure one, else the first Azure backend (``.using(backend=...)``
    can send it there); None when no backend is an AzureQueueBackend."""
    for backend in backends:
        if backend.alias == task.backend:
            return backend
    return backends[0] if backends else None


def _forget_all() -> None:
    """Tests only: forget what was discovered (the registry entries are the caller's to remove)."""
    with _lock:
        _tasks.clear()


__all__ = ["JOB_PREFIX", "azure_backends", "discover_tasks", "discovered_task", "job_name", "tasks_modules"]
