"""Tracing details worked by the real core with a RecordingClient: an explicit trace= is sent as given (and refused
when a worker would drop it), a span current when a message arrives is linked, not made the parent, and the trace
field's rule: W3C keys within their bounds, baggage only when opted in, the rest dropped without costing the run."""

from __future__ import annotations

import json
import uuid

import pytest
from opentelemetry.trace import SpanKind

import azjobs
from azjobs.model import trace_context
from azjobs.hosting import executor as hosted_executor
from azjobs.model.outcome import MessageInfo
from azjobs.errors import ArgumentError
from azjobs.model.envelope import Envelope
from azjobs.model.registry import Registry
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
    executor = hosted_executor(registry=reg, client=client, settings=client.settings)
    with otel.tracer.start_as_current_span("functions invocation") as invocation:
        executor.execute(envelope.encode(), MessageInfo(queue=queue, message_id="m"))
    producer, consumer = sorted(otel.spans(queue=queue), key=lambda s: s.start_time)
    assert producer.kind is SpanKind.PRODUCER and consumer.kind is SpanKind.CONSUMER
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == producer.context.trace_id != invocation.get_span_context().trace_id
    assert [link.context.span_id for link in consumer.links] == [invocation.get_span_context().span_id]
    assert consumer.attributes[tracing.OUTCOME] == "succeeded"


# -- what the envelope's trace field carries (azjobs.telemetry.tracing.carried) -----------------------------

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STATE_32 = ",".join(f"vendor{i}=v" for i in range(32))

CARRIED = [
    # (trace field as received, baggage on?, what is kept)
    ({"traceparent": PARENT, "tracestate": "congo=t61rcWkgMzE"}, False,
     {"traceparent": PARENT, "tracestate": "congo=t61rcWkgMzE"}),
    ({"traceparent": PARENT, "baggage": "user.email=ada%40example.com"}, False, {"traceparent": PARENT}),
    ({"traceparent": PARENT, "baggage": "user.email=ada%40example.com"}, True,
     {"traceparent": PARENT, "baggage": "user.email=ada%40example.com"}),
    ({"traceparent": PARENT, "b3": "abc-def", "uber-trace-id": "x", "sentry-trace": "y"}, False,
     {"traceparent": PARENT}),
    ({"traceparent": PARENT + "-00"}, False, {}),  # over 55 characters
    ({"traceparent": PARENT, "tracestate": STATE_32}, False, {"traceparent": PARENT, "tracestate": STATE_32}),
    ({"traceparent": PARENT, "tracestate": STATE_32 + ",one=more"}, False, {"traceparent": PARENT}),  # 33 members
    ({"traceparent": PARENT, "tracestate": "k=" + "v" * 510}, False,  # 512 characters
     {"traceparent": PARENT, "tracestate": "k=" + "v" * 510}),
    ({"traceparent": PARENT, "tracestate": "k=" + "v" * 511}, False, {"traceparent": PARENT}),  # 513 characters
    ({"tracestate": "congo=t61rcWkgMzE"}, False, {}),  # no traceparent to go with it
    ({"traceparent": PARENT, "baggage": "k=" + "v" * 8190}, True,  # 8192 characters
     {"traceparent": PARENT, "baggage": "k=" + "v" * 8190}),
    ({"traceparent": PARENT, "baggage": "k=" + "v" * 8191}, True, {"traceparent": PARENT}),  # over 8192
    ({"traceparent": PARENT, "baggage": ",".join(f"k{i}=v" for i in range(181))}, True, {"traceparent": PARENT}),
    ({"traceparent": 12345, "tracestate": ["a=b"], "baggage": {"k": "v"}}, True, {}),
    ({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0\u00e9"}, False, {}),  # not ASCII
    ({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-\ud800"}, False, {}),  # a lone surrogate from JSON
    ({"traceparent": ""}, False, {}),
    (PARENT, False, {}),  # not an object
    ([PARENT], False, {}),
    (None, False, {}),
    ({f"x-{i}": "v" for i in range(100_000)} | {"traceparent": PARENT}, False, {"traceparent": PARENT}),
]


@pytest.mark.parametrize("field, baggage, kept", CARRIED, ids=[str(i) for i in range(len(CARRIED))])
def test_the_trace_field_keeps_only_w3c_keys_within_their_bounds(field, baggage, kept):
    assert tracing.carried(field, baggage=baggage) == kept


def test_a_message_whose_trace_field_does_not_fit_decodes_without_it_and_its_job_runs(monkeypatch):
    monkeypatch.setattr(trace_context, "_baggage", False)
    queue = f"tr-{uuid.uuid4().hex[:12]}"
    client = RecordingClient()
    executor = hosted_executor(registry=reg, client=client, settings=client.settings)
    for field in ("a string", [PARENT], {"traceparent": 7}, {"traceparent": "00-" + "f" * 5000},
                  {f"k{i}": i for i in range(5000)}, {"baggage": "user.email=ada%40example.com"}):
        data = Envelope.build("t.noop", queue=queue).to_dict()
        data["trace"] = field
        envelope = Envelope.from_json(json.dumps(data))
        assert dict(envelope.trace) == {} and "trace" not in envelope.to_dict()
        result = executor.execute(json.dumps(data).encode(), MessageInfo(queue=queue, message_id="m"), encoded=False)
        assert result.outcome.value == "succeeded", (field, result.detail)


def test_baggage_propagation_is_off_unless_configured_or_set(monkeypatch):
    monkeypatch.setattr(trace_context, "_baggage", None)
    monkeypatch.delenv(tracing.BAGGAGE_SETTING, raising=False)
    assert tracing.baggage_propagated() is False
    monkeypatch.setenv(tracing.BAGGAGE_SETTING, "1")
    assert tracing.baggage_propagated() is True
    azjobs.configure("UseDevelopmentStorage=true", propagate_baggage=False).close()
    assert tracing.baggage_propagated() is False  # the process's choice wins over the setting
    azjobs.configure("UseDevelopmentStorage=true", propagate_baggage=True).close()
    assert tracing.baggage_propagated() is True


@pytest.mark.parametrize("given, says", [
    ({"traceparent": PARENT, "b3": "abc"}, "'b3' is not carried"),
    ({"traceparent": PARENT, "baggage": "k=v"}, "'baggage' is carried only with baggage propagation on"),
    ({"traceparent": PARENT + "-00"}, "'traceparent' is 58 characters, over its 55"),
    ({"traceparent": PARENT, "tracestate": STATE_32 + ",one=more"}, "'tracestate' has 33 list-members, over its 32"),
    ({"traceparent": 1}, "'traceparent' must be a non-empty ASCII string, got int"),
    ({"tracestate": "a=b"}, "a 'tracestate' is carried only beside a 'traceparent'"),
])
def test_an_explicit_trace_option_a_worker_would_drop_is_refused_at_enqueue(given, says, monkeypatch):
    monkeypatch.setattr(trace_context, "_baggage", False)
    client = RecordingClient()
    with pytest.raises(ArgumentError) as refused:
        noop.options(client=client, trace=given).enqueue()
    assert says in str(refused.value)
    assert client.sent == []
