"""Storage outage: the queue service is cut for 10 s in the middle of a drain.

A worker drains 300 jobs through a fault proxy; after 60 have finished the proxy resets
every connection for 10 s (storage unreachable), then forwards again. Three producers keep
enqueuing through the same proxy the whole time: the sends that raised are not counted,
every send reported as successful must run. The worker must survive (one process, exit 0
on SIGTERM), back off while storage is gone and resume when it is back.
"""

from __future__ import annotations

import threading
import time

import azjobs
from azjobs import Call
from tests.jobs import reliability_jobs as rel
from tests.reliability.support import (Ledger, actions, all_finished, log_text, message_count, report, spawn, stop,
                                       wait_for)

PRELOADED = 300
OUTAGE_S = 10.0
JOB_S = 0.1


class Producer:
    """Enqueues a job every ``interval`` s on each of ``threads`` threads until stopped; keeps what succeeded."""

    def __init__(self, client: azjobs.Client, queue: str, threads: int = 3, interval: float = 0.2) -> None:
        self.call = rel.work.options(queue=queue, client=client)
        self.interval = interval
        self.succeeded: list[str] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), name=f"producer-{n}", daemon=True)
                         for n in range(threads)]

    def _run(self, thread: int) -> None:
        index = 0
        while not self._stop.is_set():
            key = f"e{thread}-{index:04d}"
            index += 1
            try:
                self.call.enqueue(key, JOB_S)
            except Exception:  # an enqueue reported as failed: not counted, may or may not run
                self.failed.append(key)
            else:
                self.succeeded.append(key)
            self._stop.wait(self.interval)

    def __enter__(self) -> "Producer":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def test_a_10_s_storage_outage_mid_drain_is_survived_and_loses_nothing(proxy, proxied, client, queue_name, raw_queue,
                                                                        test_dir, processes):
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    preloaded = [f"p{i:03d}" for i in range(PRELOADED)]
    rel.work.options(queue=queue_name).enqueue_many([Call(key, JOB_S) for key in preloaded]).raise_for_failures()
    worker = spawn(proxied, test_dir, "-q", queue_name, "-c", "4", "-f", "4", "-r", "5")
    processes.append(worker)
    producer_client = azjobs.Client(proxied, create_queues=False)
    try:
        with Producer(producer_client, queue_name) as producer:
            assert wait_for(lambda: Ledger.read(test_dir).finished(preloaded) >= 60, timeout=60), log_text(test_dir)
            proxy.cut()
            finished_at_cut = Ledger.read(test_dir).finished(preloaded)
            time.sleep(OUTAGE_S)
            assert worker.poll() is None, "the worker died during the outage"
            proxy.restore()
            time.sleep(2.0)  # keep producing after the service is back
        keys = preloaded + producer.succeeded
        assert wait_for(all_finished(test_dir, keys), timeout=120), f"lost: {Ledger.read(test_dir).lost(keys)}"
        # Everything settles: runs whose delete died in the outage come back after their lease and are deleted.
        assert wait_for(lambda: message_count(queue) == 0, timeout=60), "messages left on the queue"
        assert worker.poll() is None, "the worker died"
        assert stop(worker) == 0, log_text(test_dir)[-3000:]
    finally:
        producer_client.close()

    ledger = Ledger.read(test_dir)
    events = actions(test_dir)
    lost = ledger.lost(keys)
    report("outage", jobs=len(keys), outage_s=OUTAGE_S, finished_before_cut=finished_at_cut,
           enqueued_ok=len(producer.succeeded), enqueue_failed=len(producer.failed),
           failed_enqueues_that_ran=ledger.finished(producer.failed),
           receive_errors=events.count("receive_failed"), connections_reset=proxy.resets,
           ran_twice=len(ledger.duplicates(keys)), lost=len(lost))
    assert lost == []
    assert finished_at_cut < PRELOADED, "the drain was over before the outage began"
    # The worker noticed the outage: its receives failed, or (when deletes still pending kept it
    # from fetching, which is the back-pressure wanted) its deletes were retried.
    assert {"receive_failed", "delete_retry", "delete_failed"} & set(events), "the worker never saw the outage"
    if "receive_failed" in events:
        assert "storage_recovered" in events
    assert {pid for key in keys for pid, _ in ledger.finishes[key]} == {worker.pid}  # never restarted
