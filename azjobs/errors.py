"""The exceptions azjobs raises, in one place so callers can catch them by kind."""

from __future__ import annotations


class AzjobsError(Exception):
    """Base class of every error azjobs raises on purpose."""


class ConfigurationError(AzjobsError):
    """A job declaration, option or setting is invalid (raised where it is declared)."""


class ArgumentError(AzjobsError, TypeError):
    """A job argument cannot travel in a message (not JSON), or does not fit the job."""


class EnvelopeError(AzjobsError):
    """A message body is not a valid azjobs envelope.

    ``reason`` is a short stable key (``not_base64``, ``not_utf8``, ``not_json``,
    ``not_envelope``, ``unknown_version``, ...) that poison records and logs carry.
    """

    def __init__(self, message: str, reason: str = "not_envelope") -> None:
        super().__init__(message)
        self.reason = reason


class UnknownJobError(AzjobsError, LookupError):
    """A message names a job that is not registered in this process."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no job named {name!r} is registered (only registered jobs run from a message)")
        self.name = name


class PayloadTooLargeError(AzjobsError, ValueError):
    """An encoded message would exceed the Storage Queue message limit."""


class DelayError(AzjobsError, ValueError):
    """A delay or due time is out of range."""


class QueueNotFoundError(AzjobsError):
    """The storage queue does not exist (and was not to be created)."""

    def __init__(self, queue: str) -> None:
        super().__init__(
            f"queue {queue!r} does not exist; create it with `azjobs --create {queue}` "
            "or enqueue with create_queues enabled"
        )
        self.queue = queue


class EnqueueError(AzjobsError):
    """Sending a message failed; ``__cause__`` holds the storage error."""


class Fail(Exception):
    """Raise inside a job to give up now: no retry, straight to the poison queue."""


class UndiscoveredJobError(UnknownJobError, Fail):
    """A message names a job in a closed namespace (``Registry.close_namespace``) that is not registered:
    it is dead-lettered at once, with no retry (it is also a ``Fail``)."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(name)
        self.args = (f"no job named {name!r} is registered: {why}",)


class JobCancelled(AzjobsError):
    """The job was cancelled (``azjobs.cancel``): raised by ``current_job().raise_if_cancelled()`` so a job can
    stop at a safe point, and what an async job's run ends with once its task was cancelled."""

    def __init__(self, job_id: str = "") -> None:
        super().__init__(f"job {job_id} was cancelled" if job_id else "the job was cancelled")
        self.job_id = job_id


class JobTimeout(Exception):
    """A job ran past the job timeout (host.json ``functionTimeout`` or the worker's ``--timeout``)."""


class CredentialsRejected(AzjobsError):
    """Storage rejected the connection's credentials (a wrong key, an expired SAS): permanent."""


class StorageUnreachable(AzjobsError):
    """In burst mode, storage did not answer within ``burst_timeout``."""
