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

from typing import TYPE_CHECKING, Any, Mapping

from ..model.trace_context import (BAGGAGE, BAGGAGE_SETTING, BOUNDS, TRACEPARENT, TRACESTATE, baggage_propagated,
                                   carried, check_given, propagate_baggage)
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
        check_given(envelope.trace)
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


__all__ = ["ATTEMPT", "BAGGAGE", "BAGGAGE_SETTING", "BOUNDS", "configured", "DEQUEUE_COUNT", "JOB_ID", "JOB_NAME",
           "MESSAGE_ID", "OUTCOME", "QUEUE", "TRACEPARENT", "TRACER_NAME", "TRACESTATE", "baggage_propagated",
           "carried", "parent_context", "produced", "propagate_baggage", "tracer"]
