"""Crash: kill -9 the worker at random moments, three times, mid-drain; no job is lost.

200 jobs of 0.2–1 s each. Three workers in turn are killed with SIGKILL a random while
after they start working, each replaced at once; a fourth works to the end. With a 2 s
lease the messages a killed worker held reappear quickly. Every job must finish at least
once; jobs that finished but whose delete died with the worker run twice, and are counted.
"""

from __future__ import annotations

import os
import random
import time

from azjobs import Call
from tests.jobs import reliability_jobs as rel
from tests.reliability.support import Ledger, all_finished, message_count, report, spawn, stop, wait_for

JOBS = 200
KILLS = 3
SEED = int(os.environ.get("AZJOBS_RELIABILITY_SEED", "6001"))


def _queue_missing_or_empty(queue_client) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return message_count(queue_client) == 0
    except ResourceNotFoundError:
        return True


def test_kill_9_three_times_mid_drain_loses_no_job(connection_string, client, queue_name, raw_queue, test_dir,
                                                   processes):
    rng = random.Random(SEED)
    queue = raw_queue(queue_name)
    poison = raw_queue(f"{queue_name}-poison")
    client.ensure_queue(queue_name)
    keys = [f"c{i:03d}" for i in range(JOBS)]
    rel.work.options(queue=queue_name).enqueue_many(
        [Call(key, round(rng.uniform(0.2, 1.0), 3)) for key in keys]).raise_for_failures()
    worker_args = ("-q", queue_name, "-c", "8", "-f", "4", "-r", "2")
    started_at = time.monotonic()

    killed_pids = []
    for round_ in range(KILLS):
        worker = spawn(connection_string, test_dir, *worker_args, name=f"killed{round_}")
        processes.append(worker)
        assert wait_for(lambda: any(pid == worker.pid for runs in Ledger.read(test_dir).starts.values()
                                    for pid, _ in runs), timeout=60), "the worker never started a job"
        time.sleep(rng.uniform(0.5, 3.0))  # a random moment mid-drain
        assert worker.poll() is None, "the worker exited before it could be killed"
        worker.kill()
        worker.wait(10)
        killed_pids.append(worker.pid)

    final = spawn(connection_string, test_dir, *worker_args, name="final")
    processes.append(final)
    assert wait_for(all_finished(test_dir, keys), timeout=120), f"lost: {Ledger.read(test_dir).lost(keys)}"
    assert wait_for(lambda: message_count(queue) == 0, timeout=30), "messages left behind"
    assert stop(final) == 0

    ledger = Ledger.read(test_dir)
    interrupted = sum(1 for key in keys for pid, _ in ledger.starts[key]
                      if pid in killed_pids and pid not in {p for p, _ in ledger.finishes[key]})
    lost, duplicates = ledger.lost(keys), ledger.duplicates(keys)
    report("crash", jobs=JOBS, kills=len(killed_pids), interrupted_runs=interrupted,
           ran_twice=len(duplicates), extra_runs=ledger.extra_runs(keys), lost=len(lost), seed=SEED,
           seconds=round(time.monotonic() - started_at, 1))
    assert lost == []
    assert interrupted > 0, "no kill hit a running job: the test proved nothing"
    assert _queue_missing_or_empty(poison), "a job was dead-lettered"
