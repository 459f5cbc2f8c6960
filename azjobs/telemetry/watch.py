"""One delivery's telemetry: its CONSUMER span and the metrics counted for it.

One ``Watch`` follows one delivery. Its span is opened once the envelope is decoded (the
parent context travels in it) with the delivery's start time, so undecodable messages,
deferrals and duplicates get a span too; it is ended exactly once, with the outcome. Without
``opentelemetry-api`` installed ``delivery`` returns None and every other function returns at
once on it: nothing is imported, measured or written.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator

from . import metrics, tracing
from .otel import api

if TYPE_CHECKING:
    from ..model.outcome import MessageInfo, Result
    from ..model.envelope import Envelope

# Result outcomes → the counter they add to.
_COUNTED = {"succeeded": "succeeded", "retry_scheduled": "retried", "dead_lettered": "dead_lettered",
            "skipped": "skipped", "throttled": "throttled", "cancelled": "cancelled"}


class Watch:
    """The telemetry of one delivery: its span (once opened) and what metrics need."""

    __slots__ = ("info", "start_ns", "span", "baggage", "opened", "attributes", "ended", "_lock")

    def __init__(self, info: "MessageInfo") -> None:
        self.info = info
        self.start_ns = time.time_ns()
        self.span: Any = None
        self.baggage: dict[str, Any] = {}  # the message's baggage, when this process propagates it
        self.opened = False
        self.attributes: dict[str, Any] = {tracing.QUEUE: info.queue}
        self.ended = False
        self._lock = threading.Lock()

    def open(self, envelope: "Envelope | None") -> None:
        """Start the CONSUMER span (back-dated to the delivery's start) under the envelope's trace context."""
        if self.opened:
            return
        self.opened = True
        if not tracing.configured():
            return  # no tracer provider installed: metrics only
        otel = api()
        info = self.info
        attributes: dict[str, Any] = {
            tracing.SYSTEM_ATTR: tracing.SYSTEM, tracing.OPERATION: "process", tracing.QUEUE: info.queue,
            tracing.MESSAGE_ID: info.message_id, tracing.DEQUEUE_COUNT: info.dequeue_count,
        }
        if envelope is not None:
            attributes.update({tracing.JOB_NAME: envelope.job, tracing.JOB_ID: envelope.id,
                               tracing.ATTEMPT: envelope.attempt})
            self.attributes[tracing.JOB_NAME] = envelope.job
        # The span continues the producer's trace; whatever was current here (the Functions
        # invocation's own span, when the host traces) is linked rather than made the parent.
        links = []
        current = otel.trace.get_current_span().get_span_context()
        if current.is_valid:
            links.append(otel.trace.Link(current))
        parent = tracing.parent_context(envelope.trace if envelope else None)
        self.baggage = dict(otel.baggage.get_all(parent))
        self.span = tracing.tracer().start_span(
            f"process {info.queue}", context=parent,
            kind=otel.SpanKind.CONSUMER, attributes=attributes, links=links, start_time=self.start_ns)

    def end(self, outcome: str, error: BaseException | None = None, failed: str = "") -> None:
        """End the span once, with ``outcome``; an ``error`` (or a ``failed`` description) marks it ERROR."""
        with self._lock:
            if self.ended:
                return
            self.ended = True
        span = self.span
        if span is None:
            return
        span.set_attribute(tracing.OUTCOME, outcome)
        if error is not None:
            span.record_exception(error)
            failed = f"{type(error).__name__}: {error}"
        if failed:
            otel = api()
            span.set_status(otel.Status(otel.StatusCode.ERROR, failed[:500]))
        span.end()


def delivery(info: "MessageInfo") -> Watch | None:
    """A watch for one delivery the core is about to decode; None without OpenTelemetry."""
    return None if api() is None else Watch(info)


def started(watch: Watch | None, env: "Envelope") -> Watch | None:
    """The job is about to run: open its span, count the start and the time it waited in the queue."""
    if watch is None:
        return None
    watch.open(env)
    metrics.add("started", watch.attributes)
    since = _waiting_since(env, watch.info)
    if since is not None:
        metrics.observe("queue_wait", watch.start_ns / 1e9 - since.timestamp(), watch.attributes)
    return watch


def settled(watch: Watch | None, result: "Result") -> None:
    """The core returned a Result: end the span with its outcome and count it."""
    if watch is None:
        return
    outcome = result.outcome.value
    watch.open(result.envelope)
    if result.envelope is not None:
        watch.attributes.setdefault(tracing.JOB_NAME, result.envelope.job)
    counter = _COUNTED.get(outcome)
    if counter is not None:
        metrics.add(counter, watch.attributes)
    if result.ran:
        metrics.observe("duration", result.duration_s, {**watch.attributes, tracing.OUTCOME: outcome})
    # A poison record without an exception (an unusable message) is a failure all the same.
    watch.end(outcome, result.error, result.detail or outcome if outcome == "dead_lettered" else "")


def raised(watch: Watch | None, envelope: "Envelope | None", error: BaseException, outcome: str = "redelivered") -> None:
    """The delivery ended without a Result (released for redelivery, timed out, cancelled)."""
    if watch is None or watch.ended:
        return
    watch.open(envelope)
    metrics.add("redelivered", watch.attributes)
    watch.end(outcome, error)


@contextlib.contextmanager
def active(watch: Watch | None) -> Iterator[None]:
    """Make the delivery's span the current span (the job's own spans and enqueues nest under it).

    The message's baggage, carried only when this process propagates baggage, is current too.
    """
    if watch is None or watch.span is None:
        yield
        return
    otel = api()
    context = otel.context.get_current()
    for name, value in watch.baggage.items():
        context = otel.baggage.set_baggage(name, value, context)
    token = otel.context.attach(otel.trace.set_span_in_context(watch.span, context))
    try:
        yield
    finally:
        otel.context.detach(token)


def _waiting_since(env: "Envelope", info: "MessageInfo") -> datetime | None:
    from ..model.envelope import parse_time

    try:
        if env.due_at is not None:
            return parse_time(env.due_at)
        if env.attempt > 1 and info.insertion_time is not None:
            when = info.insertion_time
            return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        return parse_time(env.enqueued_at)
    except (TypeError, ValueError):
        return None


__all__ = ["Watch", "active", "delivery", "raised", "settled", "started"]
