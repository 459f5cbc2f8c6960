"""The runner against Azurite: batches, the concurrency limit, async jobs, several queues, failures."""

from __future__ import annotations

from datetime import timedelta

import pytest

import azjobs
from azjobs import Call, QueueSettings
from azjobs.hosting import executor as hosted_executor
from azjobs.errors import QueueNotFoundError
from azjobs.model.envelope import Envelope
from azjobs.model.poison_record import PoisonRecord
from azjobs.runtime.worker import Worker, drain
from tests.conftest import unique_queue
from tests.jobs import worker_jobs as wj

FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.5))


def total_runs(directory, keys):
    return {key: len(wj.runs(directory, key)) for key in keys}


def test_burst_works_every_message_once_in_real_batches(client, queue_name, raw_queue, test_dir):
    keys = [f"k{i}" for i in range(64)]
    wj.record.options(queue=queue_name).enqueue_many([Call(k) for k in keys]).raise_for_failures()
    raw_queue(queue_name)
    stats = Worker([queue_name], client=client, settings=FAST, fetch=32, concurrency=48, burst=True).run()
    assert total_runs(test_dir, keys) == {k: 1 for k in keys}
    assert stats.succeeded == 64 and stats.fetched == 64
    # 64 messages in batches of 32: a handful of receive calls, not one per message.
    assert stats.receives <= 6
    assert client.queue(queue_name).get_queue_properties().approximate_message_count == 0


def test_concurrency_limit_covers_sync_and_async_jobs(client, queue_name, raw_queue, test_dir):
    wj.reset_peak()
    wj.concurrent.options(queue=queue_name).enqueue_many([Call(0.15) for _ in range(12)]).raise_for_failures()
    wj.concurrent_async.options(queue=queue_name).enqueue_many([Call(0.15) for _ in range(12)]).raise_for_failures()
    raw_queue(queue_name)
    stats = Worker([queue_name], client=client, settings=FAST, fetch=8, concurrency=3, burst=True).run()
    assert stats.succeeded == 24
    assert wj.peak <= 3 and stats.peak_running <= 3
    assert wj.peak >= 2  # it did run jobs side by side


def test_async_jobs_run_on_one_shared_event_loop(client, queue_name, raw_queue, test_dir):
    wj.record_async.options(queue=queue_name).enqueue_many([Call(f"a{i}") for i in range(6)]).raise_for_failures()
    raw_queue(queue_name)
    stats = Worker([queue_name], client=client, settings=FAST, burst=True).run()
    assert stats.succeeded == 6
    lines = [line for i in range(6) for line in wj.runs(test_dir, f"a{i}")]
    assert len(lines) == 6
    assert {line.split()[1] for line in lines} == {"azjobs-async"}  # the loop thread, not job threads
    assert len({line.split()[3] for line in lines}) == 1  # one loop for all


def test_several_queues_in_one_worker(client, raw_queue, test_dir):
    queues = [unique_queue("wa"), unique_queue("wb"), unique_queue("wc")]
    for index, queue in enumerate(queues):
        raw_queue(queue)
        wj.record.options(queue=queue).enqueue_many([Call(f"{index}-{i}") for i in range(5)]).raise_for_failures()
    stats = Worker(queues, client=client, settings=FAST, burst=True).run()
    assert stats.succeeded == 15
    assert stats.per_queue == {queue: 5 for queue in queues}
    assert all(len(wj.runs(test_dir, f"{q}-{i}")) == 1 for q in range(3) for i in range(5))


def test_drain_is_burst_mode(client, queue_name, raw_queue, test_dir):
    wj.record.options(queue=queue_name).enqueue_many([Call(f"d{i}") for i in range(5)]).raise_for_failures()
    raw_queue(queue_name)
    assert drain(client, [queue_name], fetch=4, lease_s=10) == 5
    assert all(len(wj.runs(test_dir, f"d{i}")) == 1 for i in range(5))


def test_a_missing_queue_is_a_clear_error_at_start(client):
    with pytest.raises(QueueNotFoundError, match="azjobs --create"):
        Worker([unique_queue("missing")], client=client, burst=True).run()


def test_a_failed_job_is_settled_by_the_core_and_deleted(client, queue_name, raw_queue, test_dir):
    wj.fail.options(queue=queue_name).enqueue("f1")
    poison = raw_queue(f"{queue_name}-poison")
    raw_queue(queue_name)
    stats = Worker([queue_name], client=client, settings=FAST, burst=True).run()
    assert stats.dead_lettered == 1 and len(wj.starts(test_dir, "f1")) == 1
    assert client.queue(queue_name).get_queue_properties().approximate_message_count == 0
    [message] = poison.receive_messages()
    assert PoisonRecord.decode(message.content, "base64", queue_name).error.reason == "job_failed"


