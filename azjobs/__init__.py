"""azjobs: background jobs for Python on Azure Storage Queues.

Write a job once; run it on Azure Functions (``azjobs.blueprint()``) or on your own
machines (the ``azjobs`` worker) with the same behaviour.

The package is built in layers; each imports only from the layers below it (checked by
import-linter, see ``[tool.importlinter]`` in pyproject.toml)::

    contrib/django                      the Django Tasks backend
    cli/                                the azjobs command, one module per command
    dashboard/   testing                the web dashboard; test doubles
    runtime/     functions/             the hosts: the local worker; Azure Functions bindings
    hosting      api/                   what every host wires in; @job, enqueue, configure
    state/  workflows/  schedules/  poison/      the features
    telemetry/                          tracing and metrics (the other features may use it)
    execution/                          the core: one message in, one outcome out; its hooks
    storage/                            everything that talks to Azure
    model/   errors   version           the vocabulary: jobs, envelopes, retries, outcomes

The execution core never imports a feature: job state, telemetry and workflow steps take
part through its hooks (``azjobs.execution.hooks``), which every host registers through
``azjobs.hosting.standard_hooks()``.

``import azjobs`` is light: the public names below are loaded on first use (PEP 562), so an
app that only enqueues loads the model, the enqueue API and storage, and nothing of job
state, workflows, schedules, telemetry, the dashboard or the worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# public name -> the module that defines it
_LAZY = {
    **dict.fromkeys(("ArgumentError", "AzjobsError", "ConfigurationError", "DelayError", "EnqueueError",
                     "EnvelopeError", "Fail", "JobCancelled", "PayloadTooLargeError", "QueueNotFoundError",
                     "UnknownJobError"),
                    "azjobs.errors"),
    **dict.fromkeys(("Job", "JobDefinition", "job"), "azjobs.api.jobs"),
    **dict.fromkeys(("Call", "EnqueueManyResult"), "azjobs.api.calls"),
    "configure": "azjobs.api.configure",
    **dict.fromkeys(("JobContext", "current_job"), "azjobs.model.context"),
    "Envelope": "azjobs.model.envelope",
    **dict.fromkeys(("Registry", "registry"), "azjobs.model.registry"),
    **dict.fromkeys(("Backoff", "Fixed", "NoRetry", "RetryDecision", "RetryPolicy"), "azjobs.model.retry"),
    "QueueSettings": "azjobs.model.settings",
    "limit": "azjobs.model.limits",
    **dict.fromkeys(("Client", "default_client"), "azjobs.storage.client"),
    **dict.fromkeys(("Connection", "resolve_connection"), "azjobs.storage.connection"),
    **dict.fromkeys(("JobError", "JobRecord", "JobStatus"), "azjobs.state.record"),
    **dict.fromkeys(("JobFailedError", "JobNotFoundError"), "azjobs.state.errors"),
    **dict.fromkeys(("result", "wait"), "azjobs.state.reading"),
    **dict.fromkeys(("cancel", "cancel_async"), "azjobs.state.cancel"),
    **dict.fromkeys(("Periodic", "periodic"), "azjobs.schedules.declarations"),
    **dict.fromkeys(("WorkflowCancelled", "WorkflowFailed", "WorkflowHandle", "WorkflowNotFoundError"),
                    "azjobs.workflows.handle"),
    **dict.fromkeys(("chain", "group", "sleep"), "azjobs.workflows.spec"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'azjobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def blueprint(*args: Any, **kwargs: Any) -> Any:
    """An ``azure.functions.Blueprint`` with one queue trigger per queue (see azjobs.functions.blueprint)."""
    from .functions.blueprint import blueprint as _blueprint

    return _blueprint(*args, **kwargs)


if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from .api.calls import Call, EnqueueManyResult
    from .api.configure import configure
    from .api.jobs import Job, JobDefinition, job
    from .errors import (ArgumentError, AzjobsError, ConfigurationError, DelayError, EnqueueError, EnvelopeError, Fail,
                         JobCancelled, PayloadTooLargeError, QueueNotFoundError, UnknownJobError)
    from .model.context import JobContext, current_job
    from .model.envelope import Envelope
    from .model.limits import limit
    from .model.registry import Registry, registry
    from .model.retry import Backoff, Fixed, NoRetry, RetryDecision, RetryPolicy
    from .model.settings import QueueSettings
    from .schedules.declarations import Periodic, periodic
    from .state.errors import JobFailedError, JobNotFoundError
    from .state.cancel import cancel, cancel_async
    from .state.reading import result, wait
    from .state.record import JobError, JobRecord, JobStatus
    from .storage.client import Client, default_client
    from .storage.connection import Connection, resolve_connection
    from .workflows.handle import WorkflowCancelled, WorkflowFailed, WorkflowHandle, WorkflowNotFoundError
    from .workflows.spec import chain, group, sleep

__all__ = sorted([*_LAZY, "__version__", "blueprint"])
