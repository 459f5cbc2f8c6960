"""Failure handling end to end on Azurite, through the local runner and the Functions handler."""

from __future__ import annotations

import base64
import json
import os
from datetime import timedelta

import pytest

import azjobs
from azjobs.model.outcome import Outcome
from azjobs.model.envelope import Envelope
from azjobs.model.poison_record import PoisonRecord
from azjobs.model.retry import Fixed
from azjobs.model.settings import QueueSettings
from tests.conftest import unique_queue
from tests.integration.drivers import DRIVERS, drop_queues
from tests.jobs import failure_jobs as jobs


@pytest.fixture(params=sorted(DRIVERS))
def driver(request, client):
    queue = unique_queue("fail")
    made = DRIVERS[request.param](client, queue, jobs.registry_for(queue), unknown_job_policy=Fixed(0, max_retries=1))
    client.ensure_queue(queue)
    yield made
    drop_queues(client, queue)


def token(driver) -> str:
    return f"{driver.name}-{driver.queue}"


def poison_records(driver) -> list[PoisonRecord]:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        messages = driver.client.queue(driver.queue + "-poison").peek_messages(max_messages=32)
    except ResourceNotFoundError:
        return []
    return [PoisonRecord.decode(m.content, driver.client.encoding, driver.queue) for m in messages]


def test_failing_twice_then_succeeding_runs_three_times_with_growing_delays(driver):
    t = token(driver)
    jobs.flaky.options(queue=driver.queue).enqueue(t, 2)
    driver.run_until(lambda: len(jobs.calls(t)) >= 3, timeout_s=30)
    times = [moment for moment, _ in jobs.calls(t)]
    assert len(times) == 3
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    # Backoff(base=1, factor=2, jitter=0): the copies are invisible for 1 s, then 2 s.
    assert first_gap >= 0.8, first_gap
    assert second_gap >= 1.8 and second_gap > first_gap, (first_gap, second_gap)
    outcomes = [(r.outcome, r.retry_in_s) for r in driver.results]
    assert outcomes == [(Outcome.RETRY_SCHEDULED, 1), (Outcome.RETRY_SCHEDULED, 2), (Outcome.SUCCEEDED, None)]
    assert [r.envelope.attempt for r in driver.results] == [1, 2, 3]
    assert poison_records(driver) == []


def test_always_failing_job_ends_in_poison_with_its_error(driver):
    t = token(driver)
    jobs.always_fails.options(queue=driver.queue).enqueue(t)
    driver.run_until(lambda: bool(jobs.DEAD.get(t)), timeout_s=20)
    assert len(jobs.calls(t)) == 3  # Fixed(0, max_retries=2)
    [record] = poison_records(driver)
    assert record.error.type == "ValueError"
    assert record.error.message == f"boom {t}"
    assert "Traceback (most recent call last)" in record.error.traceback
    assert "failure_jobs.py" in record.error.traceback and "raise ValueError" in record.error.traceback
    assert record.error.reason == "job_failed"
    assert record.attempts == 3
    assert record.first_failed_at and record.last_failed_at and record.first_failed_at <= record.last_failed_at
    assert record.queue == driver.queue and record.host == "test-host"
    assert record.envelope.job == jobs.always_fails.name and record.envelope.args == (t,)
    # The on_dead_letter hook saw the same record, once.
    [hooked] = jobs.DEAD[t]
    assert hooked.id == record.id
    # The original message is gone.
    assert list(driver.client.queue(driver.queue).peek_messages()) == []


def test_fail_goes_straight_to_poison(driver):
    t = token(driver)
    jobs.gives_up.options(queue=driver.queue).enqueue(t)
    driver.run_until(lambda: bool(poison_records(driver)))
    assert len(jobs.calls(t)) == 1
    [record] = poison_records(driver)
    assert record.error.type == "azjobs.errors.Fail" and record.error.reason == "fail"
    assert record.attempts == 1
    assert [r.outcome for r in driver.results] == [Outcome.DEAD_LETTERED]


def test_async_job_failure_is_poisoned_with_traceback(driver):
    t = token(driver)
    jobs.async_fails.options(queue=driver.queue).enqueue(t)
    driver.run_until(lambda: bool(poison_records(driver)))
    [record] = poison_records(driver)
    assert record.error.type == "KeyError" and "async_fails" in record.error.traceback


