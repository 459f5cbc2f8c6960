"""Arguments over the message limit travel through Blob Storage (claim check) and are cleaned up."""

from __future__ import annotations

import asyncio
import hashlib
import random
import string

import pytest

from azjobs.cli import poison as poison_cli
from azjobs.model.outcome import MessageInfo, Outcome
from azjobs.model.envelope import Envelope
from azjobs.model.poison_record import PoisonRecord
from tests.conftest import unique_queue
from tests.integration.drivers import DRIVERS, RunnerDriver, drop_queues
from tests.jobs import failure_jobs as jobs

MIB = 1024 * 1024


def big_text(size: int = MIB, seed: int = 5) -> str:
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits + "é✓", k=size))


def blobs(client, prefix: str = "") -> list[str]:
    from azure.core.exceptions import ResourceNotFoundError

    container = client.payloads._client()
    try:
        return [b.name for b in container.list_blobs(name_starts_with=prefix or None)]
    except ResourceNotFoundError:
        return []


@pytest.fixture(params=sorted(DRIVERS))
def driver(request, client):
    queue = unique_queue("big")
    client.ensure_queue(queue)
    made = DRIVERS[request.param](client, queue, jobs.registry_for(queue))
    yield made
    drop_queues(client, queue)


def test_one_mib_argument_round_trips_through_blob_storage_and_is_removed(driver):
    t = f"{driver.name}-{driver.queue}"
    data = big_text()
    job_id = jobs.big.options(queue=driver.queue).enqueue(t, data)
    [message] = driver.client.queue(driver.queue).peek_messages()
    envelope = Envelope.decode(message.content)
    assert envelope.payload_ref and envelope.args == () and len(message.content) < 2_000
    assert blobs(driver.client, job_id) != []

    driver.run_until(lambda: bool(jobs.calls(t)))
    [(_, (size, digest))] = jobs.calls(t)
    assert size == len(data) and digest == hashlib.sha256(data.encode()).hexdigest()
    assert driver.results[-1].outcome is Outcome.SUCCEEDED
    assert blobs(driver.client, job_id) == []


def test_large_job_that_fails_is_poisoned_whole_and_replays(driver):
    t = f"{driver.name}-{driver.queue}"
    data = big_text(200_000, seed=9)
    job_id = jobs.big_fails_once.options(queue=driver.queue).enqueue(t, data)
    driver.run_until(lambda: bool(jobs.calls(t)))
    assert driver.results[-1].outcome is Outcome.DEAD_LETTERED
    # The payload blob is gone; the record, too large for the queue, is stored whole in a blob.
    assert blobs(driver.client, job_id) == []
    [message] = driver.client.queue(driver.queue + "-poison").peek_messages()
    stub = PoisonRecord.decode(message.content)
    assert stub.record_ref and stub.envelope is None and stub.job == jobs.big_fails_once.name
    assert stub.error.type == "RuntimeError" and "first call fails" in stub.error.traceback
    assert blobs(driver.client, "poison/") and stub.record_ref.endswith(f"{stub.id}.json")

    assert poison_cli.main(["requeue", driver.queue, "--all"], client=driver.client) == 0
    driver.run_until(lambda: len(jobs.calls(t)) == 2)
    [(_, first), (_, second)] = jobs.calls(t)
    assert first == second == (len(data), hashlib.sha256(data.encode()).hexdigest())
    assert driver.results[-1].outcome is Outcome.SUCCEEDED
    assert not driver.client.payloads.exists(stub.record_ref)
    assert blobs(driver.client, job_id) == []


def test_enqueue_many_and_async_enqueue_claim_check_too(client):
    queue = unique_queue("big")
    client.ensure_queue(queue)
    driver = RunnerDriver(client, queue, jobs.registry_for(queue))
    data = big_text(100_000, seed=3)
    result = jobs.big.options(queue=queue).enqueue_many([("many-a", data), ("many-b", "small")])
    assert result.ok, result.failures

    async def send_async():
        try:
            return await jobs.big.options(queue=queue, client=client).enqueue_async("async-c", data)
        finally:
            from azjobs.storage.aio import aclose

            await aclose()

    asyncio.run(send_async())
    driver.run_until(lambda: all(jobs.calls(k) for k in ("many-a", "many-b", "async-c")))
    assert jobs.calls("many-a")[0][1][0] == len(data) and jobs.calls("async-c")[0][1][0] == len(data)
    assert jobs.calls("many-b")[0][1][0] == len("small")
    assert all(r.outcome is Outcome.SUCCEEDED for r in driver.results)
    client.queue(queue).delete_queue()


def test_missing_payload_blob_is_poisoned_with_its_reason(client):
    queue = unique_queue("big")
    driver = RunnerDriver(client, queue, jobs.registry_for(queue))
    jobs.big.options(queue=queue).enqueue("missing", big_text(70_000))
    envelope = Envelope.decode(client.queue(queue).peek_messages()[0].content)
    client.payloads.delete(envelope.payload_ref)
    driver.run_until(lambda: bool(driver.results))
    assert driver.results[-1].outcome is Outcome.DEAD_LETTERED
    assert driver.results[-1].extra["reason"] == "payload_missing"
    assert jobs.calls("missing") == []


def test_payload_reference_outside_the_container_is_refused(client):
    queue = unique_queue("big")
    executor = RunnerDriver(client, queue, jobs.registry_for(queue)).executor
    envelope = Envelope.build(jobs.big.name, (), {}, queue=queue, payload_ref="other-container/secret.json")
    result = executor.execute(envelope.encode(), MessageInfo(queue=queue, message_id="m1"))
    assert result.outcome is Outcome.DEAD_LETTERED and result.extra["reason"] == "bad_payload_ref"
    client.queue(queue + "-poison").delete_queue()


def test_near_limit_raw_body_still_reaches_poison(client):
    """A 60 KiB body that is not base64: its poison record is over the limit, so it goes to a blob."""
    queue = unique_queue("big")
    client.ensure_queue(queue)
    body = "!" * 60_000
    client.send_text(queue, body)
    driver = RunnerDriver(client, queue, jobs.registry_for(queue))
    driver.run_until(lambda: bool(driver.results))
    assert driver.results[-1].extra["reason"] == "not_base64"
    [message] = client.queue(queue + "-poison").peek_messages()
    stub = PoisonRecord.decode(message.content)
    assert stub.record_ref and stub.error.reason == "not_base64"
    full = poison_cli.PoisonQueue(client, queue)
    [listed] = full.peek()
    assert full.full(listed).raw_body == body and full.full(listed).raw_form == "wire"
    assert poison_cli.main(["purge", queue, "--yes"], client=client) == 0
    assert not client.payloads.exists(stub.record_ref)
    for name in (queue, queue + "-poison"):
        client.queue(name).delete_queue()