def poison_only_client(azurite, queue: str, settings: QueueSettings) -> azjobs.Client:
    """A client that may add messages to ``<queue>-poison`` and nowhere else (a service SAS)."""
    from datetime import datetime, timezone

    from azure.storage.queue import QueueSasPermissions, generate_queue_sas

    from devtools.azurite import ACCOUNT, KEY

    sas = generate_queue_sas(ACCOUNT, f"{queue}-poison", KEY, permission=QueueSasPermissions(add=True),
                             expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    return azjobs.Client(f"QueueEndpoint=http://127.0.0.1:{azurite.queue_port}/{ACCOUNT};SharedAccessSignature={sas}",
                         settings=settings, create_queues=False)


def test_redelivery_then_poison_at_max_dequeue_count_like_the_host(azurite, client, queue_name, raw_queue, test_dir):
    # The core may write the poison record but not the retry copy, so it raises Redeliver on a
    # retryable failure, and the runner must act as the host does: release, then poison.
    settings = QueueSettings(max_polling_interval=timedelta(seconds=0.5), max_dequeue_count=2)
    work = raw_queue(queue_name)
    work.create_queue()
    poison = raw_queue(f"{queue_name}-poison")
    poison.create_queue()
    limited = poison_only_client(azurite, queue_name, settings)
    envelope = Envelope.build("wt.fail_retry", ("r1",), queue=queue_name)
    work.send_message(envelope.encode("base64"))
    executor = hosted_executor(client=limited, settings=settings)
    stats = Worker([queue_name], client=client, executor=executor, settings=settings, burst=True).run()
    # dequeue 1: released (visibilityTimeout 0); dequeue 2 >= maxDequeueCount: poisoned, deleted.
    assert len(wj.starts(test_dir, "r1")) == 2
    assert stats.redelivered == 1 and stats.dead_lettered == 1
    assert work.get_queue_properties().approximate_message_count == 0
    [message] = poison.receive_messages()
    record = PoisonRecord.decode(message.content, "base64", queue_name)
    assert record.error.reason == "max_dequeue_count" and record.envelope.id == envelope.id
    limited.close()


def test_released_message_waits_visibility_timeout(client, raw_queue, test_dir):
    # A queue named "...-poison" has no poison twin: the core cannot dead-letter and raises Redeliver.
    queue_name = unique_queue("t") + "-poison"
    settings = QueueSettings(max_polling_interval=timedelta(seconds=0.5), visibility_timeout=timedelta(seconds=3))
    work = raw_queue(queue_name)
    work.create_queue()
    work.send_message(Envelope.build("wt.fail", ("v1",), queue=queue_name).encode("base64"))
    # Burst: after the release the queue looks empty, so the worker exits.
    stats = Worker([queue_name], client=client, settings=settings, burst=True).run()
    assert stats.redelivered == 1 and len(wj.starts(test_dir, "v1")) == 1
    assert list(work.peek_messages()) == []  # hidden for visibilityTimeout
    assert work.get_queue_properties().approximate_message_count == 1
    from tests.integration.worker_support import wait_for

    assert wait_for(lambda: list(work.peek_messages()), timeout=10)
    [message] = work.peek_messages()
    assert message.dequeue_count == 1


def test_already_poisoned_message_is_not_run(client, queue_name, raw_queue, test_dir):
    settings = QueueSettings(max_polling_interval=timedelta(seconds=0.5), max_dequeue_count=1)
    work = raw_queue(queue_name)
    work.create_queue()
    poison = raw_queue(f"{queue_name}-poison")
    work.send_message(Envelope.build("wt.record", ("p1",), queue=queue_name).encode("base64"))
    [taken] = work.receive_messages(visibility_timeout=30)  # a crashed delivery: dequeueCount 1
    work.update_message(taken.id, taken.pop_receipt, visibility_timeout=0)
    stats = Worker([queue_name], client=client, settings=settings, burst=True).run()
    assert wj.runs(test_dir, "p1") == []  # dequeueCount 2 > maxDequeueCount 1: poisoned before running
    assert stats.dead_lettered == 1
    [message] = poison.receive_messages()
    assert PoisonRecord.decode(message.content, "base64", queue_name).error.reason == "max_dequeue_count"


def test_a_body_that_is_not_base64_goes_to_poison_raw(client, queue_name, raw_queue, test_dir):
    work = raw_queue(queue_name)
    work.create_queue()
    poison = raw_queue(f"{queue_name}-poison")
    work.send_message("this is not base64 !!")
    stats = Worker([queue_name], client=client, settings=FAST, burst=True).run()
    assert stats.dead_lettered == 1
    [message] = poison.receive_messages()
    record = PoisonRecord.decode(message.content, "base64", queue_name)
    assert record.error.reason == "not_base64" and record.raw_body == "this is not base64 !!"
