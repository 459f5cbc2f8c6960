"""Trace context through the message, against Azurite: a producer span, then the job's CONSUMER spans on the
worker and on the Functions path (a real QueueMessage through the generated handler), one trace across a retry
and a job enqueued by a job."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import timedelta

from opentelemetry.trace import SpanKind, StatusCode

import azjobs
from azjobs.model import trace_context
from azjobs import QueueSettings
from azjobs.hosting import executor as hosted_executor
from azjobs.model.envelope import Envelope
from azjobs.telemetry import tracing
from azjobs.runtime.worker import Worker
from tests.conftest import unique_queue
from tests.functions_support import HostAction, fresh_app, host_like_settle, receive_one
from tests.telemetry_support import installed, otel  # noqa: F401  (otel: a fixture)

FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.5))


STEP_TWO: dict[str, azjobs.JobDefinition] = {}  # per queue: the job ``flaky`` enqueues when it succeeds


def step_two(order: str) -> None:
    pass


def flaky(order: str) -> None:
    """Fails its first attempt; then enqueues a second step (a workflow's next job) on the same queue."""
    with installed().tracer.start_as_current_span("inside the job"):
        job = azjobs.current_job()
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")
        STEP_TWO[job.queue].enqueue(order)


def _jobs(queue: str) -> tuple[azjobs.Registry, azjobs.JobDefinition]:
    registry = azjobs.Registry()
    STEP_TWO[queue] = azjobs.job(queue=queue, registry=registry, name="step_two")(step_two)
    job = azjobs.job(queue=queue, registry=registry, name="flaky", retry=azjobs.Fixed(0, max_retries=2))(flaky)
    return registry, job


def _check_one_trace(otel, queue: str, trace_id: int, job_id: str) -> None:
    spans = otel.spans(trace_id=trace_id)
    by_name: dict[str, list] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (root,) = by_name["request"]
    creates = sorted(by_name[f"create {queue}"], key=lambda s: s.start_time)
    processes = sorted(by_name[f"process {queue}"], key=lambda s: s.start_time)
    assert len(creates) == 2 and len(processes) == 3, [s.name for s in spans]
    producer, step_create = creates
    first, second, step_run = processes

    # enqueue: a PRODUCER span under the caller's span, naming the job
    assert producer.kind is SpanKind.PRODUCER and producer.parent.span_id == root.context.span_id
    assert producer.attributes[tracing.JOB_ID] == job_id and producer.attributes[tracing.JOB_NAME] == "flaky"
    # both attempts: CONSUMER spans whose parent is the producer span (the retry copy kept the link)
    for attempt, span in ((1, first), (2, second)):
        assert span.kind is SpanKind.CONSUMER
        assert span.parent.span_id == producer.context.span_id
        attrs = span.attributes
        assert (attrs[tracing.JOB_NAME], attrs[tracing.JOB_ID], attrs[tracing.QUEUE], attrs[tracing.ATTEMPT]) == (
            "flaky", job_id, queue, attempt)
        assert attrs[tracing.MESSAGE_ID] and attrs[tracing.DEQUEUE_COUNT] == 1
    assert first.attributes[tracing.OUTCOME] == "retry_scheduled" and first.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in first.events)
    assert second.attributes[tracing.OUTCOME] == "succeeded" and second.status.status_code is not StatusCode.ERROR
    assert first.attributes[tracing.MESSAGE_ID] != second.attributes[tracing.MESSAGE_ID]
    # the job's own spans run under its CONSUMER span
    insides = sorted(by_name["inside the job"], key=lambda s: s.start_time)
    assert [s.parent.span_id for s in insides] == [first.context.span_id, second.context.span_id]
    # a job enqueued by the job (a workflow's next step) continues the same trace, under the span current there
    assert step_create.parent.span_id == insides[1].context.span_id
    assert step_run.parent.span_id == step_create.context.span_id
    assert step_run.attributes[tracing.JOB_NAME] == "step_two" and step_run.attributes[tracing.OUTCOME] == "succeeded"


def _enqueue_under_a_request(otel, job: azjobs.JobDefinition) -> tuple[int, str]:
    with otel.tracer.start_as_current_span("request") as request:
        job_id = job.enqueue("order-1")
    return request.get_span_context().trace_id, job_id


def test_worker_job_spans_continue_the_producers_trace_across_a_retry(client, raw_queue, otel):
    queue = unique_queue("trw")
    registry, flaky = _jobs(queue)
    trace_id, job_id = _enqueue_under_a_request(otel, flaky)
    # The traceparent travels in the envelope's trace field, in the producer span's trace.
    (message,) = raw_queue(queue).peek_messages(max_messages=1)
    carried = json.loads(base64.b64decode(message.content))["trace"]
    assert carried["traceparent"].split("-")[1] == f"{trace_id:032x}"

    stats = Worker([queue], client=client, executor=hosted_executor(registry=registry, client=client, settings=FAST),
                   burst=True).run()
    assert (stats.succeeded, stats.retry_scheduled) == (2, 1)
    _check_one_trace(otel, queue, trace_id, job_id)


