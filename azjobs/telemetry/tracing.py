"""Trace context through the message: a PRODUCER span at enqueue, a CONSUMER span per delivery.

A queue trigger gets no trace context from its producer (the Functions host carries it only
for HTTP, Service Bus and Event Hubs triggers), so azjobs carries it in the envelope's
``trace`` field as W3C ``traceparent``/``tracestate``:

- building a message (``enqueue``, ``enqueue_many``, ``enqueue_async``) starts and ends a
  ``create <queue>`` span (kind PRODUCER) under the caller's current span and injects its
  context into the envelope; a ``trace=`` given with ``job.options(trace=...)`` is kept as is;
- the execution core works each delivery inside a ``process <queue>`` span (kind CONSUMER)
  whose parent is that context, on Functions and in the worker alike; the job runs with it
  as the current span, so what the job enqueues (a workflow's next step) continues the trace;
- retry copies and deferral hops keep the envelope's ``trace``: every attempt of a job is a
  child of the same producer span, told apart by ``azjobs.job.attempt``.

The field is W3C Trace Context, written and read with its own propagator whatever the global
one (``OTEL_PROPAGATORS``) is: OpenTelemetry's default also injects the caller's W3C Baggage,
which may hold anything (a user's e-mail address) and would then sit in the message, its retry
copies and its poison record. Baggage travels only when the process opts in
(``propagate_baggage()``, ``azjobs.configure(propagate_baggage=True)`` or
``AZJOBS_PROPAGATE_BAGGAGE=1``), on the producer and the consumer alike. ``carried`` is the one
rule for what the field holds, applied when it is written and when a message is decoded.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ArgumentError
from ..version import __version__
from .otel import api

if TYPE_CHECKING:
    from ..model.envelope import Envelope

TRACER_NAME = "azjobs"
SYSTEM = "azure_storage_queues"

# Span attribute names (OpenTelemetry messaging conventions where one fits, azjobs.* otherwise).
SYSTEM_ATTR = "messaging.system"
OPERATION = "messaging.operation.type"
QUEUE = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
JOB_NAME = "azjobs.job.name"
JOB_ID = "azjobs.job.id"
ATTEMPT = "azjobs.job.attempt"
DEQUEUE_COUNT = "azjobs.message.dequeue_count"
OUTCOME = "azjobs.outcome"

# What the envelope's ``trace`` field may hold: these keys only, each an ASCII string within these bounds
# (characters, list-members; 0 is no member bound). traceparent version 00 is 55 characters; tracestate
# has at most 32 list-members and 512 characters is what every vendor must pass on (W3C Trace Context);
# baggage has the limits OpenTelemetry's W3C Baggage propagator applies (8192 bytes, 180 list-members).
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
BAGGAGE = "baggage"
BOUNDS = {TRACEPARENT: (55, 0), TRACESTATE: (512, 32), BAGGAGE: (8192, 180)}
BAGGAGE_SETTING = "AZJOBS_PROPAGATE_BAGGAGE"

_baggage: bool | None = None  # propagate_baggage(); None: the AZJOBS_PROPAGATE_BAGGAGE setting decides


def propagate_baggage(on: bool = True) -> None:
    """Carry W3C Baggage in the messages this process sends, and read it from those it works (off by default).

    Both ends must opt in: a consumer that has not drops a message's baggage when it decodes it.
    """
    global _baggage
    _baggage = bool(on)


def baggage_propagated() -> bool:
    """Whether baggage travels: ``propagate_baggage()``, else the ``AZJOBS_PROPAGATE_BAGGAGE`` setting."""
    if _baggage is not None:
        return _baggage
    return os.environ.get(BAGGAGE_SETTING, "").strip().lower() in ("1", "true", "yes", "on")


def _members(text: str) -> int:
    return sum(1 for member in text.split(",") if member.strip(" \t"))


def _refusal(key: str, value: Any, baggage: bool) -> str:
    """Why ``key: value`` is not carried in a trace field ("" when it is)."""
    if key not in BOUNDS:
        return f"{key!r} is not carried (only {TRACEPARENT}, {TRACESTATE} and, with baggage on, {BAGGAGE})"
    if key == BAGGAGE and not baggage:
        return (f"{BAGGAGE!r} is carried only with baggage propagation on (azjobs.configure(propagate_baggage=True) "
                f"or {BAGGAGE_SETTING}=1, in the producer and the worker)")
    if not isinstance(value, str) or not value or not value.isascii():
        return f"{key!r} must be a non-empty ASCII string, got {type(value).__name__}"
    chars, members = BOUNDS[key]
    if len(value) > chars:
        return f"{key!r} is {len(value):,} characters, over its {chars:,}"
    if members and _members(value) > members:
        return f"{key!r} has {_members(value)} list-members, over its {members}"
    return ""


def carried(trace: Any, baggage: bool | None = None) -> dict[str, str]:
    """The part of a ``trace`` field azjobs carries; the rest is dropped, without a word.

    Each of ``traceparent``, ``tracestate`` (only beside a traceparent) and ``baggage`` (only when
    ``baggage``, by default ``baggage_propagated()``) is kept when it is an ASCII string within its
    ``BOUNDS``; other keys, other types and longer values are dropped, and a field that is not an
    object is no context at all. The field is telemetry: what does not fit costs a message its
    trace, never its run (as a malformed ``scheduled_at`` is dropped). Only the known keys are
    looked up, so a field with thousands of keys costs no more than its JSON.
    """
    if not isinstance(trace, Mapping) or not trace:
        return {}
    on = baggage_propagated() if baggage is None else baggage
    out: dict[str, str] = {}
    for key in BOUNDS:
        value = trace.get(key)
        if value is not None and not _refusal(key, value, on):
            out[key] = value
    if TRACEPARENT not in out:
        out.pop(TRACESTATE, None)
    return out


def tracer() -> Any:
    otel = api()
    return None if otel is None else otel.trace.get_tracer(TRACER_NAME, __version__)


def configured() -> bool:
    """Whether a tracer provider was installed (an SDK): until then spans would be no-ops, so none is made."""
    otel = api()
    return otel is not None and not isinstance(otel.trace.get_tracer_provider(), otel.trace.ProxyTracerProvider)


def produced(envelope: "Envelope") -> "Envelope":
    """The envelope with the context of a new ``create <queue>`` PRODUCER span in its ``trace`` field.

    Unchanged without OpenTelemetry, when the caller gave ``trace=`` explicitly (checked against
    ``carried``'s rule: ArgumentError for what a worker would drop), or when there is nothing to
    propagate (no SDK configured and no current trace).
    """
    if envelope.trace:
        _check_given(envelope.trace)
        return envelope
    carrier = produced_trace(envelope.queue or "", envelope.job, envelope.id, envelope.attempt)
    return envelope.evolve(trace=carrier) if carrier else envelope


def produced_trace(queue: str, job: str, job_id: str, attempt: int = 1) -> dict[str, str]:
    """The W3C context of a new ``create <queue>`` PRODUCER span under the current one ({} without an SDK).

    For a message that is not an envelope: a workflow's start message carries it in its spec,
    and each of the workflow's steps continues it.
    """
    otel = api()
    if otel is None or not configured():
        return {}
    span = tracer().start_span(f"create {queue}", kind=otel.SpanKind.PRODUCER, attributes={
        SYSTEM_ATTR: SYSTEM, OPERATION: "create", QUEUE: queue, JOB_NAME: job, JOB_ID: job_id, ATTEMPT: attempt})
    try:
        carrier: dict[str, str] = {}
        context = otel.trace.set_span_in_context(span)
        otel.trace_context.inject(carrier, context=context)
        if baggage_propagated():
            otel.baggage_propagator.inject(carrier, context=context)
    finally:
        span.end()
    return carried(carrier)  # a tracestate over its bounds is not sent: a worker would drop it


def parent_context(trace: Mapping[str, str] | None) -> Any:
    """The OpenTelemetry context a message's ``trace`` field names (an empty context without one)."""
    otel = api()
    carrier = carried(trace)
    # Extract into an empty context: the delivery continues the producer's trace, not whatever
    # happens to be current in the thread that received it. Baggage only when this process opted in.
    context = otel.trace_context.extract(carrier, context=otel.context.Context())
    if BAGGAGE in carrier:
        context = otel.baggage_propagator.extract(carrier, context=context)
    return context


def _check_given(trace: Mapping[str, Any]) -> None:
    """ArgumentError naming the first part of an explicit ``trace=`` that ``carried`` would drop."""
    on = baggage_propagated()
    for key, value in trace.items():
        reason = _refusal(str(key), value, on)
        if reason:
            raise ArgumentError(f"trace={dict(trace)!r:.200}: {reason}")
    if TRACESTATE in trace and TRACEPARENT not in trace:
        raise ArgumentError(f"trace={dict(trace)!r:.200}: a {TRACESTATE!r} is carried only beside a {TRACEPARENT!r}")


__all__ = ["ATTEMPT", "BAGGAGE", "BAGGAGE_SETTING", "BOUNDS", "configured", "DEQUEUE_COUNT", "JOB_ID", "JOB_NAME",
           "MESSAGE_ID", "OUTCOME", "QUEUE", "TRACEPARENT", "TRACER_NAME", "TRACESTATE", "baggage_propagated",
           "carried", "parent_context", "produced", "propagate_baggage", "tracer"]
