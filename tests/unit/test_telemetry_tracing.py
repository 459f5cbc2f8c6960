"""Tracing details worked by the real core with a RecordingClient: an explicit trace= is sent as given, and a span
current when a message arrives is linked, not made the parent."""

from __future__ import annotations

import uuid

from opentelemetry.trace import SpanKind

import azjobs
from azjobs.core import Executor, MessageInfo
from azjobs.registry import Registry
from azjobs.telemetry import tracing
from azjobs.testing import RecordingClient
from tests.telemetry_support import otel  # noqa: F401  (a fixture)

reg = Registry()


@azjobs.job(queue="trace-q", registry=reg, name="t.noop")
def noop() -> None:
    pass


def test_an_explicit_trace_option_is_sent_as_given(otel):
    client = RecordingClient()
    given = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with otel.tracer.start_as_current_span("request"):
        noop.options(client=client, trace=given).enqueue()
        noop.options(client=client).enqueue()
    (explicit, _, _), (implicit, _, _) = client.sent
    assert dict(explicit.trace) == given
    assert implicit.trace["traceparent"] != given["traceparent"]


def test_a_span_current_on_arrival_is_linked_and_the_producer_stays_the_parent(otel):
    queue = f"tr-{uuid.uuid4().hex[:12]}"
    client = RecordingClient()
    with otel.tracer.start_as_current_span("request"):
        noop.options(client=client, queue=queue).enqueue()
    (envelope, _, _), = client.sent
    executor = Executor(registry=reg, client=client, settings=client.settings)
    with otel.tracer.start_as_current_span("functions invocation") as invocation:
        executor.execute(envelope.encode(), MessageInfo(queue=queue, message_id="m"))
    producer, consumer = sorted(otel.spans(queue=queue), key=lambda s: s.start_time)
    assert producer.kind is SpanKind.PRODUCER and consumer.kind is SpanKind.CONSUMER
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == producer.context.trace_id != invocation.get_span_context().trace_id
    assert [link.context.span_id for link in consumer.links] == [invocation.get_span_context().span_id]
    assert consumer.attributes[tracing.OUTCOME] == "succeeded"
