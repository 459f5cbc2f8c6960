"""Job state (azjobs.state) on vs off: storage calls per job, and enqueue and drain throughput.

    .venv/bin/python -m benchmarks.state                 # 1,000 jobs, 3 rounds, 300-job call count
    .venv/bin/python -m benchmarks.state --jobs 300 --rounds 1 --cost-jobs 100   # a quick look

Same harness as ``benchmarks.run`` (one Azurite on this machine, the ``azjobs`` worker command
in a subprocess at host defaults, jobs from ``benchmarks.jobs`` reporting to the side
channel). "State on" is the same jobs enqueued with ``track=True``: the producer writes the
READY record, the worker writes RUNNING and SUCCESSFUL; nothing else changes.

- **Storage calls per job**: counting proxies in front of Azurite's queue port *and* its table
  port (``benchmarks.proxy.CountingProxy``); enqueue side and drain side, divided by the jobs.
- **Throughput**: a burst drain of no-op jobs, of 50 ms sleeping jobs (``-c 16``) and of
  about 20 ms CPU-bound jobs (``--only cpu``, not in the default set), state
  off and on alternately in each round (the order flips every round, so load drifting on a
  shared machine does not favour one side); the enqueue (``enqueue_many``) is timed too.
  Ratios are on / off of the medians, with the per-round range.
It asserts nothing; run it by hand.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from . import azjobs_side, jobs
from .process import ROOT
from .proxy import CountingProxy, total
from .report import fmt, table
from .watch import watch
from azjobs.state.store import store_for


class Tracked:
    """A job whose every call is enqueued with ``track=True`` (what ``azjobs_side`` needs of a job)."""

    def __init__(self, job) -> None:
        self.job = job

    def options(self, **options):
        return self.job.options(track=True, **options)


def say(text: str) -> None:
    print(f"[state bench] {text}", file=sys.stderr, flush=True)


def _redirect(connection_string: str, endpoint: str, port: int) -> str:
    return re.sub(rf"({endpoint}=https?://)([^/;]+)", lambda m: f"{m.group(1)}127.0.0.1:{port}", connection_string)


class TableCounter(CountingProxy):
    """A CountingProxy whose kinds are HTTP methods (the queue kinds do not fit table calls)."""

    def _kind(self, method: str, target: str) -> str:
        return method


def count_calls(azurite, workdir: Path, n: int, state: bool) -> dict:
    queue_proxy = CountingProxy(azurite.queue_port).start()
    table_proxy = TableCounter(azurite.table_port).start()
    try:
        proxied = _redirect(_redirect(azurite.connection_string, "QueueEndpoint", queue_proxy.port),
                            "TableEndpoint", table_proxy.port)
        queue = f"bs-{'on' if state else 'off'}-{uuid.uuid4().hex[:12]}"
        job = Tracked(jobs.noop) if state else jobs.noop
        azjobs_side.client(proxied).ensure_queue(queue)
        if state:
            store_for(azjobs_side.client(proxied)).ensure_table()
        queue_proxy.reset(), table_proxy.reset()
        azjobs_side.enqueue_many(proxied, queue, n, job=job)
        enqueue = (queue_proxy.reset(), table_proxy.reset())
        worker, side = azjobs_side.start_worker(proxied, queue, workdir, burst=True, tag="-cost")
        try:
            watch(worker, side, n, azjobs_side.client(azurite.connection_string).queue(queue), timeout=300)
            worker.wait(60)
        finally:
            worker.stop()
        drain = (queue_proxy.reset(), table_proxy.reset())
        return {"enqueue_queue": total(enqueue[0]) / n, "enqueue_table": total(enqueue[1]) / n,
                "drain_queue": total(drain[0]) / n, "drain_table": total(drain[1]) / n,
                "table_kinds": dict(enqueue[1] + drain[1]), "queue_kinds": dict(enqueue[0] + drain[0])}
    finally:
        queue_proxy.stop()
        table_proxy.stop()
        azjobs_side.client(azurite.connection_string)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children."""
    import psutil

    process = psutil.Process(pid)
    total_s = 0.0
    for each in [process, *process.children(recursive=True)]:
        try:
            times = each.cpu_times()
            total_s += times.user + times.system
        except psutil.Error:
            pass
    return total_s