def test_functions_job_spans_continue_the_producers_trace_across_a_retry(client, raw_queue, otel):
    queue = unique_queue("trf")
    registry, flaky = _jobs(queue)
    trace_id, job_id = _enqueue_under_a_request(otel, flaky)
    app = fresh_app(registry=registry)
    qc = raw_queue(queue)
    actions = []
    while (message := receive_one(qc, visibility_timeout=30)) is not None:
        actions.append(host_like_settle(app, qc, message).action)
    assert actions == [HostAction.DELETED] * 3
    _check_one_trace(otel, queue, trace_id, job_id)


def test_an_unusable_message_gets_a_dead_lettered_span_of_its_own(client, raw_queue, otel):
    queue = unique_queue("trbad")
    registry, _ = _jobs(queue)
    qc = raw_queue(queue)
    qc.create_queue()
    qc.send_message(base64.b64encode(b'{"not": "an envelope"}').decode())
    stats = Worker([queue], client=client, executor=hosted_executor(registry=registry, client=client, settings=FAST),
                   burst=True).run()
    assert stats.dead_lettered == 1
    (span,) = otel.spans(queue=queue)
    assert span.parent is None and span.kind is SpanKind.CONSUMER
    assert span.attributes[tracing.OUTCOME] == "dead_lettered" and tracing.JOB_NAME not in span.attributes
    assert span.status.status_code is StatusCode.ERROR


def test_a_timed_out_job_ends_its_span_and_its_poisoning_stays_in_the_trace(client, raw_queue, test_dir, otel):
    from tests.jobs import hardening_jobs as hj

    queue = unique_queue("trto")
    raw_queue(queue)
    settings = QueueSettings(max_polling_interval=timedelta(seconds=0.5), max_dequeue_count=1,
                             visibility_timeout=timedelta(0))
    with otel.tracer.start_as_current_span("request") as request:
        hj.async_hang.options(queue=queue).enqueue("ahung", 30)
    stats = Worker([queue], client=client, executor=hosted_executor(registry=hj.REGISTRY, client=client, settings=settings),
                   timeout=1.0, burst=True).run()
    assert (stats.timed_out, stats.dead_lettered) == (1, 1)
    spans = sorted(otel.spans(queue=queue, trace_id=request.get_span_context().trace_id),
                   key=lambda s: s.start_time)
    producer, hung, poisoned = spans
    assert [s.attributes[tracing.OUTCOME] for s in (hung, poisoned)] == ["timed_out", "dead_lettered"]
    assert hung.parent.span_id == poisoned.parent.span_id == producer.context.span_id
    assert hung.status.status_code is StatusCode.ERROR and hung.end_time is not None
    # maxDequeueCount 1: the timed-out delivery itself is poisoned, as the host would
    assert poisoned.attributes[tracing.MESSAGE_ID] == hung.attributes[tracing.MESSAGE_ID]
    assert otel.total("azjobs.jobs.dead_lettered", queue) == 1


def test_every_workflow_step_continues_the_trace_the_workflow_was_enqueued_in(client, otel, test_dir, flows):
    from tests.integration.worker_support import Background
    from tests.jobs import workflow_jobs as wf

    steps, queue = flows
    on = {"queue": steps}
    flow = azjobs.chain(azjobs.group(wf.add.options(**on).s(1, 2), wf.add.options(**on).s(3, 4)),
                        wf.total.options(**on).s())
    with otel.tracer.start_as_current_span("request") as request:
        handle = flow.enqueue(queue=queue)
    with Background(Worker([steps], client=client, settings=FAST, lease=2, workflows=queue)):
        assert handle.result(timeout=30) == 10

    spans = otel.spans(trace_id=request.get_span_context().trace_id)
    (producer,) = [s for s in spans if s.name == f"create {queue}"]
    assert producer.kind is SpanKind.PRODUCER and producer.parent.span_id == request.get_span_context().span_id
    runs = [s for s in spans if s.name == f"process {steps}"]
    assert sorted(s.attributes[tracing.JOB_NAME] for s in runs) == ["wf.add", "wf.add", "wf.total"]
    assert all(s.kind is SpanKind.CONSUMER and s.parent.span_id == producer.context.span_id for s in runs)
    assert all(s.attributes[tracing.OUTCOME] == "succeeded" for s in runs)


