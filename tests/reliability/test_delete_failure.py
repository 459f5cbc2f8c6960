"""Delete failure: jobs succeed but their deletes fail for a while.

A fault proxy fails every message DELETE, first answering 500, then closing the connection,
for longer than a delete's retries last (the settler's 4 attempts, each with one SDK retry),
so deletes give up. Those jobs come back when their 3 s lease ends and run again; each extra
run needs a lease to pass (no rerun within one lease), and nothing is lost. Jobs enqueued
after the deletes work again run exactly once.
"""

from __future__ import annotations

import math
import time

from azjobs import Call
from tests.jobs import reliability_jobs as rel
from tests.reliability.support import (Ledger, actions, all_finished, log_text, message_count, report, spawn, stop,
                                       wait_for)

LEASE_S = 3
# Deletes fail at least this long: half of it answered 500, half with the connection dropped ...
FAULT_S = 6.0
# ... and on until a delete gave up (its 4 attempts 0.2/0.4/0.8 s apart, each with one SDK retry
# 0-3.5 s later, span at most about 16 s) and a job ran again; never longer than FAULT_MAX_S.
DELETE_SPAN_S = 16.0
FAULT_MAX_S = 45.0
# One receive's worth (-f 8): the jobs that run during the fault are all fetched at once, so
# what the worker fetches next is the messages whose delete failed, not fresh ones.
DURING = 8
AFTER = 40
JOB_S = 0.05
TOLERANCE_S = 1.0  # receive-to-start delay, clock granularity
# After the fault, deletes stuck in retries (the settler's and the SDK's back-off) drain within a few seconds.
SETTLE_S = 5.0


def _queue_missing_or_empty(queue_client) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return message_count(queue_client) == 0
    except ResourceNotFoundError:
        return True


def _reran(test_dir, keys) -> list[str]:
    """Keys whose job started more than once."""
    starts = Ledger.read(test_dir).starts
    return [key for key in keys if len(starts.get(key, ())) > 1]


def test_failed_deletes_rerun_a_job_at_most_once_per_lease_and_lose_nothing(proxy, proxied, client, queue_name,
                                                                            raw_queue, test_dir, processes):
    queue = raw_queue(queue_name)
    poison = raw_queue(f"{queue_name}-poison")
    client.ensure_queue(queue_name)
    # Only the injected faults fail deletes: a connection Azurite closed while idle (during the
    # settle time) is replaced, as without the proxy, rather than dropping the next delete.
    proxy.reconnect_upstream = True
    worker = spawn(proxied, test_dir, "-q", queue_name, "-c", "16", "-f", "8", "-r", str(LEASE_S))
    processes.append(worker)
    assert wait_for(lambda: "worker_started" in actions(test_dir), timeout=30), log_text(test_dir)

    during = [f"a{i:03d}" for i in range(DURING)]
    proxy.fail("DELETE", "error", path_contains="/messages/")
    began = time.monotonic()
    rel.work.options(queue=queue_name).enqueue_many([Call(key, JOB_S) for key in during]).raise_for_failures()
    time.sleep(FAULT_S / 2)
    proxy.fail("DELETE", "drop", path_contains="/messages/")
    time.sleep(FAULT_S / 2)

    def gave_up_and_reran() -> bool:
        gave_up = "delete_failed" in actions(test_dir) or time.monotonic() - began >= DELETE_SPAN_S
        return gave_up and bool(_reran(test_dir, during))

    assert wait_for(gave_up_and_reran, timeout=FAULT_MAX_S - FAULT_S), (
        f"after {FAULT_MAX_S}s of failing deletes no delete gave up or no job ran again; "
        f"worker actions: {sorted(set(actions(test_dir)))}")
    proxy.heal()
    healed = time.time()
    fault_s = time.monotonic() - began
    failed_deletes = proxy.faults["DELETE"]
    time.sleep(SETTLE_S)

    after = [f"b{i:03d}" for i in range(AFTER)]
    rel.work.options(queue=queue_name).enqueue_many([Call(key, JOB_S) for key in after]).raise_for_failures()
    keys = during + after
    assert wait_for(all_finished(test_dir, keys), timeout=60), f"lost: {Ledger.read(test_dir).lost(keys)}"
    assert wait_for(lambda: message_count(queue) == 0, timeout=60), "messages left on the queue"
    assert stop(worker) == 0, log_text(test_dir)[-3000:]

    ledger = Ledger.read(test_dir)
    lost = ledger.lost(keys)
    runs = {key: sorted(moment for _, moment in ledger.starts[key]) for key in keys}
    reran = [key for key in keys if len(runs[key]) > 1]
    gaps = [b - a for key in reran for a, b in zip(runs[key], runs[key][1:])]
    report("delete_failure", jobs=len(keys), fault_s=round(fault_s, 1), lease_s=LEASE_S,
           deletes_failed=failed_deletes, deletes_given_up=actions(test_dir).count("delete_failed"),
           reran=len(reran), extra_runs=ledger.extra_runs(keys), most_runs=max(len(r) for r in runs.values()),
           shortest_rerun_gap_s=round(min(gaps), 2) if gaps else None, lost=len(lost))
    assert lost == []
    assert failed_deletes > 0, "no delete failed: the test proved nothing"
    assert reran, "no job ran again after its delete failed: the test proved nothing"
    # A rerun needs the lease to run out: never two runs of one job within one lease ...
    assert min(gaps) >= LEASE_S - TOLERANCE_S, {key: runs[key] for key in reran}
    # ... so a job reruns at most once per lease that began before the deletes worked again.
    for key in during:
        failing_leases = max(0, 1 + math.floor((healed + SETTLE_S - runs[key][0]) / (LEASE_S - TOLERANCE_S)))
        assert len(ledger.finishes[key]) <= 1 + failing_leases, (key, runs[key], healed)
    assert all(len(ledger.finishes[key]) == 1 for key in after)  # deletes work again: exactly once
    assert _queue_missing_or_empty(poison), "a job was dead-lettered"


def test_a_delete_whose_answer_is_lost_does_not_rerun_the_job(proxy, proxied, client, queue_name, raw_queue, test_dir,
                                                              processes):
    """The DELETE reaches storage but its answer is lost: the retry finds the message gone (404), which is fine."""
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    worker = spawn(proxied, test_dir, "-q", queue_name, "-c", "8", "-f", "4", "-r", str(LEASE_S))
    processes.append(worker)
    assert wait_for(lambda: "worker_started" in actions(test_dir), timeout=30), log_text(test_dir)
    keys = [f"d{i:03d}" for i in range(20)]
    proxy.fail("DELETE", "drop_after", path_contains="/messages/", for_s=2.0)
    rel.work.options(queue=queue_name).enqueue_many([Call(key, JOB_S) for key in keys]).raise_for_failures()
    assert wait_for(all_finished(test_dir, keys), timeout=60), f"lost: {Ledger.read(test_dir).lost(keys)}"
    assert wait_for(lambda: message_count(queue) == 0, timeout=30), "messages left on the queue"
    time.sleep(LEASE_S + 1)  # a message whose delete had not happened would be back by now
    assert stop(worker) == 0, log_text(test_dir)[-3000:]
    ledger = Ledger.read(test_dir)
    report("delete_answer_lost", jobs=len(keys), answers_dropped=proxy.faults["DELETE"],
           ran_twice=len(ledger.duplicates(keys)), lost=len(ledger.lost(keys)))
    assert proxy.faults["DELETE"] > 0
    assert ledger.lost(keys) == [] and ledger.duplicates(keys) == []
