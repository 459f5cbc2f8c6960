"""The worker's hardening against Azurite: no job strands its message, no lease lapses or is
given up while still ours, a job timeout, host parity for poison queues, and claim-check
blobs that outlive their message's delete.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest

import azjobs
from azjobs.storage.client import Client
from azjobs.execution.executor import Redeliver
from azjobs.hosting import executor as hosted_executor
from azjobs.model.outcome import Outcome
from azjobs.runtime.leases import LeaseKeeper
from azjobs.model.envelope import Envelope
from azjobs.model.poison_record import PoisonRecord
from azjobs.model.settings import QueueSettings
from azjobs.runtime.settlement import Delivery, Settlement
from azjobs.runtime.settler import Settler
from azjobs.testing import RecordingExecutor
from azjobs.runtime.worker import Worker
from devtools.proxy import FaultProxy
from tests.functions_support import fresh_app, invoke, queue_message_from, receive_one
from tests.integration.worker_support import Background, wait_for
from tests.jobs import hardening_jobs as hj

FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.5), visibility_timeout=timedelta(0))


def run_burst(worker: Worker, timeout: float = 60.0):
    """Run ``worker`` in burst mode on a thread; fail (not hang) if it does not finish."""
    worker.burst = True
    background = Background(worker).start()
    background.thread.join(timeout)
    if background.thread.is_alive():
        worker.stop(force=True)
        background.thread.join(10)
        pytest.fail(f"the burst worker did not finish within {timeout}s: in flight {worker.inflight.count()}, stats {worker.stats}")
    if background.error is not None:
        raise background.error
    return background.stats


def poison_records(raw_queue, queue: str) -> list[PoisonRecord]:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return [PoisonRecord.decode(m.content, "base64", queue)
                for m in raw_queue(f"{queue}-poison").peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def core(client, settings=FAST, registry=hj.REGISTRY) -> RecordingExecutor:
    return RecordingExecutor(registry=registry, client=client, settings=settings)


@pytest.fixture
def proxy(azurite):
    server = FaultProxy(azurite.queue_port).start()
    yield server
    server.stop()


# -- 1. BaseException never kills a job thread or strands a message -------------------
def test_jobs_calling_sys_exit_reach_an_outcome_and_the_worker_keeps_its_threads(client, queue_name, raw_queue,
                                                                                test_dir):
    raw_queue(queue_name)
    exits = [f"exit{i}" for i in range(4)]
    good = [f"good{i}" for i in range(6)]
    for key in exits:
        hj.exits.options(queue=queue_name).enqueue(key)
    for key in good:
        hj.work.options(queue=queue_name).enqueue(key)
    # -c 2: with a dead thread per sys.exit() the worker would run nothing after the first two
    stats = run_burst(Worker([queue_name], client=client, executor=core(client), concurrency=2))
    assert stats.dead_lettered == len(exits) and stats.retry_scheduled == len(exits)
    assert all(len(hj.times(key, "runs")) == 1 for key in good)
    assert all(len(hj.times(key, "started")) == 2 for key in exits)  # the attempt and its retry
    records = poison_records(raw_queue, queue_name)
    assert sorted(r.envelope.args[0] for r in records) == exits
    assert {(r.error.type, r.error.message, r.attempts) for r in records} == {("SystemExit", "7", 2)}
    assert raw_queue(queue_name).get_queue_properties().approximate_message_count == 0


# -- 4. the job timeout ----------------------------------------------------------------
def test_a_job_past_its_timeout_is_released_named_in_the_log_and_poisoned_at_max_dequeue(client, queue_name,
                                                                                         raw_queue, test_dir,
                                                                                         caplog):
    raw_queue(queue_name)
    settings = QueueSettings(max_polling_interval=timedelta(seconds=0.5), max_dequeue_count=2,
                             function_timeout=timedelta(seconds=1))
    hang_id = hj.hang.options(queue=queue_name).enqueue("hung", 2.5)
    hj.work.options(queue=queue_name).enqueue("alongside", 0.2)
    with caplog.at_level(logging.INFO, logger="azjobs"):
        # -c 3: the two stuck threads (2.5 s jobs abandoned after 1 s) stay below -c
        worker = Worker([queue_name], client=client, executor=core(client, settings), concurrency=3)
        stats = run_burst(worker)
    assert worker.timeout_s == 1.0  # from host.json functionTimeout
    assert (stats.timed_out, stats.redelivered, stats.dead_lettered) == (2, 1, 1), stats
    assert len(hj.times("alongside", "runs")) == 1 and not stats.restart_needed
    timed_out = [r for r in caplog.records if getattr(r, "action", None) == "job_timed_out"]
    assert len(timed_out) == 2 and all(r.job == "hard.hang" and r.job_id == hang_id for r in timed_out)
    (record,) = poison_records(raw_queue, queue_name)
    assert record.error.reason == "max_dequeue_count" and record.error.type == "azjobs.errors.JobTimeout"
    assert record.envelope.id == hang_id and record.dequeue_count == 2
    assert len(hj.times("hung", "started")) == 2


def test_a_worker_whose_threads_are_all_stuck_in_timed_out_jobs_stops_for_a_restart(client, queue_name, raw_queue,
                                                                                     test_dir):
    raw_queue(queue_name)
    hj.hang.options(queue=queue_name).enqueue("stuck", 3.0)
    hj.work.options(queue=queue_name).enqueue("replacement", 0.0)
    worker = Worker([queue_name], client=client, executor=core(client), concurrency=1, timeout=1.0)
    background = Background(worker).start()  # not burst: it stops by itself
    background.thread.join(20)
    assert not background.thread.is_alive(), "the worker kept going with every thread stuck"
    stats = background.stats
    assert stats.restart_needed and stats.stuck == 1 and stats.timed_out == 1
    # the replacement thread still finished what it had started within the grace period
    assert len(hj.times("replacement", "runs")) == 1


def test_an_async_job_past_its_timeout_is_cancelled(client, queue_name, raw_queue, test_dir):
    raw_queue(queue_name)
    settings = QueueSettings(max_polling_interval=timedelta(seconds=0.5), max_dequeue_count=1)
    hj.async_hang.options(queue=queue_name).enqueue("ahung", 30)
    worker = Worker([queue_name], client=client, executor=core(client, settings), timeout=1.0)
    stats = run_burst(worker, timeout=30)
    assert stats.timed_out == 1 and stats.dead_lettered == 1
    assert wait_for(lambda: len(hj.times("ahung", "cancelled")) == 1, timeout=5)
    assert hj.times("ahung", "runs") == []


# -- 3. an unanswered renewal that storage applied -------------------------------------
def test_a_renewal_whose_answer_is_lost_does_not_run_the_job_twice(proxy, connection_string, queue_name, raw_queue,
                                                                   test_dir, caplog):
    raw_queue(queue_name).create_queue()
    proxied = Client(proxy.connection_string(connection_string), settings=FAST)
    try:
        hj.work.options(queue=queue_name, client=proxied).enqueue("long", 4.0)
        # the first lease renewal (PUT at half the 2 s lease) reaches storage; its answer is lost
        proxy.fail("PUT", "drop_after", path_contains="/messages/")
        with caplog.at_level(logging.INFO, logger="azjobs"):
            with Background(Worker([queue_name], client=proxied, executor=core(proxied), lease=2)) as background:
                assert wait_for(lambda: proxy.faults["PUT"] >= 1, timeout=10)
                proxy.heal("PUT")
                assert wait_for(lambda: len(hj.times("long", "runs")) >= 1, timeout=15)
                time.sleep(4)  # a message whose delete was skipped would be back and running by now
                stats = background.stop()
    finally:
        proxied.close()
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert "lease_receipt_unknown" in actions and "lease_recovered" in actions
    assert "lease_lost" not in actions
    assert len(hj.times("long", "started")) == 1 and len(hj.times("long", "runs")) == 1
    assert stats.lease_lost == 0 and stats.recovered == 1
    assert raw_queue(queue_name).get_queue_properties().approximate_message_count == 0


# -- 9. poison queues are created like the host creates them ---------------------------
def test_a_worker_without_queue_creation_still_creates_the_poison_queue(connection_string, queue_name, raw_queue,
                                                                        test_dir):
    raw_queue(queue_name).create_queue()
    strict = Client(connection_string, settings=FAST, create_queues=False)
    try:
        job_id = hj.fatal.options(queue=queue_name, client=strict).enqueue("nopoisonq")
        stats = run_burst(Worker([queue_name], client=strict, executor=core(strict)), timeout=30)
    finally:
        strict.close()
    assert stats.dead_lettered == 1 and stats.redelivered == 0
    (record,) = poison_records(raw_queue, queue_name)
    assert record.envelope.id == job_id and record.error.reason == "fail"


# -- 7. the lease is kept until the poison record is durable and the message deleted ----
def test_a_slow_dead_letter_hook_at_max_dequeue_never_lets_the_message_reappear(client, queue_name, raw_queue,
                                                                                test_dir, monkeypatch):
    queue = raw_queue(queue_name)
    queue.create_queue()
    settings = QueueSettings(max_dequeue_count=1)
    executor = hosted_executor(registry=hj.REGISTRY, client=client, settings=settings)
    monkeypatch.setitem(hj.HOOK_SECONDS, "value", 3.0)  # longer than the 2 s lease
    hj.hooked.clear()
    hj.fatal.options(queue=queue_name).enqueue("slowhook")
    keeper, settler = LeaseKeeper(2).start(), Settler(1).start()
    try:
        message = receive_one(queue, visibility_timeout=2)
        delivery = Delivery(queue_name, queue, message, keeper.track(queue_name, queue, message.id,
                                                                      message.pop_receipt))
        settlement = Settlement(executor=executor, keeper=keeper, settler=settler)
        # the core could not settle this delivery, and it is the last one the host allows
        worker = threading.Thread(target=settlement.redeliver, args=(delivery, Redeliver("storage hiccup")))
        worker.start()
        seen = []
        while worker.is_alive():  # another consumer polling all through the hook
            seen += [m.id for m in queue.receive_messages(max_messages=1, visibility_timeout=1)]
            time.sleep(0.2)
        settler.flush(10)
    finally:
        settler.stop()
        keeper.stop()
    assert seen == [], "the message reappeared while its poison record and hook were in progress"
    assert len(hj.hooked) == 1 and len(poison_records(raw_queue, queue_name)) == 1
    assert queue.get_queue_properties().approximate_message_count == 0


# -- 8. claim-check blobs outlive the message's delete ---------------------------------
def _blobs(client) -> list[str]:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return [b.name for b in client.payloads._client().list_blobs()]
    except ResourceNotFoundError:
        return []


def big(n: int = 60_000) -> str:
    return ("0123456789abcdef" * (n // 16 + 1))[:n]


def test_a_claim_checked_job_whose_delete_failed_runs_again_instead_of_being_poisoned(
        proxy, connection_string, client, queue_name, raw_queue, test_dir):
    raw_queue(queue_name).create_queue()
    container = f"p{queue_name[2:]}"  # this test's own payload container
    proxied = Client(proxy.connection_string(connection_string), settings=FAST, payload_container=container)
    try:
        hj.work.options(queue=queue_name, client=proxied).enqueue("bigdel", 0.0, big())
        assert len(_blobs(proxied)) == 1
        proxy.fail("DELETE", "error", path_contains="/messages/")  # the job succeeds; its delete does not
        with Background(Worker([queue_name], client=proxied, executor=core(proxied), lease=3)) as background:
            # redelivered after the lease with the delete still failing: the arguments are still
            # there, so the job runs again (it was poisoned as payload_missing before)
            assert wait_for(lambda: len(hj.times("bigdel", "runs")) >= 2, timeout=30)
            proxy.heal("DELETE")
            # removed once the message is gone
            assert wait_for(lambda: _blobs(proxied) == [], timeout=30), (_blobs(proxied), background.worker.stats)
            stats = background.stop()
        assert stats.delete_failed >= 1 or proxy.faults["DELETE"] >= 2
        assert stats.dead_lettered == 0 and poison_records(raw_queue, queue_name) == []
        assert raw_queue(queue_name).get_queue_properties().approximate_message_count == 0
    finally:
        proxied.close()


def test_a_claim_checked_jobs_blob_is_removed_when_its_delete_landed_but_the_answer_was_lost(
        proxy, connection_string, client, queue_name, raw_queue, test_dir):
    raw_queue(queue_name).create_queue()
    container = f"r{queue_name[2:]}"  # this test's own payload container
    proxy.reconnect_upstream = True  # only the injected fault breaks a call
    proxied = Client(proxy.connection_string(connection_string), settings=FAST, payload_container=container)
    try:
        hj.work.options(queue=queue_name, client=proxied).enqueue("bigreset", 0.0, big())
        assert len(_blobs(proxied)) == 1
        # Storage deletes the message; the connection is reset before its answer comes back.
        proxy.fail("DELETE", "drop_after", path_contains="/messages/", times=1)
        with Background(Worker([queue_name], client=proxied, executor=core(proxied))) as background:
            assert wait_for(lambda: proxy.faults["DELETE"] == 1, timeout=30), background.worker.stats
            # the next try finds the message gone, under the worker's lease: that was our delete
            assert wait_for(lambda: _blobs(proxied) == [], timeout=30), (_blobs(proxied), background.worker.stats)
            stats = background.stop()
        assert proxy.requests["DELETE"] == 2  # the one applied, and the one sent again that read 404
        assert len(hj.times("bigreset", "runs")) == 1
        assert stats.succeeded == 1 and stats.delete_failed == 0 and stats.dead_lettered == 0
        assert raw_queue(queue_name).get_queue_properties().approximate_message_count == 0
    finally:
        proxied.close()


def test_on_functions_a_redelivered_claim_checked_job_that_finished_is_skipped_not_poisoned(
        connection_string, queue_name, raw_queue, test_dir):
    queue = raw_queue(queue_name)
    queue.create_queue()
    container = f"f{queue_name[2:]}"
    producer = Client(connection_string, payload_container=container)
    executor = RecordingExecutor(registry=hj.REGISTRY, client=producer, settings=QueueSettings())
    app = fresh_app(registry=hj.REGISTRY, executor=executor, queues=None)
    try:
        job_id = hj.work.options(queue=queue_name, client=producer).enqueue("bigfn", 0.0, big())
        first = receive_one(queue, visibility_timeout=1)
        # the function generated for the jobs' declared queue gets the message, and returns ...
        invoke(app, hj.QUEUE, queue_message_from(first))
        # ... and the host's delete of the message fails: it comes back after its visibility
        received: list = []
        assert wait_for(lambda: received.append(receive_one(queue)) or received[-1] is not None, timeout=10)
        second = received[-1]
        assert second.id == first.id and second.dequeue_count == 2
        invoke(app, hj.QUEUE, queue_message_from(second))
        queue.delete_message(second.id, second.pop_receipt)
    finally:
        producer.close()
    assert [r.outcome for r in executor.results] == [Outcome.SUCCEEDED, Outcome.SKIPPED]
    assert executor.results[1].envelope.id == job_id
    assert len(hj.times("bigfn", "runs")) == 1 and poison_records(raw_queue, queue_name) == []


def _fits_but_retry_does_not(queue: str) -> str:
    """A payload whose message fits the limit but whose retry copy (attempt 2, first_failed_at) does not."""
    low, high = 40_000, 49_152
    while low < high:
        mid = (low + high + 1) // 2
        envelope = Envelope.build("hard.flaky_big", ("retrybig", "x" * mid), queue=queue)
        try:
            envelope.encode()
            low = mid
        except azjobs.PayloadTooLargeError:
            high = mid - 1
    payload = "x" * low
    copy = Envelope.build("hard.flaky_big", ("retrybig", payload), queue=queue).evolve(
        attempt=2, first_failed_at="2026-11-28T00:00:00.000Z")
    with pytest.raises(azjobs.PayloadTooLargeError):
        copy.encode()
    return payload


def test_a_retry_copy_too_large_for_a_message_goes_through_real_blob_storage(connection_string, queue_name,
                                                                            raw_queue, test_dir):
    raw_queue(queue_name).create_queue()
    container = f"r{queue_name[2:]}"
    client = Client(connection_string, settings=FAST, payload_container=container)
    try:
        payload = _fits_but_retry_does_not(queue_name)
        hj.flaky_big.options(queue=queue_name, client=client).enqueue("retrybig", payload)
        assert _blobs(client) == []  # the first message carries its arguments inline
        stats = run_burst(Worker([queue_name], client=client, executor=core(client)), timeout=30)
        assert stats.retry_scheduled == 1 and stats.succeeded == 1
        assert (test_dir / "retrybig.payload").read_text() == payload  # loaded back from Blob Storage
        assert _blobs(client) == []  # and removed after the retry's message was deleted
    finally:
        client.close()
