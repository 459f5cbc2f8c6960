"""One command for every benchmark: ``python -m benchmarks.run [--quick] [--runs 3] [--jobs 2000]``.

Starts its own Azurite, then measures azjobs, the raw azure-storage-queue SDK and Celery 5
(kombu ``azurestoragequeues``) side by side in one run: enqueue, drain (no-op and 50 ms
jobs), idle pickup latency, and cost (storage calls per job, worker CPU and peak RSS).
Each throughput scenario runs ``--runs`` times, contenders in a rotating order; the table
shows the median, min–max and the ratios the targets are stated in. No assertions: the
figures are for people to read.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

from . import azjobs_side, celery_peer, cost, jobs, raw_sdk, sidechannel
from .report import Results, fmt, percentile, table
from .watch import Drain

ROOT = Path(__file__).resolve().parent.parent

ENQUEUE = "Enqueue no-op jobs"
DRAIN = "Drain no-op jobs"
DRAIN_SLEEP = "Drain 50 ms jobs, concurrency 16"

RAW1, RAW8 = "raw SDK send_message, 1 thread", "raw SDK send_message, 8 threads"
AZ_ONE, AZ_MANY = "azjobs job.enqueue loop", "azjobs job.enqueue_many"
CEL_DELAY = "Celery task.delay() loop"
RAW_DRAIN = "raw SDK, 8 threads, receive 32 + delete"
AZ_DRAIN = "azjobs worker (defaults)"
CEL_THREADS, CEL_PREFORK = "Celery --pool threads -c 4", "Celery --pool prefork -c 2"
AZ_C16, CEL_C16 = "azjobs worker -c 16", "Celery --pool threads -c 16"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Bench:
    """The state of one benchmark run: Azurite, the clients' addresses, the results so far."""

    def __init__(self, args: argparse.Namespace, azurite, workdir: Path) -> None:
        from devtools.azurite import ACCOUNT, KEY

        self.args = args
        self.n = args.jobs
        self.azurite = azurite
        self.conn = azurite.connection_string
        self.celery_url = celery_peer.broker_url(azurite.queue_port, ACCOUNT, KEY)
        self.workdir = workdir
        self.results = Results()
        self.drains: dict[str, list[Drain]] = {}
        self.latency: dict[str, list[float]] = {}
        self.calls: list[cost.CallCount] = []
        # Raw sends carry a body the size of a real azjobs message, so they move the same bytes.
        envelope = jobs.noop.options(queue="bench-noop").build((123456,), {})
        self.raw_body = envelope.encode("base64")
        celery_peer.configure(self.celery_url, "bench-unused")

    def warm_up(self) -> None:
        """Untimed: a send and a drain through Azurite first, so no contender pays for its warm-up."""
        q, client = self.queue("warm")
        raw_sdk.enqueue(self.conn, q, [self.raw_body] * 1000, threads=8)
        raw_sdk.drain(self.conn, q, 1000, threads=8)
        self.drop(client)

    def queue(self, prefix: str) -> tuple[str, object]:
        name = unique(prefix)
        client = raw_sdk.queue_client(self.conn, name)
        client.create_queue()
        return name, client

    @staticmethod
    def drop(queue_client) -> None:
        try:
            queue_client.delete_queue()
        except Exception:
            pass

    def rotate(self, run: int, items: list) -> list:
        shift = run % len(items)
        return items[shift:] + items[:shift]

    # -- scenarios -----------------------------------------------------------------------
    def enqueue_round(self, run: int) -> None:
        n = self.n
        bodies = [self.raw_body] * n

        def raw(threads: int) -> Callable[[str, object], float]:
            return lambda q, c: raw_sdk.enqueue(self.conn, q, bodies, threads)

        contenders = [
            (RAW1, raw(1)),
            (RAW8, raw(8)),
            (AZ_ONE, lambda q, c: azjobs_side.enqueue_one_by_one(self.conn, q, n)),
            (AZ_MANY, lambda q, c: azjobs_side.enqueue_many(self.conn, q, n)),
        ]
        if not self.args.skip_celery:
            contenders.append((CEL_DELAY, lambda q, c: celery_peer.enqueue_delay_loop(q, n, c)))
        for name, send in self.rotate(run, contenders):
            q, client = self.queue("enq")
            seconds = send(q, client)
            count = client.get_queue_properties().approximate_message_count
            if count != n:
                raise RuntimeError(f"{name}: {count} messages in the queue, expected {n}")
            self.results.add(ENQUEUE, name, n / seconds, "msg/s")
            say(f"{ENQUEUE}: {name}: {n / seconds:.0f}/s")
            self.drop(client)

    def drain_round(self, run: int) -> None:
        n = self.n
        contenders = [(RAW_DRAIN, self._raw_drain), (AZ_DRAIN, lambda q, c: azjobs_side.drain(
            self.conn, q, n, self.workdir))]
        if not self.args.skip_celery:
            contenders += [
                (CEL_THREADS, lambda q, c: celery_peer.drain(self.celery_url, q, n, self.workdir, c,
                                                             pool="threads", concurrency=4)),
                (CEL_PREFORK, lambda q, c: celery_peer.drain(self.celery_url, q, n, self.workdir, c,
                                                             pool="prefork", concurrency=2)),
            ]
        self._drain_contenders(run, DRAIN, contenders)

    def drain_sleep_round(self, run: int) -> None:
        n = self.n
        contenders = [(AZ_C16, lambda q, c: azjobs_side.drain(self.conn, q, n, self.workdir, job=jobs.sleep50,
                                                             concurrency=16))]
        if not self.args.skip_celery:
            contenders.append((CEL_C16, lambda q, c: celery_peer.drain(self.celery_url, q, n, self.workdir, c,
                                                                      pool="threads", concurrency=16,
                                                                      task="sleep50")))
        self._drain_contenders(run, DRAIN_SLEEP, contenders)

    def _raw_drain(self, q: str, client) -> float:
        raw_sdk.enqueue(self.conn, q, [self.raw_body] * self.n, threads=8)
        return raw_sdk.drain(self.conn, q, self.n, threads=8)

    def _drain_contenders(self, run: int, section: str, contenders: list) -> None:
        for name, work in self.rotate(run, contenders):
            q, client = self.queue("drn")
            outcome = work(q, client)
            if isinstance(outcome, Drain):
                self.drains.setdefault(f"{section}|{name}", []).append(outcome)
                rate = outcome.rate
                extra = (f" (cpu {outcome.cpu_s:.2f}s, peak rss {outcome.peak_rss / 2**20:.0f} MB, "
                         f"peak running {outcome.peak_running}, {outcome.jobs} runs)")
            else:
                rate, extra = self.n / outcome, ""
            self.results.add(section, name, rate, "jobs/s")
            say(f"{section}: {name}: {rate:.0f}/s{extra}")
            self.drop(client)

    def latency_round(self) -> None:
        """Idle workers side by side; each sample enqueues one probe to each after a random pause."""
        samples = self.args.latency_samples
        az_q, az_client = self.queue("lat")
        workers = []
        az_worker, az_side = azjobs_side.start_idle_worker(self.conn, az_q, self.workdir)
        workers.append(az_worker)
        probes = [("azjobs worker (defaults, idle)", az_q, az_side, azjobs_side.send_probe)]
        cel_client = None
        if not self.args.skip_celery:
            cel_q, cel_client = self.queue("lat")
            cel_worker, cel_side = celery_peer.start_idle_worker(self.celery_url, cel_q, self.workdir)
            workers.append(cel_worker)
            probes.append(("Celery --pool threads -c 4 (idle)", cel_q, cel_side, celery_peer.send_probe))
        try:
            for name, q, side, send in probes:  # warm up: each worker has started and run one job
                send(q)
                if sidechannel.wait_for(side, 1, timeout=60) < 1:
                    raise RuntimeError(f"{name}: the warm-up probe did not run")
            rng = random.Random(20261128)
            for i in range(samples):
                time.sleep(rng.uniform(0.3, 2.5))
                for name, q, side, send in probes:
                    send(q)
                for name, q, side, send in probes:
                    if sidechannel.wait_for(side, i + 2, timeout=30) < i + 2:
                        raise RuntimeError(f"{name}: probe {i} did not run within 30 s")
            for name, q, side, send in probes:
                entries = sidechannel.read(side)[1:]
                self.latency[name] = [e.start - float(e.tag) for e in entries]
                say(f"latency {name}: median {percentile(self.latency[name], 0.5) * 1000:.0f} ms")
        finally:
            for worker in workers:
                worker.stop()
            self.drop(az_client)
            if cel_client is not None:
                self.drop(cel_client)

    def cost_round(self) -> None:
        from devtools.azurite import ACCOUNT, KEY

        n = self.args.cost_jobs
        proxy = cost.start_proxy(self.azurite.queue_port)
        try:
            proxied = cost.proxied_connection_string(self.conn, proxy.port, self.azurite.queue_port)
            q, client = self.queue("cost")
            self.calls.append(cost.measure_raw(proxy, proxied, unique("cost"), n, self.raw_body))
            self.calls.append(cost.measure_azjobs(proxy, self.conn, proxied, q, n, self.workdir))
            if not self.args.skip_celery:
                q2 = unique("cost")
                url = celery_peer.broker_url(proxy.port, ACCOUNT, KEY)
                self.calls.append(cost.measure_celery(proxy, self.conn, url, q2, n, self.workdir))
            for c in self.calls:
                say(f"cost {c.contender}: {c.per_job():.3f} calls/job {dict(c.enqueue + c.drain)}")
        finally:
            proxy.stop()

    # -- the table -----------------------------------------------------------------------
    def render(self) -> str:
        r = self.results
        out = []
        rows = []
        refs = {ENQUEUE: RAW8, DRAIN: RAW_DRAIN, DRAIN_SLEEP: None}
        for section in r.sections():
            ref = refs.get(section)
            for s in r.in_section(section):
                vs_ref = fmt(s.median / r.median(section, ref) * 100, 0) + " %" if ref else "-"
                rows.append([section, s.name, fmt(s.median, 0), s.span(0), s.unit, vs_ref])
        runs = max((len(s.values) for sec in r.sections() for s in r.in_section(sec)), default=0)
        out.append(f"Throughput ({self.n} jobs, median of {runs} run(s); 'vs raw' = median / raw SDK 8-thread median)")
        out.append(table(["scenario", "contender", "median", "min–max", "unit", "vs raw"], rows))

        if self.latency:
            lat_rows = [[name, fmt(percentile(v, 0.5) * 1000, 0), fmt(percentile(v, 0.9) * 1000, 0),
                         fmt(min(v) * 1000, 0) + "–" + fmt(max(v) * 1000, 0), str(len(v))]
                        for name, v in self.latency.items()]
            out.append("\nIdle pickup latency (enqueue → job start, ms)")
            out.append(table(["worker", "median", "p90", "min–max", "samples"], lat_rows))

        cost_rows = []
        for key, drains in self.drains.items():
            section, name = key.split("|", 1)
            cpu = sorted(d.cpu_s / d.jobs * 1000 for d in drains)
            rss = sorted(d.peak_rss / 2**20 for d in drains)
            running = max(d.peak_running for d in drains)
            dup = sum(d.jobs for d in drains) - self.n * len(drains)
            cost_rows.append([f"{name} ({'no-op' if section == DRAIN else '50 ms'})",
                              fmt(cpu[len(cpu) // 2], 2), fmt(rss[len(rss) // 2], 0) + f" (max {fmt(max(rss), 0)})",
                              str(running), str(dup)])
        if cost_rows:
            out.append("\nWorker cost in the drains above (median over runs; process tree incl. start-up)")
            out.append(table(["worker", "CPU s / 1,000 jobs", "peak RSS MB", "peak running", "duplicate runs"],
                             cost_rows))
        if self.calls:
            call_rows = [[c.contender, fmt(c.kind_per_job("send"), 3), fmt(c.kind_per_job("receive"), 3),
                          fmt(c.kind_per_job("delete"), 3), fmt(c.kind_per_job("update"), 3),
                          fmt(c.kind_per_job("create_queue", "queue_properties", "list_queues", "peek", "clear",
                                             "other"), 3),
                          fmt(c.per_job(), 3)] for c in self.calls]
            out.append(f"\nStorage calls per job ({self.calls[0].jobs} no-op jobs: enqueue + drain, counted by a "
                       "proxy)")
            out.append(table(["contender", "send", "receive", "delete", "update", "other", "total"], call_rows))
        targets = self.targets()
        if targets:
            out.append("\n" + targets)
        return "\n".join(out)

    def targets(self) -> str:
        r = self.results
        rows = []

        def ratio(a: float, b: float) -> float:
            return a / b if b == b and b else float("nan")

        def line(target: str, value: float, goal: float | None, text: str, higher: bool = True) -> None:
            if value != value:
                return
            if goal is None:
                rows.append([target, text, "-"])
                return
            met = value >= goal if higher else value <= goal
            rows.append([target, text, "met" if met else "MISSED"])

        drain_ratio = ratio(r.median(DRAIN, AZ_DRAIN), r.median(DRAIN, RAW_DRAIN))
        line("drain ≥ 90 % of raw SDK 8 threads", drain_ratio, 0.9, f"{drain_ratio * 100:.0f} %")
        best_celery = max(r.median(DRAIN, CEL_THREADS), r.median(DRAIN, CEL_PREFORK))
        celery_ratio = ratio(r.median(DRAIN, AZ_DRAIN), best_celery)
        line("drain ≥ 3× Celery (best pool)", celery_ratio, 3.0, f"{celery_ratio:.1f}×")
        sleep_ratio = ratio(r.median(DRAIN_SLEEP, AZ_C16), r.median(DRAIN_SLEEP, CEL_C16))
        line("50 ms jobs at c16 vs Celery threads c16 (no target)", sleep_ratio, None, f"{sleep_ratio:.1f}×")
        many_ratio = ratio(r.median(ENQUEUE, AZ_MANY), r.median(ENQUEUE, RAW8))
        line("enqueue_many ≥ 90 % of raw 8-thread send", many_ratio, 0.9, f"{many_ratio * 100:.0f} %")
        one_ratio = ratio(r.median(ENQUEUE, AZ_ONE), r.median(ENQUEUE, RAW1))
        line("job.enqueue loop vs raw 1-thread send (no target)", one_ratio, None, f"{one_ratio * 100:.0f} %")
        for c in self.calls:
            if c.contender.startswith("azjobs"):
                line("storage calls per short job ≤ 2.1", c.per_job(), 2.1, f"{c.per_job():.3f}", higher=False)
        az = self.drains.get(f"{DRAIN}|{AZ_DRAIN}")
        if az:
            rss = sorted(d.peak_rss / 2**20 for d in az)[len(az) // 2]
            line("worker peak RSS ≤ 80 MB (defaults)", rss, 80, f"{rss:.0f} MB", higher=False)
        if not rows:
            return ""
        return "Targets\n" + table(["target", "measured", ""], rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 jobs, 1 run, 10 latency samples (< 3 min)")
    parser.add_argument("--runs", type=int, default=None, help="runs per throughput scenario (default 3)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput scenario (default 2000)")
    parser.add_argument("--latency-samples", type=int, default=None, help="latency probes (default 50)")
    parser.add_argument("--cost-jobs", type=int, default=None, help="jobs in the call-count run (default --jobs)")
    parser.add_argument("--skip-celery", action="store_true", help="leave Celery out")
    parser.add_argument("--only", action="append", choices=["enqueue", "drain", "sleep", "latency", "cost"],
                        help="run only these scenarios (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (worker logs)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.runs = args.runs or (1 if quick else 3)
    args.jobs = args.jobs or (500 if quick else 2000)
    args.latency_samples = args.latency_samples or (10 if quick else 50)
    args.cost_jobs = args.cost_jobs or args.jobs
    args.only = set(args.only or ["enqueue", "drain", "sleep", "latency", "cost"])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    logging.basicConfig(level=logging.WARNING)
    from devtools.azurite import Azurite

    workdir = Path(tempfile.mkdtemp(prefix="azjobs-bench-"))
    started = time.monotonic()
    say(f"work directory {workdir}; {args.jobs} jobs, {args.runs} run(s)")
    with Azurite() as azurite:
        bench = Bench(args, azurite, workdir)
        bench.warm_up()
        for run in range(args.runs):
            say(f"run {run + 1} of {args.runs}")
            if "enqueue" in args.only:
                bench.enqueue_round(run)
            if "drain" in args.only:
                bench.drain_round(run)
            if "sleep" in args.only:
                bench.drain_sleep_round(run)
        if "latency" in args.only:
            bench.latency_round()
        if "cost" in args.only:
            bench.cost_round()
        print(bench.render())
    print(f"\n({time.monotonic() - started:.0f} s; Python {sys.version.split()[0]}, one Azurite on this machine)")
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
