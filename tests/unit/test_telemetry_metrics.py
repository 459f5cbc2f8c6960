"""Job metrics through the OpenTelemetry SDK's InMemoryMetricReader, after a known mix of outcomes worked by the
real execution core (sync and async entry points) with a RecordingClient."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import timedelta

import pytest

import azjobs
from azjobs.execution.executor import Redeliver
from azjobs.hosting import executor as hosted_executor
from azjobs.model.outcome import MessageInfo
from azjobs.model.envelope import Envelope, format_time, utcnow
from azjobs.model.registry import Registry
from azjobs.telemetry import metrics, tracing
from azjobs.testing import RecordingClient
from tests.telemetry_support import otel  # noqa: F401  (a fixture)

reg = Registry()


@azjobs.job(queue="metrics-q", registry=reg, name="m.ok")
def ok(n: int = 0) -> None:
    pass


@azjobs.job(queue="metrics-q", registry=reg, name="m.flaky", retry=azjobs.Fixed(0, max_retries=1))
def flaky() -> None:
    raise RuntimeError("always fails")


@azjobs.job(queue="metrics-q", registry=reg, name="m.give_up")
def give_up() -> None:
    raise azjobs.Fail("not worth retrying")


def test_counters_and_histograms_after_a_known_mix_of_outcomes(otel):
    reader = otel
    queue = f"m-{uuid.uuid4().hex[:12]}"
    client = RecordingClient()
    executor = hosted_executor(registry=reg, client=client, settings=client.settings, host="h")
    counter = iter(range(100))

    def deliver(envelope_or_body, mode="sync", dequeue_count=1):
        body = envelope_or_body.encode() if isinstance(envelope_or_body, Envelope) else envelope_or_body
        info = MessageInfo(queue=queue, message_id=f"msg-{next(counter)}", dequeue_count=dequeue_count)
        if mode == "async":  # the Functions handler's entry point
            return asyncio.run(executor.execute_async(body, info)).outcome
        return executor.execute(body, info).outcome

    def envelope(job, *args, **fields):
        return Envelope.build(job, args, queue=queue, **fields)

    waited = format_time(utcnow() - timedelta(seconds=30))
    outcomes = [
        deliver(envelope("m.ok", 1)),
        deliver(envelope("m.ok", 2, enqueued_at=waited), mode="async"),
        deliver(envelope("m.flaky")),                                   # retry copy written
        deliver(client.to(queue)[-1].envelope()),                        # its attempt 2: poisoned
        deliver(envelope("m.give_up")),                                  # azjobs.Fail: poisoned
        deliver(base64.b64encode(b"not json").decode()),                 # unusable: poisoned, nothing runs
        deliver(envelope("m.not_deployed_here")),                        # unknown job: retried, nothing runs
    ]
    consumed = client.payloads.offload(envelope("m.ok", 3))
    client.payloads.consume(consumed.payload_ref)
    outcomes.append(deliver(consumed, dequeue_count=2))                  # a finished job's redelivery: skipped
    assert [o.value for o in outcomes] == ["succeeded", "succeeded", "retry_scheduled", "dead_lettered",
                                           "dead_lettered", "dead_lettered", "retry_scheduled", "skipped"]

    total = lambda name: reader.total(name, queue)  # noqa: E731
    assert total("azjobs.jobs.started") == 5        # ok ×2, flaky ×2, give_up
    assert total("azjobs.jobs.succeeded") == 2
    assert total("azjobs.jobs.retried") == 2        # flaky's first attempt, the unknown job
    assert total("azjobs.jobs.dead_lettered") == 3  # flaky's last attempt, give_up, the unusable body
    assert total("azjobs.jobs.skipped") == 1
    assert total("azjobs.jobs.redelivered") == 0
    assert total(metrics.DURATION) == 5             # one run time per run
    assert total(metrics.QUEUE_WAIT) == 5

    # per job: the job name travels as an attribute
    by_job = {p.attributes.get(tracing.JOB_NAME): p.value for p in reader.points("azjobs.jobs.dead_lettered", queue)}
    assert by_job == {"m.flaky": 1, "m.give_up": 1, None: 1}
    # the queue wait is measured from enqueued_at: the job enqueued 30 s earlier waited about that long
    (waits,) = [p for p in reader.points(metrics.QUEUE_WAIT, queue) if p.attributes[tracing.JOB_NAME] == "m.ok"]
    assert waits.count == 2 and 30 <= waits.max < 60 and waits.min < 30
    durations = {p.attributes[tracing.OUTCOME]: p.count for p in reader.points(metrics.DURATION, queue)
                 if p.attributes[tracing.JOB_NAME] == "m.flaky"}
    assert durations == {"retry_scheduled": 1, "dead_lettered": 1}


def test_a_delivery_the_core_cannot_settle_counts_as_redelivered(otel):
    reader = otel
    queue = f"m-{uuid.uuid4().hex[:12]}"
    client = RecordingClient()
    executor = hosted_executor(registry=reg, client=client, settings=client.settings, host="h")
    client.fail_with.append(OSError("storage is down"))  # the retry copy cannot be written
    with pytest.raises(Redeliver):
        executor.execute(Envelope.build("m.flaky", queue=queue).encode(), MessageInfo(queue=queue, message_id="x"))
    assert reader.total("azjobs.jobs.redelivered", queue) == 1
    assert reader.total("azjobs.jobs.retried", queue) == 0
    (span,) = reader.spans(queue=queue)
    assert span.attributes[tracing.OUTCOME] == "redelivered"

