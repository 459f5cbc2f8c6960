"""Scaling on queue length as KEDA and Kubernetes do it, with real ``azjobs`` worker processes.

The harness (tests/reliability/autoscaler.py) reads the queue as KEDA's azure-queue scaler does,
computes desired replicas as KEDA and the HPA do, starts workers and stops surplus ones with
SIGTERM, and SIGKILLs any still running past the termination grace period, as the kubelet does.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import azjobs
from azjobs import Call
from tests.jobs import reliability_jobs as rel
from tests.reliability.autoscaler import Autoscaler, ScalerSettings, keda_queue_length
from tests.reliability.support import Ledger, log_text, report, spawn

SHORT_JOBS = 1000
LONG_JOBS = 200  # 1-3 s each, tracked (job state on)
CONCURRENCY = 8  # -c, and the scaler's queueLength
MAX_REPLICAS = 5
GRACE_S = 8.0  # --grace: the longest job (3 s) fits with room for a loaded machine
TERMINATION_GRACE_S = GRACE_S + 5  # the README's rule: --grace + 5 s <= terminationGracePeriodSeconds
DATA_ENV = "AZJOBS_AUTOSCALER_DATA"  # devtools/plot_autoscaler.py: where to keep the curve's data


def test_keda_strategies_count_delayed_and_leased_messages_as_documented(client, queue_name, raw_queue):
    """The numbers docs/kubernetes.md gives: what ``all`` and ``visibleonly`` report for azjobs' delayed jobs
    (invisible until due) and for messages leased by running jobs."""
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    rel.work.options(queue=queue_name, delay=3600).enqueue_many([Call(f"d{i}", 0) for i in range(40)])
    rel.work.options(queue=queue_name).enqueue_many([Call(f"v{i}", 0) for i in range(10)])
    counts = {strategy: keda_queue_length(queue, strategy) for strategy in ("all", "visibleonly")}
    assert counts == {"all": 50, "visibleonly": 10}  # 40 jobs due in an hour count under "all"
    leased = list(next(queue.receive_messages(messages_per_page=6, max_messages=6, visibility_timeout=60).by_page()))
    assert len(leased) == 6  # six running jobs hold their messages
    counts = {strategy: keda_queue_length(queue, strategy) for strategy in ("all", "visibleonly")}
    assert counts == {"all": 50, "visibleonly": 4}  # running jobs count under "all" only
    rel.work.options(queue=queue_name).enqueue_many([Call(f"b{i}", 0) for i in range(40)])
    counts = {strategy: keda_queue_length(queue, strategy) for strategy in ("all", "visibleonly")}
    # 44 visible: 32 peeked, so visibleonly falls back to the approximate count, delayed and leased included.
    assert counts == {"all": 90, "visibleonly": 90}
    report("keda_counts", delayed=40, leased=6, visible=44, **counts)


def test_a_burst_scales_workers_up_and_back_to_zero_with_every_job_run_and_no_replica_killed(
        client, connection_string, queue_name, raw_queue, test_dir, processes, monkeypatch):
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    table = f"as{uuid.uuid4().hex[:16]}"
    monkeypatch.setenv("AZJOBS_STATE_TABLE", table)  # the workers' job state table (tracked jobs) ...
    producer = azjobs.Client(connection_string, state_table=table)  # ... and the producer's
    rng = random.Random(30)
    short = [f"s{i:04d}" for i in range(SHORT_JOBS)]
    long = [f"l{i:03d}" for i in range(LONG_JOBS)]
    try:
        rel.work.options(queue=queue_name, client=producer).enqueue_many(
            [Call(key, 0) for key in short]).raise_for_failures()
        rel.work.options(queue=queue_name, client=producer, track=True).enqueue_many(
            [Call(key, round(rng.uniform(1.0, 3.0), 2)) for key in long]).raise_for_failures()

        def start(index: int):
            process = spawn(connection_string, test_dir, "-q", queue_name, "-c", str(CONCURRENCY), "-r", "30",
                            "--grace", str(GRACE_S), "--no-schedules", "--no-workflows", name=f"replica{index}")
            processes.append(process)
            return process

        scaler = Autoscaler(ScalerSettings(queue_length=CONCURRENCY, max_replicas=MAX_REPLICAS,
                                           termination_grace_s=TERMINATION_GRACE_S, strategy="visibleonly",
                                           polling_s=2.0, cooldown_s=10.0, stabilization_s=6.0),
                            queue, start)
        keys = short + long

        def settled() -> bool:
            return not scaler.replicas[-1:] or (not scaler.running() and not scaler.terminating()
                                                and not Ledger.read(test_dir).lost(keys))

        done = scaler.run(lambda: bool(scaler.replicas) and settled(), timeout=240)
        scaler.wait_terminated(TERMINATION_GRACE_S + 5)
        ledger = Ledger.read(test_dir)
        peak = max(sample.replicas for sample in scaler.samples)
        elapsed = scaler.samples[-1].t
        out = Path(os.environ.get(DATA_ENV) or test_dir / "autoscaler.json")
        scaler.save(out, short_jobs=SHORT_JOBS, long_jobs=LONG_JOBS, concurrency=CONCURRENCY, grace_s=GRACE_S,
                    lost=len(ledger.lost(keys)), duplicates=len(ledger.duplicates(keys)))
        report("autoscaler", jobs=len(keys), replicas_started=len(scaler.replicas), peak_replicas=peak,
               elapsed_s=elapsed, lost=len(ledger.lost(keys)), ran_twice_tracked=len(ledger.duplicates(long)),
               ran_twice_untracked=len(ledger.duplicates(short)),
               exit_s=[r.exit_s for r in scaler.replicas], killed=sum(r.killed for r in scaler.replicas))
        logs = "\n".join(log_text(test_dir, f"replica{r.index}")[-2000:] for r in scaler.replicas)
        assert done, f"not settled in time: {scaler.samples[-3:]}, lost {len(ledger.lost(keys))}\n{logs}"
        assert ledger.lost(keys) == []  # every job ran
        assert ledger.duplicates(long) == []  # tracked jobs ran once
        assert peak == MAX_REPLICAS  # replicas followed the burst up ...
        assert scaler.samples[-1].replicas == 0 and scaler.samples[-1].desired == 0  # ... and back to zero
        assert not [r.index for r in scaler.replicas if r.killed], "a replica overran its termination grace"
        assert [r.exit_code for r in scaler.replicas] == [0] * len(scaler.replicas), logs
        assert keda_queue_length(queue, "all") == 0
    finally:
        producer.close()
        try:
            client.connection.table_service().delete_table(table)
        except Exception:
            pass
