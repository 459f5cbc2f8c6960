"""What a job is: ``JobDefinition``, the registered unit a message names.

A definition holds the job's name, queue, target, signature and failure policy; declaring one
(``@azjobs.job``, ``azjobs.Job``) and enqueueing are the public API's business
(``azjobs.api``). Nothing here talks to Azure.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from ..errors import ArgumentError, ConfigurationError
from .envelope import Envelope
from .limits import JobLimits, job_limits
from .queue_names import validate_queue_name
from .retry import RetryPolicy, accepts_max_retries, build_policy

# Options a job may declare (decorator keywords or class attributes).
JOB_OPTIONS = ("queue", "name", "max_retries", "retry", "retry_on", "give_up_on", "on_dead_letter", "registry",
               "track", "unique", "schedule", "concurrency", "rate_limit", "limit_key", "limit")


class JobDefinition:
    """A registered job: its name, queue, target and failure policy."""

    def __init__(
        self,
        *,
        name: str,
        queue: str,
        call: Callable[..., Any],
        signature_of: Callable[..., Any],
        target_id: str,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        retry_on=None,
        give_up_on=None,
        on_dead_letter: Callable[..., Any] | None = None,
        track: bool | None = None,
        unique: bool = False,
        concurrency: int | None = None,
        rate_limit: str | None = None,
        limit_key: Any = None,
        limit: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"job name must be a non-empty string, got {name!r}")
        self.name = name
        self.queue = validate_queue_name(queue)
        self.call = call
        self.target_id = target_id
        self.is_async = inspect.iscoroutinefunction(signature_of)
        try:
            self.signature = inspect.signature(signature_of)
        except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
            self.signature = None
        self.retry_policy = build_policy(retry, max_retries, retry_on, give_up_on)
        if on_dead_letter is not None and not callable(on_dead_letter):
            raise ConfigurationError(f"on_dead_letter must be callable, got {on_dead_letter!r}")
        self.on_dead_letter = on_dead_letter
        if track is not None and not isinstance(track, bool):
            raise ConfigurationError(f"track= takes True, False or None, got {track!r} (job {name})")
        if not isinstance(unique, bool):
            raise ConfigurationError(f"unique= takes True or False, got {unique!r} (job {name})")
        if unique and track is False:
            raise ConfigurationError(f"job {name}: unique=True needs job state; it cannot be track=False")
        # Job state for this job (azjobs.state): True always, False never (even with state on for the
        # process), None as the process says.
        self.track = track
        self.unique = unique  # one unfinished job per name and arguments (azjobs.state)
        # Limits across every worker and instance (azjobs.limits): None when the job has none.
        self.limits: JobLimits | None = job_limits(name, {"concurrency": concurrency, "rate_limit": rate_limit,
                                                          "limit_key": limit_key, "limit": limit}, self.signature)

    def __repr__(self) -> str:
        return f"<job {self.name} queue={self.queue}>"

    def check_arguments(self, args: tuple, kwargs: Mapping[str, Any]) -> None:
        """Raise ArgumentError if the arguments do not bind to the job's signature."""
        if self.signature is None:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ArgumentError(f"arguments do not fit job {self.name}: {exc}") from None

    def run(self, args: tuple, kwargs: Mapping[str, Any]) -> Any:
        """Call the job (returns a coroutine for ``async def`` jobs)."""
        return self.call(*args, **kwargs)

    def policy_for(self, envelope: Envelope) -> RetryPolicy:
        """The retry policy for one message, with its per-call ``max_retries`` override."""
        override = envelope.options.get("max_retries") if envelope.options else None
        if isinstance(override, int) and not isinstance(override, bool) and override >= 0 \
                and accepts_max_retries(self.retry_policy):
            return build_policy(self.retry_policy, override)
        # A custom policy keeps its own limit (enqueue refuses the combination; an older
        # producer's message must not turn a failure into an immediate dead letter).
        return self.retry_policy


def check_job_options(options: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(options) - set(JOB_OPTIONS))
    if unknown:
        raise ConfigurationError(f"unknown job option(s) {', '.join(unknown)} on {where}; known: {', '.join(JOB_OPTIONS)}")


__all__ = ["JOB_OPTIONS", "JobDefinition", "check_job_options"]