def one_drain(azurite, workdir: Path, n: int, state: bool, scenario: str) -> dict:
    """Enqueue and drain jobs/s, duplicates, and CPU ms per job of the worker and of Azurite in the drain."""
    cs = azurite.connection_string
    base = {"noop": jobs.noop, "sleep": jobs.sleep50, "cpu": jobs.cpu20}[scenario]
    job = Tracked(base) if state else base
    queue = f"bs-{scenario}-{'on' if state else 'off'}-{uuid.uuid4().hex[:10]}"
    enqueue_s = azjobs_side.enqueue_many(cs, queue, n, job=job)
    worker, side = azjobs_side.start_worker(cs, queue, workdir, burst=True,
                                            concurrency=16 if scenario == "sleep" else None)
    azurite_before = _cpu_s(azurite.process.pid)
    try:
        result = watch(worker, side, n, azjobs_side.client(cs).queue(queue), timeout=600)
        azurite_s = _cpu_s(azurite.process.pid) - azurite_before  # start-up included: a few ms
        if worker.wait(60) != 0:
            raise RuntimeError(f"worker failed (log: {worker.log_path})")
        result.cpu_s = worker.cpu_s
    finally:
        worker.stop()
    return {"enqueue": n / enqueue_s, "rate": result.rate, "duplicates": result.duplicates,
            "worker_cpu_ms": result.drain_cpu_s * 1000 / n, "azurite_cpu_ms": azurite_s * 1000 / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.state", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per drain (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each drain, state off and on (default 3)")
    parser.add_argument("--cost-jobs", type=int, default=300, help="jobs in the call count (default 300)")
    parser.add_argument("--only", action="append", choices=["cost", "noop", "sleep", "cpu"],
                        help="run only these parts (repeatable)")
    args = parser.parse_args(argv)
    only = set(args.only or ["cost", "noop", "sleep"])
    if "cpu" in only:
        from . import workload

        say(f"the CPU-bound job costs {workload.calibrate() * 1000:.1f} ms of CPU here")
    os.chdir(ROOT)
    logging.basicConfig(level=logging.WARNING)
    from devtools.azurite import Azurite

    workdir = Path(tempfile.mkdtemp(prefix="azjobs-state-bench-"))
    started = time.monotonic()
    load = os.getloadavg()
    out: list[str] = []
    with Azurite() as azurite:
        azjobs_side.client(azurite.connection_string)
        if "cost" in only:
            costs = {}
            for state in (False, True):
                costs[state] = count_calls(azurite, workdir, args.cost_jobs, state)
                say(f"calls per job, state {'on' if state else 'off'}: {costs[state]}")
            rows = []
            for state in (False, True):
                c = costs[state]
                all_calls = c["enqueue_queue"] + c["enqueue_table"] + c["drain_queue"] + c["drain_table"]
                rows.append([f"state {'on' if state else 'off'}", fmt(c["enqueue_queue"], 2), fmt(c["enqueue_table"], 2),
                             fmt(c["drain_queue"], 2), fmt(c["drain_table"], 2), fmt(all_calls, 2)])
            extra = sum(costs[True][k] for k in ("enqueue_queue", "enqueue_table", "drain_queue", "drain_table")) - \
                sum(costs[False][k] for k in ("enqueue_queue", "enqueue_table", "drain_queue", "drain_table"))
            out.append(f"### Storage calls per job ({args.cost_jobs} no-op jobs, enqueue_many + burst worker at "
                       "host defaults)\n")
            out.append(table(["", "enqueue: queue", "enqueue: table", "drain: queue", "drain: table", "all"], rows))
            out.append(f"\nextra calls per job with state on: {extra:.2f} (target: at most 3); table calls by "
                       f"method with state on: {costs[True]['table_kinds']}")
        for scenario in ("noop", "sleep", "cpu"):
            if scenario not in only:
                continue
            rates: dict[bool, list[float]] = {False: [], True: []}
            enqueues: dict[bool, list[float]] = {False: [], True: []}
            worker_cpu: dict[bool, list[float]] = {False: [], True: []}
            azurite_cpu: dict[bool, list[float]] = {False: [], True: []}
            dups = {False: 0, True: 0}
            for round_ in range(args.rounds):
                order = (False, True) if round_ % 2 == 0 else (True, False)
                for state in order:
                    got = one_drain(azurite, workdir, args.jobs, state, scenario)
                    enqueues[state].append(got["enqueue"])
                    rates[state].append(got["rate"])
                    worker_cpu[state].append(got["worker_cpu_ms"])
                    azurite_cpu[state].append(got["azurite_cpu_ms"])
                    dups[state] += got["duplicates"]
                    say(f"{scenario} round {round_ + 1}, state {'on' if state else 'off'}: drain {got['rate']:.0f} "
                        f"jobs/s, enqueue {got['enqueue']:.0f} jobs/s, duplicates {got['duplicates']}, CPU ms/job "
                        f"worker {got['worker_cpu_ms']:.2f} Azurite {got['azurite_cpu_ms']:.2f}; "
                        f"load {os.getloadavg()[0]:.1f}")
            ratios = [on / off for on, off in zip(rates[True], rates[False])]
            label = {"noop": "no-op jobs", "sleep": "50 ms sleeping jobs, -c 16",
                     "cpu": "20 ms CPU-bound jobs (benchmarks/workload.py)"}[scenario]
            out.append(f"\n### Drain of {args.jobs} {label} (burst worker at host defaults), {args.rounds} round(s)\n")
            rows = []
            for state in (False, True):
                rows.append([f"state {'on' if state else 'off'}", fmt(statistics.median(rates[state]), 0),
                             f"{fmt(min(rates[state]), 0)}–{fmt(max(rates[state]), 0)}",
                             fmt(statistics.median(enqueues[state]), 0),
                             fmt(statistics.median(worker_cpu[state]), 2), fmt(statistics.median(azurite_cpu[state]), 2),
                             str(dups[state])])
            out.append(table(["", "drain jobs/s (median)", "range", "enqueue_many jobs/s (median)",
                              "worker CPU ms/job", "Azurite CPU ms/job", "duplicates"], rows))
            enqueue_ratio = statistics.median(enqueues[True]) / statistics.median(enqueues[False])
            out.append(f"\ndrain ratio on/off: {statistics.median(rates[True]) / statistics.median(rates[False]):.2f} "
                       f"(per round {', '.join(f'{r:.2f}' for r in ratios)}; target: at least 0.7); enqueue ratio "
                       f"on/off: {enqueue_ratio:.2f}")
    print("\n".join(out))
    print(f"\n({time.monotonic() - started:.0f} s; Python {sys.version.split()[0]}, one Azurite on this machine, "
          f"{os.cpu_count()} cores; load average at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f})")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