def test_a_scheduled_run_starts_a_trace_that_its_job_span_continues(client, otel):
    from datetime import datetime, timezone

    queue = unique_queue("tsc")
    registry = azjobs.Registry()
    job = azjobs.job(queue=queue, registry=registry, name="tick_job")(step_two)
    item = azjobs.periodic("*/5 * * * * *", job, args=("tick",), name=f"tick-{queue}")
    client.ensure_queue(queue)
    envelope = item.fire(datetime.now(timezone.utc).replace(microsecond=0), client=client)
    assert envelope.trace["traceparent"]

    stats = Worker([queue], client=client, executor=hosted_executor(registry=registry, client=client, settings=FAST),
                   burst=True).run()
    assert stats.succeeded == 1
    spans = otel.spans(queue=queue)
    (producer,) = [s for s in spans if s.name == f"create {queue}"]
    (run,) = [s for s in spans if s.name == f"process {queue}"]
    assert producer.kind is SpanKind.PRODUCER and producer.attributes[tracing.JOB_ID] == envelope.id
    assert run.context.trace_id == producer.context.trace_id and run.parent.span_id == producer.context.span_id
    assert run.attributes[tracing.JOB_NAME] == "tick_job" and run.attributes[tracing.OUTCOME] == "succeeded"


# -- baggage: W3C trace context only, unless the process opts in ------------------------------------------

EMAIL = "ada@example.com"
EMAIL_ON_THE_WIRE = "user.email=ada%40example.com"  # as OpenTelemetry's W3C Baggage propagator writes it
SEEN_BAGGAGE: dict[str, list] = {}  # per queue: the baggage current in each run of ``mail_receipt``


def mail_receipt(order: str) -> None:
    """Fails every attempt (a retry copy, then a poison record), noting the baggage it ran under."""
    from opentelemetry import baggage

    SEEN_BAGGAGE[azjobs.current_job().queue].append(dict(baggage.get_all()))
    raise RuntimeError("the mail server is down")


def _mail_job(queue: str) -> tuple[azjobs.Registry, azjobs.JobDefinition]:
    SEEN_BAGGAGE[queue] = []
    registry = azjobs.Registry()
    job = azjobs.job(queue=queue, registry=registry, name="mail_receipt",
                     retry=azjobs.Fixed(0, max_retries=1))(mail_receipt)
    return registry, job


@contextlib.contextmanager
def _user_baggage(otel):
    """The caller's context as an app sets it: baggage with the user's e-mail address, under a request span."""
    from opentelemetry import baggage, context, propagate

    token = context.attach(baggage.set_baggage("user.email", EMAIL))
    try:
        with otel.tracer.start_as_current_span("request") as request:
            # The global propagators are OpenTelemetry's defaults (tracecontext and baggage): they do carry it.
            headers: dict[str, str] = {}
            propagate.inject(headers)
            assert headers["baggage"] == EMAIL_ON_THE_WIRE
            yield request
    finally:
        context.detach(token)


def _work_through_functions(registry: azjobs.Registry, qc) -> list[str]:
    """Deliver the queue's messages through the generated handler until it is empty; each body's JSON as received."""
    app = fresh_app(registry=registry)
    bodies = []
    while (message := receive_one(qc, visibility_timeout=30)) is not None:
        bodies.append(base64.b64decode(message.content).decode("utf-8"))
        assert host_like_settle(app, qc, message).action is HostAction.DELETED
    return bodies


def _poison_text(raw_queue, queue: str) -> str:
    (record,) = raw_queue(f"{queue}-poison").peek_messages(max_messages=2)
    return base64.b64decode(record.content).decode("utf-8")


def test_an_enqueue_under_baggage_sends_only_the_trace_context_in_the_message_its_retry_and_its_poison_record(
        client, raw_queue, otel):
    queue = unique_queue("trbag")
    registry, job = _mail_job(queue)
    with _user_baggage(otel) as request:
        job.enqueue("order-1")
    trace_id = request.get_span_context().trace_id
    qc = raw_queue(queue)
    (sent,) = qc.peek_messages(max_messages=2)
    first = base64.b64decode(sent.content).decode("utf-8")
    # The baggage's key and value as they would appear ("ada" alone also matches hex in the message id).
    assert "user.email" not in first and "ada%40example.com" not in first and EMAIL not in first
    assert list(json.loads(first)["trace"]) == ["traceparent"]

    original, retry = _work_through_functions(registry, qc)
    record = _poison_text(raw_queue, queue)
    for text in (original, retry, record):
        assert "user.email" not in text and "ada%40example.com" not in text and EMAIL not in text
    assert json.loads(retry)["attempt"] == 2 and list(json.loads(retry)["trace"]) == ["traceparent"]
    assert list(json.loads(record)["envelope"]["trace"]) == ["traceparent"]
    # the trace itself still travels: both attempts continue the request's trace
    runs = [s for s in otel.spans(trace_id=trace_id) if s.name == f"process {queue}"]
    assert len(runs) == 2
    assert SEEN_BAGGAGE[queue] == [{}, {}]


