"""Leases against Azurite: renewal keeps long jobs single; a crash loses nothing; lost leases are not deleted."""

from __future__ import annotations

import logging
import os
import signal
import time
from datetime import timedelta


from azjobs import QueueSettings
from azjobs.runtime.leases import LeaseKeeper
from azjobs.runtime.worker import Worker
from tests.integration.worker_support import Background, spawn, wait_for
from tests.jobs import worker_jobs as wj

FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.3))


def test_a_job_three_times_longer_than_the_lease_runs_once(client, queue_name, raw_queue, test_dir):
    raw_queue(queue_name)
    client.ensure_queue(queue_name)
    wj.slow.options(queue=queue_name).enqueue("long", 6.0)
    # Two workers with 2 s leases poll the same queue the whole time.
    first = Background(Worker([queue_name], client=client, settings=FAST, lease=2)).start()
    second = Background(Worker([queue_name], client=client, settings=FAST, lease=2)).start()
    try:
        assert wait_for(lambda: wj.runs(test_dir, "long"), timeout=30)
        assert wait_for(lambda: client.queue(queue_name).get_queue_properties().approximate_message_count == 0,
                        timeout=10)
        time.sleep(1.0)  # give a wrongly visible duplicate a chance to be picked up
    finally:
        a, b = first.stop(), second.stop()
    assert len(wj.starts(test_dir, "long")) == 1 and len(wj.runs(test_dir, "long")) == 1
    assert a.succeeded + b.succeeded == 1 and a.lease_lost + b.lease_lost == 0


def test_kill_9_mid_job_loses_nothing(connection_string, client, queue_name, raw_queue, test_dir):
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    wj.slow_once.options(queue=queue_name).enqueue("crash", 60.0)
    worker = spawn(connection_string, test_dir, "-q", queue_name, "-r", "2", "--burst", name="killed")
    try:
        assert wait_for(lambda: wj.starts(test_dir, "crash"), timeout=30), "the job never started"
        killed_at = time.monotonic()
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert wj.runs(test_dir, "crash") == []
    # The message reappears once the last renewed lease (2 s) runs out.
    assert wait_for(lambda: list(queue.peek_messages()), timeout=15)
    assert time.monotonic() - killed_at < 10
    stats = Worker([queue_name], client=client, settings=FAST, burst=True).run()
    assert stats.succeeded == 1
    assert len(wj.runs(test_dir, "crash")) == 1 and len(wj.starts(test_dir, "crash")) == 2
    assert queue.get_queue_properties().approximate_message_count == 0


def test_a_message_removed_under_a_running_job_is_not_deleted_again(client, queue_name, raw_queue, test_dir, caplog):
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    wj.slow.options(queue=queue_name).enqueue("cleared", 2.5)
    with caplog.at_level(logging.WARNING, logger="azjobs.worker"):
        with Background(Worker([queue_name], client=client, settings=FAST, lease=2)) as background:
            assert wait_for(lambda: wj.starts(test_dir, "cleared"), timeout=20)
            queue.clear_messages()  # the renewal at 1 s finds the message gone (404)
            assert wait_for(lambda: wj.runs(test_dir, "cleared"), timeout=20)
            assert wait_for(lambda: background.worker.stats.lease_lost == 1, timeout=10)
            stats = background.stop()
    assert stats.succeeded == 1 and stats.lease_lost == 1
    actions = {getattr(record, "action", None) for record in caplog.records}
    assert {"lease_lost", "delete_skipped"} <= actions


def test_renewal_with_a_stale_pop_receipt_loses_the_lease(client, queue_name, raw_queue):
    queue = raw_queue(queue_name)
    queue.create_queue()
    queue.send_message("aGVsbG8=")
    [first] = queue.receive_messages(visibility_timeout=1)
    time.sleep(1.5)
    [second] = queue.receive_messages(visibility_timeout=30)  # someone else has it now
    assert second.id == first.id and second.pop_receipt != first.pop_receipt
    keeper = LeaseKeeper(1).start()
    try:
        lease = keeper.track(queue_name, queue, first.id, first.pop_receipt)
        assert wait_for(lambda: lease.lost, timeout=5)
        assert keeper.close(lease) is None
    finally:
        keeper.stop()
    queue.delete_message(second.id, second.pop_receipt)  # the owner's receipt still works


def test_renewal_returns_the_newest_pop_receipt_for_the_delete(client, queue_name, raw_queue):
    queue = raw_queue(queue_name)
    queue.create_queue()
    queue.send_message("aGVsbG8=")
    [message] = queue.receive_messages(visibility_timeout=1)
    keeper = LeaseKeeper(1).start()
    try:
        lease = keeper.track(queue_name, queue, message.id, message.pop_receipt)
        assert wait_for(lambda: lease.renewals >= 3, timeout=10)  # held for 1.5 s+ on 1 s leases
        receipt = keeper.close(lease)
    finally:
        keeper.stop()
    assert receipt != message.pop_receipt
    assert list(queue.peek_messages()) == []
    queue.delete_message(message.id, receipt)
    assert queue.get_queue_properties().approximate_message_count == 0
