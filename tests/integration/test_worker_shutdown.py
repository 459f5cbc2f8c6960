"""Graceful and forced shutdown of ``azjobs`` worker processes, and two workers sharing a queue."""

from __future__ import annotations

import json
import signal
import time
from datetime import timedelta


from azjobs import Call, QueueSettings
from azjobs.runtime.worker import Worker
from tests.integration.worker_support import log_of, spawn, wait_for
from tests.jobs import worker_jobs as wj

FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.3))


def test_sigterm_finishes_running_jobs_releases_the_rest_and_exits_0(connection_string, client, queue_name,
                                                                      raw_queue, test_dir, processes):
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    keys = [f"s{i}" for i in range(6)]
    wj.slow.options(queue=queue_name).enqueue_many([Call(k, 2.0) for k in keys]).raise_for_failures()
    # 2 run at once, 6 are fetched: 4 wait unstarted under a 60 s lease.
    worker = spawn(connection_string, test_dir, "-q", queue_name, "-c", "2", "-f", "6", "-r", "60",
                   "--log-format", "json")
    processes.append(worker)
    assert wait_for(lambda: sum(len(wj.starts(test_dir, k)) for k in keys) == 2, timeout=30)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, log_of(test_dir)
    started = [k for k in keys if wj.starts(test_dir, k)]
    assert len(started) == 2 and all(len(wj.runs(test_dir, k)) == 1 for k in started)
    # The 4 unstarted messages are visible at once, not after the 60 s lease.
    assert len(list(queue.peek_messages(max_messages=32))) == 4
    stats = Worker([queue_name], client=client, settings=FAST, concurrency=8, burst=True).run()
    assert stats.succeeded == 4
    assert {k: len(wj.runs(test_dir, k)) for k in keys} == {k: 1 for k in keys}  # nothing lost or run twice
    events = [json.loads(line) for line in log_of(test_dir).splitlines() if line.startswith("{")]
    actions = [event["action"] for event in events if "action" in event]
    assert "worker_stopping" in actions and "worker_stopped" in actions
    assert actions.count("job_succeeded") == 2


def test_a_second_signal_stops_at_once_and_deletes_nothing_unfinished(connection_string, client, queue_name,
                                                                      raw_queue, test_dir, processes):
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    wj.slow.options(queue=queue_name).enqueue("forced", 60.0)
    worker = spawn(connection_string, test_dir, "-q", queue_name, "-r", "2", "--grace", "60")
    processes.append(worker)
    assert wait_for(lambda: wj.starts(test_dir, "forced"), timeout=30)
    worker.send_signal(signal.SIGTERM)
    assert wait_for(lambda: "worker_stopping" in log_of(test_dir) or "stopping" in log_of(test_dir), timeout=10)
    time.sleep(1.2)  # within 1 s a second signal is the same stop delivered twice
    worker.send_signal(signal.SIGINT)
    assert worker.wait(15) != 0
    assert wj.runs(test_dir, "forced") == []
    assert queue.get_queue_properties().approximate_message_count == 1
    assert wait_for(lambda: list(queue.peek_messages()), timeout=15)  # back after the 2 s lease


def test_two_workers_split_a_queue_with_nothing_lost(connection_string, client, queue_name, raw_queue, test_dir,
                                                     processes):
    raw_queue(queue_name)
    client.ensure_queue(queue_name)
    workers = [spawn(connection_string, test_dir, "-q", queue_name, "-c", "4", "-f", "4", name=f"w{i}")
               for i in range(2)]
    processes.extend(workers)
    assert wait_for(lambda: all("worker started" in log_of(test_dir, f"w{i}") for i in range(2)), timeout=30)
    keys = [f"t{i}" for i in range(40)]
    wj.slow.options(queue=queue_name).enqueue_many([Call(k, 0.1) for k in keys]).raise_for_failures()
    assert wait_for(lambda: all(wj.runs(test_dir, k) for k in keys), timeout=60)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    assert [worker.wait(30) for worker in workers] == [0, 0]
    lines = [line for k in keys for line in wj.runs(test_dir, k)]
    assert len(lines) == 40  # each job exactly once
    assert {line.split()[0] for line in lines} == {str(worker.pid) for worker in workers}  # both took a share
    assert client.queue(queue_name).get_queue_properties().approximate_message_count == 0
