"""azjobs: background jobs for Python on Azure Storage Queues.

Write a job once; run it on Azure Functions (``azjobs.blueprint()``) or on your own
machines (the ``azjobs`` worker) with the same behaviour.
"""

from .api.calls import Call
from .api.jobs import Job, JobDefinition, job
from .errors import (
    ArgumentError,
    AzjobsError,
    ConfigurationError,
    DelayError,
    EnqueueError,
    EnvelopeError,
    Fail,
    PayloadTooLargeError,
    QueueNotFoundError,
    UnknownJobError,
)
from .model.context import JobContext, current_job
from .model.envelope import Envelope
from .model.registry import Registry, registry
from .model.retry import Backoff, Fixed, NoRetry, RetryDecision, RetryPolicy
from .model.settings import QueueSettings
from .schedules import Periodic, periodic
from .state import JobError, JobFailedError, JobNotFoundError, JobRecord, JobStatus, result, wait
from .storage.client import Client, default_client
from .api.calls import EnqueueManyResult
from .api.configure import configure
from .storage.connection import Connection, resolve_connection
from .version import __version__
from .workflows import WorkflowFailed, WorkflowHandle, WorkflowNotFoundError, chain, group, sleep


def blueprint(*args, **kwargs):
    """An ``azure.functions.Blueprint`` with one queue trigger per queue (see azjobs.functions.blueprint)."""
    from .functions.blueprint import blueprint as _blueprint

    return _blueprint(*args, **kwargs)


__all__ = [
    "ArgumentError", "AzjobsError", "Backoff", "Call", "Client", "ConfigurationError", "Connection", "DelayError",
    "EnqueueError", "EnqueueManyResult", "Envelope", "EnvelopeError", "Fail", "Fixed", "Job", "JobContext", "JobDefinition",
    "NoRetry", "PayloadTooLargeError", "Periodic", "QueueNotFoundError", "QueueSettings", "Registry", "RetryDecision",
    "RetryPolicy", "UnknownJobError", "__version__", "blueprint", "configure", "current_job", "default_client", "job", "periodic", "registry",
    "resolve_connection",
    "JobError", "JobFailedError", "JobNotFoundError", "JobRecord", "JobStatus", "result", "wait",
    "WorkflowFailed", "WorkflowHandle", "WorkflowNotFoundError", "chain", "group", "sleep",
]