def test_baggage_from_an_older_producer_reaches_neither_the_job_its_span_its_retry_nor_its_poison_record(
        client, raw_queue, otel):
    queue = unique_queue("trold")
    registry, _ = _mail_job(queue)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    envelope = Envelope.build("mail_receipt", ("order-1",), queue=queue,
                              trace={"traceparent": parent, "baggage": EMAIL_ON_THE_WIRE})
    qc = raw_queue(queue)
    qc.create_queue()
    qc.send_message(base64.b64encode(envelope.to_json().encode()).decode())  # what an azjobs before the fix sent

    original, retry = _work_through_functions(registry, qc)
    assert EMAIL_ON_THE_WIRE in original
    record = _poison_text(raw_queue, queue)
    for text in (retry, record):
        assert "user.email" not in text and "ada%40example.com" not in text
    assert json.loads(retry)["trace"] == {"traceparent": parent}
    assert SEEN_BAGGAGE[queue] == [{}, {}]
    runs = sorted(otel.spans(queue=queue), key=lambda s: s.start_time)
    assert [s.attributes[tracing.ATTEMPT] for s in runs] == [1, 2]
    for span in runs:  # the trace context is still honoured, the baggage is not
        assert span.parent.span_id == 0xb7ad6b7169203331 and span.context.trace_id == 0x0af7651916cd43dd8448eb211c80319c
        assert otel.parent_baggage(span) == {}


def test_with_baggage_propagation_on_the_message_its_retry_and_the_job_carry_the_baggage(
        connection_string, raw_queue, otel, monkeypatch):
    monkeypatch.setattr(trace_context, "_baggage", None)  # restored after the test: off again
    on = azjobs.configure(connection_string, propagate_baggage=True)
    try:
        queue = unique_queue("tron")
        registry, job = _mail_job(queue)
        with _user_baggage(otel):
            job.enqueue("order-1")
        original, retry = _work_through_functions(registry, raw_queue(queue))
        record = _poison_text(raw_queue, queue)
    finally:
        on.close()
    for text in (original, retry):
        assert json.loads(text)["trace"]["baggage"] == EMAIL_ON_THE_WIRE
    assert json.loads(record)["envelope"]["trace"]["baggage"] == EMAIL_ON_THE_WIRE
    assert SEEN_BAGGAGE[queue] == [{"user.email": EMAIL}, {"user.email": EMAIL}]
    runs = otel.spans(queue=queue)
    assert [otel.parent_baggage(s) for s in runs if s.name == f"process {queue}"] == [{"user.email": EMAIL}] * 2


def test_a_trace_field_that_is_malformed_or_oversized_is_dropped_and_the_job_still_runs(client, raw_queue, otel):
    queue = unique_queue("trodd")
    registry = azjobs.Registry()
    azjobs.job(queue=queue, registry=registry, name="step_two")(step_two)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    fields = {
        # a valid traceparent beside thousands of other keys, an oversized tracestate and a nested baggage
        "crowded": {"traceparent": parent, "tracestate": "vendor=" + "x" * 600, "baggage": {"user.email": EMAIL},
                    **{f"x-header-{i}": "v" for i in range(1800)}},
        "not an object": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "a list": [parent],
        "non-string values": {"traceparent": 12345, "tracestate": None},
        "a huge traceparent": {"traceparent": "00-" + "a" * 30_000},
        "too many tracestate members": {"traceparent": parent, "tracestate": ",".join(f"k{i}=v" for i in range(33))},
    }
    qc = raw_queue(queue)
    qc.create_queue()
    for name, trace in fields.items():
        data = Envelope.build("step_two", (name,), queue=queue).to_dict()
        data["trace"] = trace
        body = base64.b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()
        assert len(body) < 64 * 1024
        qc.send_message(body)
    stats = Worker([queue], client=client, executor=hosted_executor(registry=registry, client=client, settings=FAST),
                   burst=True).run()
    assert (stats.succeeded, stats.dead_lettered) == (len(fields), 0)
    runs = [s for s in otel.spans(queue=queue) if s.name == f"process {queue}"]
    assert len(runs) == len(fields) and all(s.attributes[tracing.OUTCOME] == "succeeded" for s in runs)
    continued = [s for s in runs if s.parent is not None]
    # the crowded field's traceparent and the one with 33 tracestate members still continue the trace
    assert len(continued) == 2 and all(s.parent.span_id == 0xb7ad6b7169203331 for s in continued)
    assert all(s.context.trace_state.to_header() == "" for s in continued)
