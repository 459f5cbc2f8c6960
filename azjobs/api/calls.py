"""One call of a job: per-call options, building the message, and sending it.

``job.options(delay=60, queue=...)`` returns a ``BoundCall``; its ``enqueue`` builds the
envelope (arguments checked against the signature and as JSON, in the caller's stack) and
sends it through the process-wide client. Features join in only when a call asks for them:
job state for a tracked or unique call (``azjobs.state``), OpenTelemetry's trace context when
the app has OpenTelemetry loaded (``azjobs.telemetry``), workflow steps for ``.s()``/``.si()``
(``azjobs.workflows``); nothing of them is imported otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from ..errors import ArgumentError, ConfigurationError, EnqueueError
from ..model.definition import JobDefinition
from ..model.envelope import Envelope
from ..model.queue_names import resolve_queue_name, validate_queue_name
from ..model.retry import accepts_max_retries, build_policy
from ..model.trace_context import check_given
from ..model.tracking import wants_state
from ..storage.client import client_for

# Options one call may override (``job.options(...)``); these travel with the message or steer the send.
CALL_OPTIONS = ("queue", "delay", "at", "max_retries", "trace", "client",
                "track", "unique", "unique_key", "unique_ttl")  # the last four: job state (azjobs.state)


def _traced(envelope: Envelope) -> Envelope:
    """The envelope with the caller's trace context: an explicit ``trace=`` checked, else a PRODUCER span's
    context when OpenTelemetry is in use (an app that traces has imported it before it enqueues)."""
    if envelope.trace:
        check_given(envelope.trace)
        return envelope
    if "opentelemetry" not in sys.modules:
        return envelope
    from ..telemetry.tracing import produced

    return produced(envelope)


@dataclass
class EnqueueManyResult:
    """Per-item outcome of ``enqueue_many``: ``results[i]`` is the job id or the exception."""

    envelopes: list[Envelope | None]
    results: list[Any] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r for r in self.results if isinstance(r, str)]

    @property
    def failures(self) -> list[tuple[int, BaseException]]:
        return [(i, r) for i, r in enumerate(self.results) if isinstance(r, BaseException)]

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> "EnqueueManyResult":
        if self.failures:
            first_index, first = self.failures[0]
            raise EnqueueError(
                f"{len(self.failures)} of {len(self.results)} messages were not sent; first (item {first_index}): {first}"
            ) from first
        return self


class Call:
    """Arguments for one job call in ``enqueue_many``: ``azjobs.Call(1, to="x")``."""

    __slots__ = ("args", "kwargs")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    @classmethod
    def coerce(cls, item: Any) -> "Call":
        if isinstance(item, Call):
            return item
        if isinstance(item, (tuple, list)):
            return cls(*item)
        if isinstance(item, dict):
            return cls(**item)
        return cls(item)

    def __repr__(self) -> str:
        return f"Call(args={self.args!r}, kwargs={self.kwargs!r})"


class BoundCall:
    """A job with per-call options; built by ``job.options(...)``."""

    def __init__(self, definition: JobDefinition, options: Mapping[str, Any]) -> None:
        declared = sorted(set(options) & {"concurrency", "rate_limit", "limit_key", "limit"})
        if declared:
            raise ConfigurationError(
                f"{', '.join(declared)} cannot be set per call (job {definition.name}): limits are declarations, "
                "on @azjobs.job(...) or azjobs.limit(...), so every worker and instance enforces the same ones"
            )
        unknown = sorted(set(options) - set(CALL_OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown call option(s) {', '.join(unknown)} for job {definition.name}; known: {', '.join(CALL_OPTIONS)}"
            )
        if "delay" in options and "at" in options:
            raise ConfigurationError("give either delay= or at=, not both")
        if "queue" in options:
            validate_queue_name(options["queue"])
        if "max_retries" in options:
            build_policy(max_retries=options["max_retries"])  # validates
            if not accepts_max_retries(definition.retry_policy):
                raise ConfigurationError(
                    f"job {definition.name} uses the custom retry policy {definition.retry_policy!r}; per-call "
                    "max_retries applies to the built-in policies (Backoff, Fixed, NoRetry) only: give the policy "
                    "its own limit, or enqueue through a job declared with another policy"
                )
        if any(key in options for key in ("track", "unique", "unique_key", "unique_ttl")):
            from ..state.enqueue import check_call_options

            check_call_options(options)
        self.definition = definition
        self._options = dict(options)

    def options(self, **overrides: Any) -> "BoundCall":
        return BoundCall(self.definition, {**self._options, **overrides})

    @property
    def queue(self) -> str:
        """The concrete queue (a ``%AppSetting%`` name is resolved from the environment at send time)."""
        return resolve_queue_name(self._options.get("queue", self.definition.queue))

    def _client(self):
        return client_for(self._options.get("client"))

    def build(self, args: tuple, kwargs: Mapping[str, Any]) -> Envelope:
        """The envelope for one call: arguments checked against the signature and as JSON."""
        self.definition.check_arguments(args, kwargs)
        options: dict[str, Any] = {}
        if "max_retries" in self._options:
            options["max_retries"] = self._options["max_retries"]
        if self._options.get("track") is False or (self.definition.track is False and "track" not in self._options):
            options["track"] = False  # the worker must not track it either, whatever its process says
        envelope = Envelope.build(
            self.definition.name, args, kwargs, queue=self.queue, options=options,
            trace=dict(self._options.get("trace") or {}),
        )
        return _traced(envelope)  # the caller's trace context travels in the message

    def enqueue(self, *args: Any, **kwargs: Any) -> str:
        """Send one message; returns the job id."""
        envelope = self.build(args, kwargs)
        client = self._client()
        if self._tracked(client):
            from ..state.enqueue import enqueue_tracked

            return enqueue_tracked(client, self.definition, self._options, envelope)
        client.send(envelope, delay=self._options.get("delay"), at=self._options.get("at"))
        return envelope.id

    def _tracked(self, client: Any) -> bool:
        """Whether this call writes job state (azjobs.state, loaded only then)."""
        return wants_state(self.definition, self._options, client)

    def _timed(self, **when: Any) -> "BoundCall":
        rest = {k: v for k, v in self._options.items() if k not in ("delay", "at")}
        return BoundCall(self.definition, {**rest, **when})

    def enqueue_in(self, delay: float | timedelta, *args: Any, **kwargs: Any) -> str:
        """Send one message that becomes visible after ``delay`` (seconds or timedelta)."""
        return self._timed(delay=delay).enqueue(*args, **kwargs)

    def enqueue_at(self, when: datetime, *args: Any, **kwargs: Any) -> str:
        """Send one message that becomes visible at ``when`` (timezone-aware)."""
        return self._timed(at=when).enqueue(*args, **kwargs)

    def enqueue_many(self, calls: Iterable[Any], *, max_workers: int = 8):
        """Send many messages concurrently; returns an EnqueueManyResult with per-item failures.

        Each item is an ``azjobs.Call``, a tuple/list of positional arguments, a dict of
        keyword arguments, or a single argument. An item whose arguments are invalid is
        reported as a failure; the others are still sent.
        """
        items: list[Envelope | BaseException] = []
        for item in calls:
            call = Call.coerce(item)
            try:
                items.append(self.build(call.args, call.kwargs))
            except ArgumentError as exc:
                items.append(exc)
        envelopes = [e for e in items if isinstance(e, Envelope)]
        client = self._client()
        if self._tracked(client):
            from ..state.enqueue import send_many_tracked

            sent = send_many_tracked(client, self.definition, self._options, envelopes, max_workers)
        else:
            sent = client.send_many(
                envelopes, delay=self._options.get("delay"), at=self._options.get("at"), max_workers=max_workers
            )
        sent_iter = iter(sent)
        results = [item if isinstance(item, BaseException) else next(sent_iter) for item in items]
        return EnqueueManyResult(envelopes=[e if isinstance(e, Envelope) else None for e in items], results=results)

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> str:
        from ..storage.aio import AsyncClient

        envelope = self.build(args, kwargs)
        client = self._client()
        if self._tracked(client):
            from ..state.enqueue import enqueue_tracked

            return await asyncio.to_thread(enqueue_tracked, client, self.definition, self._options, envelope)
        await AsyncClient(client).send(envelope, delay=self._options.get("delay"), at=self._options.get("at"))
        return envelope.id

    def s(self, *args: Any, **kwargs: Any):
        """A workflow step on this call's queue (``queue=``/``max_retries=`` options apply)."""
        from ..workflows.spec import Step

        return Step(self.definition, args, kwargs, queue=self._options.get("queue", self.definition.queue),
                    max_retries=self._options.get("max_retries"))

    def si(self, *args: Any, **kwargs: Any):
        """A workflow step that ignores the previous step's result."""
        from ..workflows.spec import Step

        return Step(self.definition, args, kwargs, queue=self._options.get("queue", self.definition.queue),
                    ignore_input=True, max_retries=self._options.get("max_retries"))


__all__ = ["CALL_OPTIONS", "BoundCall", "Call", "EnqueueManyResult"]
