import asyncio

import pytest

import azjobs
from azjobs.hosting import executor as hosted_executor
from azjobs.model.outcome import MessageInfo, Outcome
from azjobs.model.envelope import Envelope
from azjobs.model.registry import Registry
from azjobs.testing import RecordingClient

reg = Registry()
seen = []


@azjobs.job(queue="ctx-q", registry=reg, name="ctx.sync")
def sync_job():
    seen.append(azjobs.current_job())


@azjobs.job(queue="ctx-q", registry=reg, name="ctx.async")
async def async_job():
    await asyncio.sleep(0)
    seen.append(azjobs.current_job())


def executor():
    client = RecordingClient("base64")
    return hosted_executor(registry=reg, client=client, settings=client.settings, host="h")


@pytest.mark.parametrize("name", ["ctx.sync", "ctx.async"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_running_job_sees_its_context(name, mode):
    seen.clear()
    envelope = Envelope.build(name, queue="ctx-q", trace={"traceparent": "00-1-2-01"}).evolve(attempt=3)
    info = MessageInfo(queue="ctx-q", message_id="m-1", dequeue_count=2)
    ex = executor()
    if mode == "sync":
        result = ex.execute(envelope.encode(), info)
    else:
        result = asyncio.run(ex.execute_async(envelope.encode(), info))
    assert result.outcome is Outcome.SUCCEEDED
    (context,) = seen
    assert (context.job, context.id, context.attempt, context.queue) == (name, envelope.id, 3, "ctx-q")
    assert context.message_id == "m-1" and context.dequeue_count == 2 and context.is_retry
    assert context.trace == {"traceparent": "00-1-2-01"}


def test_outside_a_job_is_an_error():
    with pytest.raises(RuntimeError, match="only available while a job runs"):
        azjobs.current_job()


def test_async_job_on_a_loop_in_another_thread_sees_its_context():
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        seen.clear()
        envelope = Envelope.build("ctx.async", queue="ctx-q")
        result = executor().execute(envelope.encode(), MessageInfo(queue="ctx-q", message_id="m-2"), loop=loop)
        assert result.outcome is Outcome.SUCCEEDED
        assert [c.id for c in seen] == [envelope.id]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


ticks_seen = []


@azjobs.job(queue="ctx-q", registry=reg, name="ctx.periodic")
def periodic_job():
    # What a periodic job writes: the tick as text, via the datetime's own methods.
    ticks_seen.append((azjobs.current_job().scheduled_at.isoformat(), azjobs.current_job().scheduled_at))


def test_a_periodic_jobs_scheduled_at_is_an_aware_utc_datetime_and_isoformat_works():
    from datetime import datetime, timezone

    ticks_seen.clear()
    envelope = Envelope.build("ctx.periodic", queue="ctx-q").evolve(scheduled_at="2026-11-28T06:00:00.000Z",
                                                                     past_due=True)
    assert envelope.to_dict()["scheduled_at"] == "2026-11-28T06:00:00.000Z"  # the wire form stays text
    result = executor().execute(envelope.encode(), MessageInfo(queue="ctx-q", message_id="m-3"))
    assert result.outcome is Outcome.SUCCEEDED, result
    [(text, moment)] = ticks_seen
    assert moment == datetime(2026, 11, 28, 6, tzinfo=timezone.utc) and moment.utcoffset().total_seconds() == 0
    assert text == "2026-11-28T06:00:00+00:00"
