"""Delete failure with job state on and off, side by side: state on, no job runs twice.

The fault of test_delete_failure.py (every message DELETE fails, first with 500 and then with
the connection dropped, longer than a delete's retries) hits one worker working two queues:
jobs on ``<queue>`` are enqueued with ``track=True``, jobs on ``<queue>b`` without. Messages
whose delete gave up come back after the 3 s lease. Untracked jobs run again; tracked ones
find their record SUCCESSFUL and are deleted without running (``duplicate_skipped``).
The report line gives both counts.
"""

from __future__ import annotations

import time
import uuid

from azjobs import Call
from tests.jobs import reliability_jobs as rel
from tests.reliability.support import Ledger, actions, all_finished, log_text, message_count, report, spawn, stop, \
    wait_for

LEASE_S = 3
FAULT_S = 6.0
FAULT_MAX_S = 45.0
DURING = 8
AFTER = 10
JOB_S = 0.05
SETTLE_S = 5.0


def _started_more_than_once(test_dir, keys) -> list[str]:
    starts = Ledger.read(test_dir).starts
    return [key for key in keys if len(starts.get(key, ())) > 1]


def test_with_state_on_no_job_runs_twice_when_deletes_fail(proxy, proxied, client, connection_string, queue_name,
                                                           raw_queue, test_dir, processes, monkeypatch):
    table = f"st{uuid.uuid4().hex[:16]}"
    monkeypatch.setenv("AZJOBS_STATE_TABLE", table)  # the worker's table ...
    import azjobs

    producer = azjobs.Client(connection_string, state_table=table)  # ... and this process's
    tracked_queue, plain_queue = queue_name, f"{queue_name}b"
    for name in (tracked_queue, plain_queue):
        client.ensure_queue(name)
    proxy.reconnect_upstream = True
    worker = spawn(proxied, test_dir, "-q", tracked_queue, "-q", plain_queue, "-c", "16", "-f", "8",
                   "-r", str(LEASE_S))
    processes.append(worker)
    try:
        assert wait_for(lambda: "worker_started" in actions(test_dir), timeout=30), log_text(test_dir)

        tracked = [f"s{i:03d}" for i in range(DURING)]
        plain = [f"p{i:03d}" for i in range(DURING)]
        proxy.fail("DELETE", "error", path_contains="/messages/")
        began = time.monotonic()
        rel.work.options(queue=tracked_queue, track=True, client=producer).enqueue_many(
            [Call(key, JOB_S) for key in tracked]).raise_for_failures()
        rel.work.options(queue=plain_queue).enqueue_many([Call(key, JOB_S) for key in plain]).raise_for_failures()
        time.sleep(FAULT_S / 2)
        proxy.fail("DELETE", "drop", path_contains="/messages/")
        time.sleep(FAULT_S / 2)

        def both_came_back() -> bool:
            return bool(_started_more_than_once(test_dir, plain)) and "duplicate_skipped" in actions(test_dir)

        assert wait_for(both_came_back, timeout=FAULT_MAX_S - FAULT_S), (
            f"no redelivery after {FAULT_MAX_S}s of failing deletes; worker actions: {sorted(set(actions(test_dir)))}")
        proxy.heal()
        fault_s = time.monotonic() - began
        failed_deletes = proxy.faults["DELETE"]
        time.sleep(SETTLE_S)

        tracked_after = [f"t{i:03d}" for i in range(AFTER)]
        plain_after = [f"q{i:03d}" for i in range(AFTER)]
        rel.work.options(queue=tracked_queue, track=True, client=producer).enqueue_many(
            [Call(key, JOB_S) for key in tracked_after]).raise_for_failures()
        rel.work.options(queue=plain_queue).enqueue_many([Call(key, JOB_S) for key in plain_after]).raise_for_failures()
        keys_on, keys_off = tracked + tracked_after, plain + plain_after
        assert wait_for(all_finished(test_dir, keys_on + keys_off), timeout=60), \
            f"lost: {Ledger.read(test_dir).lost(keys_on + keys_off)}"
        for name in (tracked_queue, plain_queue):
            assert wait_for(lambda: message_count(raw_queue(name)) == 0, timeout=60), f"messages left on {name}"
        assert stop(worker) == 0, log_text(test_dir)[-3000:]

        ledger = Ledger.read(test_dir)
        ran_twice_on = _started_more_than_once(test_dir, keys_on)
        ran_twice_off = _started_more_than_once(test_dir, keys_off)
        skipped = actions(test_dir).count("duplicate_skipped")
        report("delete_failure_state", jobs_per_side=len(keys_on), fault_s=round(fault_s, 1), lease_s=LEASE_S,
               deletes_failed=failed_deletes, ran_twice_state_on=len(ran_twice_on),
               ran_twice_state_off=len(ran_twice_off), extra_runs_state_off=ledger.extra_runs(keys_off),
               duplicates_skipped=skipped, lost=len(ledger.lost(keys_on + keys_off)))
        assert ledger.lost(keys_on + keys_off) == []
        assert failed_deletes > 0 and ran_twice_off, "no job ran twice with state off: the fault proved nothing"
        assert ran_twice_on == [], {key: ledger.starts[key] for key in ran_twice_on}
        assert skipped >= 1
        records = [azjobs.result(job_id, client=producer) for job_id in _tracked_ids(test_dir, keys_on, producer)]
        assert records and all(r.status.value == "SUCCESSFUL" and r.attempts == 1 for r in records)
    finally:
        try:
            client.connection.table_service().delete_table(table)
        except Exception:
            pass
        producer.close()


def _tracked_ids(test_dir, keys, producer) -> list[str]:
    """The job ids of tracked keys, from the worker's job_succeeded lines."""
    from tests.reliability.support import log_events

    ids = []
    for event in log_events(test_dir):
        if event.get("action") == "job_succeeded" and event.get("job_id"):
            ids.append(event["job_id"])
    import azjobs

    found = []
    for job_id in set(ids):
        try:
            azjobs.result(job_id, client=producer)
        except azjobs.JobNotFoundError:
            continue  # an untracked job
        found.append(job_id)
    assert len(found) == len(keys), (len(found), len(keys))
    return found