def _wire(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _envelope(job: str, queue: str, *args, **kwargs) -> dict:
    return Envelope.build(job, args, kwargs, queue=queue).to_dict()


def test_each_bad_input_ends_in_poison_with_its_reason_and_the_next_message_runs(driver):
    t = token(driver)
    q = driver.queue
    bad = {
        "not_base64": "%%% this is not base64 %%%",
        "not_utf8": _wire(b"\xff\xfe\xfa not utf-8"),
        "not_json": _wire(b"{this is not json"),
        "not_envelope": _wire(json.dumps({"hello": "world"}).encode()),
        "unknown_version": _wire(json.dumps({**_envelope(jobs.record.name, q, t), "azjobs": 99}).encode()),
        "unknown_job": _wire(json.dumps(_envelope("tests.jobs.failure_jobs.not_a_job", q, t)).encode()),
        "bad_arguments": _wire(json.dumps(_envelope(jobs.record.name, q, t, 1, 2, 3, nope=True)).encode()),
    }
    for text in bad.values():
        driver.client.send_text(q, text)
    jobs.record.options(queue=q).enqueue(t, value=42)

    driver.run_until(lambda: len(poison_records(driver)) >= len(bad) and jobs.calls(t), timeout_s=20)
    assert [details for _, details in jobs.calls(t)] == [(42,)]  # only the good message ran
    reasons = sorted(r.error.reason for r in poison_records(driver))
    assert reasons == sorted(bad)
    unknown = [r for r in driver.results if r.envelope is not None and r.envelope.job.endswith("not_a_job")]
    assert [r.outcome for r in unknown] == [Outcome.RETRY_SCHEDULED, Outcome.DEAD_LETTERED]  # retried first
    assert not any(r.ran for r in driver.results if r.outcome is not Outcome.SUCCEEDED)
    for record in poison_records(driver):
        assert record.error.message
        if record.error.reason in ("not_utf8", "not_json", "not_envelope"):
            assert record.raw_bytes() == base64.b64decode(bad[record.error.reason])


@pytest.mark.parametrize("target", ["os.system", "subprocess.call", "builtins.exec", "azjobs.configure",
                                    "tests.jobs.failure_jobs._record"])
def test_message_naming_an_unregistered_callable_runs_nothing(driver, tmp_path, target):
    marker = tmp_path / "ran"
    command = f"touch {marker}"
    envelope = Envelope.build(target, (command,), {}, queue=driver.queue, attempt=2)
    driver.client.send_text(driver.queue, envelope.encode())
    driver.run_until(lambda: bool(poison_records(driver)))
    assert not marker.exists() and not os.path.exists(marker)
    assert jobs.calls(command) == []
    assert all(not r.ran for r in driver.results)
    [record] = poison_records(driver)
    assert record.error.reason == "unknown_job" and record.envelope.job == target


class BrokenWritesClient(azjobs.Client):
    """A real client whose sends fail while ``broken`` is set (a storage outage for writes)."""

    broken = False

    def send_text(self, queue, text, **kwargs):
        if self.broken:
            raise azjobs.EnqueueError(f"simulated outage writing to {queue}")
        return super().send_text(queue, text, **kwargs)


@pytest.mark.parametrize("kind", sorted(DRIVERS))
def test_when_the_retry_copy_cannot_be_written_the_original_is_released_not_lost(kind, connection_string, client):
    queue = unique_queue("fail")
    broken = BrokenWritesClient(connection_string)
    broken.ensure_queue(queue)
    settings = QueueSettings(visibility_timeout=timedelta(seconds=2))
    driver = DRIVERS[kind](broken, queue, jobs.registry_for(queue), settings=settings)
    t = f"{kind}-{queue}"
    jobs.flaky.options(queue=queue, client=broken).enqueue(t, 1)
    broken.broken = True
    driver.drain()
    assert len(jobs.calls(t)) == 1
    # Released with host.json visibilityTimeout (2 s): still on the queue, hidden for now.
    assert broken.queue(queue).get_queue_properties().approximate_message_count == 1
    assert broken.queue(queue).peek_messages() == []
    broken.broken = False
    driver.run_until(lambda: len(jobs.calls(t)) >= 2, timeout_s=20)
    assert driver.results[-1].outcome is Outcome.SUCCEEDED
    assert driver.results[-1].envelope.attempt == 1  # the original came back, not a copy
    broken.queue(queue).delete_queue()
    broken.close()


def test_message_that_keeps_crashing_its_worker_is_poisoned_without_running(driver):
    t = token(driver)
    jobs.record.options(queue=driver.queue).enqueue(t)
    raw = driver.client.queue(driver.queue)
    for _ in range(5):  # five deliveries whose worker died before settling
        [message] = raw.receive_messages(max_messages=1, visibility_timeout=30)
        raw.update_message(message.id, message.pop_receipt, visibility_timeout=0)
    driver.run_until(lambda: bool(poison_records(driver)))
    assert jobs.calls(t) == []
    [record] = poison_records(driver)
    if driver.name == "runner":
        assert record.error.reason == "max_dequeue_count" and record.envelope.args == (t,)
    else:  # the host's own pre-run check: the bare body, which tooling still reads
        assert record.from_host and record.envelope.args == (t,)
