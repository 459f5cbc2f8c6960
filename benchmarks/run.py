"""One command for every benchmark: ``python -m benchmarks.run [--quick] [--runs 3] [--jobs 2000]``.

Starts its own Azurite, then measures azjobs, the raw azure-storage-queue SDK and Celery 5
(kombu ``azurestoragequeues``) side by side in one run: enqueue, drain (no-op, 50 ms sleep
and 20 ms CPU-bound jobs), idle pickup latency and idle storage calls, and cost (storage
calls per job, worker CPU per job and peak RSS). Each throughput scenario runs ``--runs``
times, contenders in a rotating order; the tables show the median, min–max and the ratios
the targets are stated in. No assertions: the figures are for people to read.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable

from . import azjobs_side, celery_peer, cost, jobs, raw_sdk, sidechannel, workload
from .azjobs_side import HOST_DEFAULTS, REPO_HOST_JSON
from .proxy import CountingProxy, total
from .raw_sdk import RawDrain
from .report import Results, fmt, percentile, table
from .watch import Drain

ROOT = Path(__file__).resolve().parent.parent

ENQUEUE = "Enqueue no-op jobs"
DRAIN = "Drain no-op jobs"
DRAIN_SLEEP = "Drain 50 ms sleeping jobs, concurrency 16"
DRAIN_CPU = "Drain 20 ms CPU-bound jobs"

RAW1, RAW1_T = "raw SDK send_message, 1 thread, default transport", "raw SDK send_message, 1 thread, tuned transport"
RAW8, RAW8_T = "raw SDK send_message, 8 threads, default transport", "raw SDK send_message, 8 threads, tuned transport"
AZ_ONE, AZ_MANY = "azjobs job.enqueue loop", "azjobs job.enqueue_many"
CEL_DELAY = "Celery task.delay() loop"
RAW_DRAIN = "raw SDK 8 threads, receive 32 + delete, default transport"
RAW_DRAIN_T = "raw SDK 8 threads, receive 32 + delete, tuned transport"
AZ_DRAIN = "azjobs worker, host defaults"
AZ_DRAIN_HJ = "azjobs worker, repo host.json"
CEL_THREADS, CEL_PREFORK = "Celery --pool threads -c 4", "Celery --pool prefork -c 2"
AZ_C16, CEL_C16 = "azjobs worker -c 16, host defaults", "Celery --pool threads -c 16"
AZ_P1, AZ_P2 = "azjobs worker -p 1, host defaults", "azjobs worker -p 2, host defaults"
CEL_CPU = "Celery --pool prefork -c 2"

IDLE_AZ, IDLE_AZ_HJ = "azjobs worker, host defaults", "azjobs worker, repo host.json"
IDLE_CEL = "Celery --pool threads -c 4"
SCENARIOS = ["enqueue", "drain", "sleep", "cpu", "idle", "cost"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def ratio(a: float, b: float) -> float:
    return a / b if b == b and b and a == a else float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Idle:
    """One idle worker's figures: pickup latencies, and storage calls per minute of idling."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latency: list[float] = []  # seconds, the probe series
        self.after_idle: float | None = None  # seconds, the one probe sent after the idle window
        self.minutes: list[Counter] = []  # calls in each whole minute after the worker went idle


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
        self.raw_drains: dict[str, list[RawDrain]] = {}
        self.idle: dict[str, Idle] = {}
        self.calls: dict[str, cost.CallCount] = {}
        self.notes: list[str] = []
        self.burn_ms = float("nan")
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

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            say(f"note: {text}")

    # -- scenarios -----------------------------------------------------------------------
    def enqueue_round(self, run: int) -> None:
        n = self.n
        bodies = [self.raw_body] * n

        def raw(threads: int, transport: str) -> Callable[[str, object], float]:
            return lambda q, c: raw_sdk.enqueue(self.conn, q, bodies, threads, transport)

        contenders = [
            (RAW1, raw(1, "default")),
            (RAW1_T, raw(1, "tuned")),
            (RAW8, raw(8, "default")),
            (RAW8_T, raw(8, "tuned")),
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
        contenders = [
            (RAW_DRAIN, lambda q, c: self._raw_drain(q, "default")),
            (RAW_DRAIN_T, lambda q, c: self._raw_drain(q, "tuned")),
            (AZ_DRAIN, lambda q, c: azjobs_side.drain(self.conn, q, n, self.workdir, setup=HOST_DEFAULTS)),
            (AZ_DRAIN_HJ, lambda q, c: azjobs_side.drain(self.conn, q, n, self.workdir, setup=REPO_HOST_JSON)),
        ]
        if not self.args.skip_celery:
            contenders += [
                (CEL_THREADS, lambda q, c: celery_peer.drain(self.celery_url, q, n, self.workdir, c,
                                                             pool="threads", concurrency=4)),
                (CEL_PREFORK, lambda q, c: celery_peer.drain(self.celery_url, q, n, self.workdir, c,
                                                             pool="prefork", concurrency=2)),
            ]
        self._drain_contenders(run, DRAIN, contenders, n)

    def drain_sleep_round(self, run: int) -> None:
        n = self.n
        contenders = [(AZ_C16, lambda q, c: azjobs_side.drain(self.conn, q, n, self.workdir, job=jobs.sleep50,
                                                             concurrency=16))]
        if not self.args.skip_celery:
            contenders.append((CEL_C16, lambda q, c: celery_peer.drain(self.celery_url, q, n, self.workdir, c,
                                                                      pool="threads", concurrency=16,
                                                                      task="sleep50")))
        self._drain_contenders(run, DRAIN_SLEEP, contenders, n)

    def drain_cpu_round(self, run: int) -> None:
        n = self.args.cpu_jobs
        have_p = azjobs_side.processes_available()
        contenders = [(AZ_P1, lambda q, c: azjobs_side.drain(self.conn, q, n, self.workdir, job=jobs.cpu20,
                                                            processes=1 if have_p else None))]
        if have_p:
            contenders.append((AZ_P2, lambda q, c: azjobs_side.drain(self.conn, q, n, self.workdir, job=jobs.cpu20,
                                                                    processes=2)))
        else:
            self.note(f"{AZ_P2}: not available (this azjobs has no -p/--processes); the row is skipped and "
                      f"'{AZ_P1}' runs without the flag")
        if not self.args.skip_celery:
            contenders.append((CEL_CPU, lambda q, c: celery_peer.drain(self.celery_url, q, n, self.workdir, c,
                                                                      pool="prefork", concurrency=2, task="cpu20")))
        self._drain_contenders(run, DRAIN_CPU, contenders, n)

    def _raw_drain(self, q: str, transport: str) -> RawDrain:
        raw_sdk.enqueue(self.conn, q, [self.raw_body] * self.n, threads=8, transport="tuned")
        return raw_sdk.drain(self.conn, q, self.n, threads=8, transport=transport)

    def _drain_contenders(self, run: int, section: str, contenders: list, n: int) -> None:
        for name, work in self.rotate(run, contenders):
            q, client = self.queue("drn")
            outcome = work(q, client)
            key = f"{section}|{name}"
            if isinstance(outcome, Drain):
                self.drains.setdefault(key, []).append(outcome)
                extra = (f" ({outcome.jobs} jobs, {outcome.duplicates} duplicate runs; cpu {outcome.cpu_s:.2f}s, "
                         f"{outcome.drain_cpu_s:.2f}s after the first job; peak rss "
                         f"{outcome.peak_rss / 2**20:.0f} MB; peak running {outcome.peak_running}")
                if len(outcome.per_process) > 1:
                    extra += (f"; runs per process {sorted(outcome.per_process.values())}, first-job skew "
                              f"{outcome.start_skew * 1000:.0f} ms")
                extra += ")"
                if outcome.jobs != n:
                    raise RuntimeError(f"{name}: {outcome.jobs} distinct jobs ran, expected {n}")
            else:
                self.raw_drains.setdefault(key, []).append(outcome)
                extra = f" (cpu {outcome.cpu_s:.2f}s in the harness)"
            self.results.add(section, name, outcome.rate, "jobs/s")
            say(f"{section}: {name}: {outcome.rate:.0f}/s{extra}")
            self.drop(client)

    def idle_round(self) -> None:
        """Idle workers side by side, each behind its own counting proxy.

        Each worker runs one warm-up probe; then its storage calls are counted minute by minute
        for ``--idle-seconds``; then one probe measures the pickup after that long idle; then
        ``--latency-samples`` probes go out after random pauses of 0.3–2.5 s (fixed seed).
        """
        from devtools.azurite import ACCOUNT, KEY

        window = self.args.idle_seconds
        azjobs_side.client(self.conn)  # the probes' sender: straight to Azurite
        contenders = []  # (idle, queue, side path, send, worker, proxy, queue client)
        try:
            specs = [(IDLE_AZ, HOST_DEFAULTS), (IDLE_AZ_HJ, REPO_HOST_JSON)]
            if not self.args.skip_celery:
                specs.append((IDLE_CEL, None))
            for name, setup in specs:
                proxy = CountingProxy(self.azurite.queue_port).start()
                q, client = self.queue("idle")
                if setup is not None:
                    proxied = cost.proxied_connection_string(self.conn, proxy.port, self.azurite.queue_port)
                    worker, side = azjobs_side.start_worker(proxied, q, self.workdir, burst=False, setup=setup)
                    send = azjobs_side.send_probe
                else:
                    url = celery_peer.broker_url(proxy.port, ACCOUNT, KEY)
                    worker, side = celery_peer.start_idle_worker(url, q, self.workdir)
                    send = celery_peer.send_probe
                idle = self.idle.setdefault(name, Idle(name))
                contenders.append((idle, q, sidechannel.Reader(side), send, worker, proxy, client))
            # Warm-up: each worker has started and run one job; its idle time starts then.
            went_idle: dict[str, float] = {}
            for idle, q, reader, send, worker, proxy, _ in contenders:
                send(q)
                if reader.wait_for(1, timeout=90, alive=worker.alive) < 1:
                    raise RuntimeError(f"{idle.name}: the warm-up probe did not run (log: {worker.log_path})")
                proxy.reset()
                went_idle[idle.name] = time.monotonic()
            say(f"idle: counting storage calls of {len(contenders)} idle workers for {window} s")
            events = sorted((went_idle[c[0].name] + 60 * (m + 1), i) for i, c in enumerate(contenders)
                            for m in range(window // 60))
            for at, i in events:
                time.sleep(max(0.0, at - time.monotonic()))
                idle, proxy = contenders[i][0], contenders[i][5]
                idle.minutes.append(proxy.reset())
            # One probe each after the idle window: the pickup a job gets after a quiet spell.
            sent = {}
            for idle, q, reader, send, worker, proxy, _ in contenders:
                sent[idle.name] = send(q)
            for idle, q, reader, send, worker, proxy, _ in contenders:
                if reader.wait_for(2, timeout=120, alive=worker.alive) < 2:
                    raise RuntimeError(f"{idle.name}: the after-idle probe did not run within 120 s")
                idle.after_idle = max(e.start for e in reader.entries) - sent[idle.name]
                say(f"idle {idle.name}: calls per idle minute {[total(c) for c in idle.minutes]} "
                    f"{dict(sum(idle.minutes, Counter()))}; pickup after {window} s idle "
                    f"{idle.after_idle * 1000:.0f} ms")
            rng = random.Random(20261128)
            for i in range(self.args.latency_samples):
                time.sleep(rng.uniform(0.3, 2.5))
                for idle, q, reader, send, worker, proxy, _ in contenders:
                    send(q)
                for idle, q, reader, send, worker, proxy, _ in contenders:
                    if reader.wait_for(i + 3, timeout=90, alive=worker.alive) < i + 3:
                        raise RuntimeError(f"{idle.name}: probe {i} did not run within 90 s")
            for idle, q, reader, send, worker, proxy, _ in contenders:
                entries = reader.first_runs()[2:]
                idle.latency = [e.start - float(e.tag) for e in entries]
                if idle.latency:
                    say(f"latency {idle.name}: median {percentile(idle.latency, 0.5) * 1000:.0f} ms, "
                        f"p90 {percentile(idle.latency, 0.9) * 1000:.0f} ms")
        finally:
            for idle, q, reader, send, worker, proxy, client in contenders:
                worker.stop()
                proxy.stop()
                self.drop(client)

    def cost_round(self) -> None:
        from devtools.azurite import ACCOUNT, KEY

        n = self.args.cost_jobs
        proxy = cost.start_proxy(self.azurite.queue_port)
        try:
            proxied = cost.proxied_connection_string(self.conn, proxy.port, self.azurite.queue_port)
            measured = [cost.measure_raw(proxy, proxied, unique("cost"), n, self.raw_body, label="raw SDK")]
            for setup, name in ((HOST_DEFAULTS, AZ_DRAIN), (REPO_HOST_JSON, AZ_DRAIN_HJ)):
                q, client = self.queue("cost")
                measured.append(cost.measure_azjobs(proxy, self.conn, proxied, q, n, self.workdir, setup, label=name))
                self.drop(client)
            if not self.args.skip_celery:
                url = celery_peer.broker_url(proxy.port, ACCOUNT, KEY)
                measured.append(cost.measure_celery(proxy, self.conn, url, unique("cost"), n, self.workdir,
                                                    label=CEL_THREADS))
            for c in measured:
                self.calls[c.contender] = c
                say(f"cost {c.contender}: {c.per_job():.3f} calls/job {dict(c.enqueue + c.drain)}")
        finally:
            proxy.stop()

    # -- figures -------------------------------------------------------------------------
    def best_raw(self, section: str, default: str, tuned: str) -> tuple[str | None, float]:
        """The faster raw transport by median, and its median."""
        r = self.results
        options = [(r.median(section, name), name) for name in (default, tuned) if r.get(section, name)]
        if not options:
            return None, float("nan")
        value, name = max(options)
        return name, value

    def per_round_ratios(self, section: str, name: str, ref: str | None) -> list[float]:
        r = self.results
        a, b = r.get(section, name), r.get(section, ref) if ref else None
        if not a or not b:
            return []
        return [x / y for x, y in zip(a.values, b.values) if y]

    def cpu_ms_per_job(self, section: str, name: str) -> tuple[float, float]:
        """Median CPU ms per job: (drain only, start-up included); raw has no start-up."""
        key = f"{section}|{name}"
        if key in self.raw_drains:
            v = median([d.cpu_s / d.jobs * 1000 for d in self.raw_drains[key]])
            return v, v
        drains = self.drains.get(key)
        if not drains:
            return float("nan"), float("nan")
        return (median([d.drain_cpu_s / d.jobs * 1000 for d in drains]),
                median([d.cpu_s / d.jobs * 1000 for d in drains]))

    # -- the tables ----------------------------------------------------------------------
    def render(self) -> str:
        r = self.results
        out = []
        runs = max((len(s.values) for sec in r.sections() for s in r.in_section(sec)), default=0)
        enq_best, _ = self.best_raw(ENQUEUE, RAW8, RAW8_T)
        enq1_best, _ = self.best_raw(ENQUEUE, RAW1, RAW1_T)
        drain_best, _ = self.best_raw(DRAIN, RAW_DRAIN, RAW_DRAIN_T)

        # 1. Side by side: the no-op drain, CPU and calls per job, beside the raw SDK.
        if r.get(DRAIN, AZ_DRAIN) or r.get(DRAIN, drain_best or ""):
            rows = []
            call_of = {RAW_DRAIN: "raw SDK", RAW_DRAIN_T: "raw SDK"}
            for s in r.in_section(DRAIN):
                drain_cpu, all_cpu = self.cpu_ms_per_job(DRAIN, s.name)
                calls = self.calls.get(call_of.get(s.name, s.name))
                dup = sum(d.duplicates for d in self.drains.get(f"{DRAIN}|{s.name}", []))
                label = s.name + (" = best raw" if s.name == drain_best else "")
                vs = ratio(s.median, r.median(DRAIN, drain_best)) if drain_best else float("nan")
                rows.append([label, fmt(s.median, 0), s.span(0), fmt(vs * 100, 0) + " %" if vs == vs else "-",
                             fmt(drain_cpu, 2), fmt(all_cpu, 2) if s.name not in call_of else "-",
                             fmt(calls.per_job(), 3) if calls else "-",
                             str(dup) if s.name not in call_of else "-"])
            out.append(f"No-op drain side by side ({self.n} jobs, median of {runs} round(s); 'vs best raw' = median / "
                       f"median of the faster raw transport; CPU = the worker's process tree, or the harness for raw)")
            out.append(table(["contender", "jobs/s", "min–max", "vs best raw", "CPU ms/job (drain)",
                              "CPU ms/job incl. start-up", "storage calls/job", "duplicate runs"], rows))

        # 2. Every throughput row.
        refs = {ENQUEUE: None, DRAIN: drain_best, DRAIN_SLEEP: None, DRAIN_CPU: AZ_P1}
        rows = []
        for section in r.sections():
            for s in r.in_section(section):
                ref = refs.get(section)
                if section == ENQUEUE:
                    ref = enq1_best if s.name in (AZ_ONE, RAW1, RAW1_T, CEL_DELAY) else enq_best
                vs = ratio(s.median, r.median(section, ref)) if ref else float("nan")
                rows.append([section, s.name, fmt(s.median, 0), s.span(0), s.unit,
                             f"{vs * 100:.0f} % of {self.short(ref)}" if vs == vs else "-"])
        if rows:
            cpu = f", {self.args.cpu_jobs} in the CPU-bound drain" if DRAIN_CPU in r.sections() else ""
            out.append(f"\nThroughput (median of {runs} round(s); {self.n} jobs per enqueue and drain{cpu}; "
                       f"jobs/s counts distinct jobs)")
            out.append(table(["scenario", "contender", "median", "min–max", "unit", "vs"], rows))

        # 3. Idle: pickup latency and storage calls while idle.
        if self.idle:
            rows = []
            for idle in self.idle.values():
                v = idle.latency
                minutes = [total(c) for c in idle.minutes]
                later = minutes[1:]
                rows.append([idle.name, fmt(percentile(v, 0.5) * 1000, 0), fmt(percentile(v, 0.9) * 1000, 0),
                             (fmt(min(v) * 1000, 0) + "–" + fmt(max(v) * 1000, 0)) if v else "-", str(len(v)),
                             fmt(idle.after_idle * 1000, 0) if idle.after_idle is not None else "-",
                             str(minutes[0]) if minutes else "-",
                             fmt(sum(later) / len(later), 1) if later else "-"])
            window = self.args.idle_seconds
            out.append(f"\nIdle workers (pickup = enqueue → job start, ms; probes after random 0.3–2.5 s pauses; "
                       f"one probe after {window} s idle; storage calls counted by a proxy)")
            out.append(table(["worker", "pickup median", "p90", "min–max", "samples", f"pickup after {window} s idle",
                              "calls in 1st idle minute", "calls/min, later minutes"], rows))

        # 4. Worker cost per drain.
        cost_rows = []
        labels = {DRAIN: "no-op", DRAIN_SLEEP: "50 ms sleep", DRAIN_CPU: "20 ms CPU"}
        for key, drains in self.drains.items():
            section, name = key.split("|", 1)
            drain_cpu, all_cpu = self.cpu_ms_per_job(section, name)
            rss = sorted(d.peak_rss / 2**20 for d in drains)
            running = max(d.peak_running for d in drains)
            dup = sum(d.duplicates for d in drains)
            cost_rows.append([f"{name} ({labels[section]})", fmt(drain_cpu, 2), fmt(all_cpu, 2),
                              fmt(rss[len(rss) // 2], 0) + f" (max {fmt(max(rss), 0)})", str(running), str(dup)])
        for key, raws in self.raw_drains.items():
            section, name = key.split("|", 1)
            drain_cpu, _ = self.cpu_ms_per_job(section, name)
            cost_rows.append([f"{name} ({labels[section]}, in the harness)", fmt(drain_cpu, 2), "-", "-", "-", "0"])
        if cost_rows:
            out.append("\nWorker cost in the drains above (median over rounds; CPU of the process tree: from the first "
                       "job, and from process start)")
            out.append(table(["worker", "CPU ms/job (drain)", "CPU ms/job incl. start-up", "peak RSS MB",
                              "peak running", "duplicate runs (all rounds)"], cost_rows))

        # 5. Storage calls per job under load.
        if self.calls:
            first = next(iter(self.calls.values()))
            call_rows = [[c.contender, fmt(c.kind_per_job("send"), 3), fmt(c.kind_per_job("receive"), 3),
                          fmt(c.kind_per_job("delete"), 3), fmt(c.kind_per_job("update"), 3),
                          fmt(c.kind_per_job("create_queue", "queue_properties", "list_queues", "peek", "clear",
                                             "other"), 3),
                          fmt(c.per_job(), 3)] for c in self.calls.values()]
            out.append(f"\nStorage calls per job ({first.jobs} no-op jobs: enqueue + drain, counted by a proxy; "
                       "the raw SDK makes the same calls on either transport)")
            out.append(table(["contender", "send", "receive", "delete", "update", "other", "total"], call_rows))

        ratios = self.ratios()
        if ratios:
            out.append("\n" + ratios)
        if self.burn_ms == self.burn_ms:
            out.append(f"\nThe CPU-bound job: {workload.CPU_ITERATIONS:,} rounds of pure-Python arithmetic, "
                       f"{self.burn_ms:.1f} ms of CPU per call on this machine (median of 15 in the harness).")
        if self.notes:
            out.append("\nNotes:\n" + "\n".join(f"- {n}" for n in self.notes))
        return "\n".join(out)

    @staticmethod
    def short(name: str | None) -> str:
        return {RAW1: "raw 1 thread (default)", RAW1_T: "raw 1 thread (tuned)", RAW8: "raw 8 threads (default)",
                RAW8_T: "raw 8 threads (tuned)", RAW_DRAIN: "best raw (default transport)",
                RAW_DRAIN_T: "best raw (tuned transport)", AZ_P1: "-p 1"}.get(name or "", name or "-")

    def ratios(self) -> str:
        r = self.results
        rows = []

        def line(target: str, value: float, goal: float | None, text: str, higher: bool = True) -> None:
            if value != value:
                return
            if goal is None:
                rows.append([target, text, "-"])
                return
            met = value >= goal if higher else value <= goal
            rows.append([target, text, "met" if met else "MISSED"])

        def rounds(values: list[float], pct: bool = True) -> str:
            if len(values) < 2:
                return ""
            if pct:
                return f" (rounds {min(values) * 100:.0f}–{max(values) * 100:.0f} %)"
            return f" (rounds {min(values):.2f}–{max(values):.2f}×)"

        best, best_v = self.best_raw(DRAIN, RAW_DRAIN, RAW_DRAIN_T)
        if best:
            tuned_vs_default = ratio(r.median(DRAIN, RAW_DRAIN_T), r.median(DRAIN, RAW_DRAIN))
            line("raw drain: tuned / default transport (no target)", tuned_vs_default, None,
                 f"{tuned_vs_default:.2f}×" + rounds(self.per_round_ratios(DRAIN, RAW_DRAIN_T, RAW_DRAIN), False))
            for name, goal in ((AZ_DRAIN, 0.95), (AZ_DRAIN_HJ, None)):
                v = ratio(r.median(DRAIN, name), best_v)
                label = "host defaults" if name == AZ_DRAIN else "repo host.json"
                line(f"drain, {label} ≥ 95 % of best raw" if goal else f"drain, {label} vs best raw (no target)",
                     v, goal, f"{v * 100:.0f} %" + rounds(self.per_round_ratios(DRAIN, name, best)))
        best_celery = max(r.median(DRAIN, CEL_THREADS), r.median(DRAIN, CEL_PREFORK))
        v = ratio(r.median(DRAIN, AZ_DRAIN), best_celery)
        line("drain, host defaults ≥ 3× Celery (best pool)", v, 3.0, f"{v:.1f}×")
        v = ratio(r.median(DRAIN_SLEEP, AZ_C16), r.median(DRAIN_SLEEP, CEL_C16))
        line("50 ms jobs at c16 vs Celery threads c16 (no target)", v, None, f"{v:.1f}×")
        v = ratio(r.median(DRAIN_CPU, AZ_P2), r.median(DRAIN_CPU, AZ_P1))
        line("20 ms CPU jobs: -p 2 ≥ 1.6× -p 1 (2 cores shared with Azurite)", v, 1.6,
             f"{v:.2f}×" + rounds(self.per_round_ratios(DRAIN_CPU, AZ_P2, AZ_P1), False))
        v = ratio(r.median(DRAIN_CPU, AZ_P2), r.median(DRAIN_CPU, CEL_CPU))
        line("20 ms CPU jobs: -p 2 ≥ Celery prefork -c 2", v, 1.0,
             f"{v:.2f}×" + rounds(self.per_round_ratios(DRAIN_CPU, AZ_P2, CEL_CPU), False))
        v = ratio(r.median(DRAIN_CPU, AZ_P1), r.median(DRAIN_CPU, CEL_CPU))
        line("20 ms CPU jobs: -p 1 / Celery prefork -c 2 (no target)", v, None, f"{v:.2f}×")
        enq_best, enq_v = self.best_raw(ENQUEUE, RAW8, RAW8_T)
        v = ratio(r.median(ENQUEUE, AZ_MANY), enq_v)
        line("enqueue_many ≥ 90 % of best raw 8-thread send", v, 0.9, f"{v * 100:.0f} %")
        enq1_best, enq1_v = self.best_raw(ENQUEUE, RAW1, RAW1_T)
        v = ratio(r.median(ENQUEUE, AZ_ONE), enq1_v)
        line("job.enqueue loop vs best raw 1-thread send (no target)", v, None, f"{v * 100:.0f} %")
        raw_cpu = self.cpu_ms_per_job(DRAIN, best)[0] if best else float("nan")
        for name in (AZ_DRAIN, AZ_DRAIN_HJ):
            v = ratio(self.cpu_ms_per_job(DRAIN, name)[0], raw_cpu)
            line(f"CPU per job in the drain, {name} / best raw (no target)", v, None, f"{v:.2f}×")
        raw_calls = self.calls.get("raw SDK")
        for name in (AZ_DRAIN, AZ_DRAIN_HJ):
            c = self.calls.get(name)
            if c:
                extra = f" (raw {raw_calls.per_job():.3f})" if raw_calls else ""
                line(f"storage calls per short job ≤ 2.1, {name}", c.per_job(), 2.1, f"{c.per_job():.3f}{extra}",
                     higher=False)
        az = self.drains.get(f"{DRAIN}|{AZ_DRAIN}")
        if az:
            rss = sorted(d.peak_rss / 2**20 for d in az)[len(az) // 2]
            line("worker peak RSS ≤ 80 MB (host defaults, no-op)", rss, 80, f"{rss:.0f} MB", higher=False)
        if not rows:
            return ""
        return "Ratios and targets\n" + table(["", "measured", "target"], rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="500 jobs, 1 round, 10 latency samples, 60 s idle (about 6 min)")
    parser.add_argument("--runs", type=int, default=None, help="rounds of each throughput scenario (default 3)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput scenario (default 2000)")
    parser.add_argument("--cpu-jobs", type=int, default=None,
                        help="jobs in the 20 ms CPU-bound drain (default 1000; --quick 500)")
    parser.add_argument("--latency-samples", type=int, default=None, help="latency probes (default 50)")
    parser.add_argument("--idle-seconds", type=int, default=None,
                        help="seconds of idle workers' storage calls counted, whole minutes (default 120; --quick 60)")
    parser.add_argument("--cost-jobs", type=int, default=None, help="jobs in the call-count run (default --jobs)")
    parser.add_argument("--skip-celery", action="store_true", help="leave Celery out")
    parser.add_argument("--only", action="append", choices=SCENARIOS + ["latency"],
                        help="run only these scenarios (repeatable; 'latency' is 'idle')")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (worker logs)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.runs = args.runs or (1 if quick else 3)
    args.jobs = args.jobs or (500 if quick else 2000)
    args.cpu_jobs = args.cpu_jobs or (500 if quick else 1000)
    args.latency_samples = args.latency_samples if args.latency_samples is not None else (10 if quick else 50)
    idle = args.idle_seconds if args.idle_seconds is not None else (60 if quick else 120)
    args.idle_seconds = max(60, (idle + 59) // 60 * 60)
    args.cost_jobs = args.cost_jobs or args.jobs
    only = {"idle" if o == "latency" else o for o in (args.only or SCENARIOS)}
    args.only = only
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
    say(f"work directory {workdir}; {args.jobs} jobs, {args.runs} round(s); scenarios {sorted(args.only)}")
    with Azurite() as azurite:
        bench = Bench(args, azurite, workdir)
        if "cpu" in args.only:
            bench.burn_ms = workload.calibrate() * 1000
            say(f"the CPU-bound job costs {bench.burn_ms:.1f} ms of CPU here; -p available: "
                f"{azjobs_side.processes_available()}")
        bench.warm_up()
        rounds = args.runs if args.only & {"enqueue", "drain", "sleep", "cpu"} else 0
        for run in range(rounds):
            say(f"round {run + 1} of {args.runs}")
            if "enqueue" in args.only:
                bench.enqueue_round(run)
            if "drain" in args.only:
                bench.drain_round(run)
            if "sleep" in args.only:
                bench.drain_sleep_round(run)
            if "cpu" in args.only:
                bench.drain_cpu_round(run)
        if "idle" in args.only:
            bench.idle_round()
        if "cost" in args.only:
            bench.cost_round()
        print(bench.render())
    sizes = ""
    if rounds:
        cpu = f" ({args.cpu_jobs} CPU-bound)" if "cpu" in args.only else ""
        sizes = f"{args.jobs} jobs{cpu}, {args.runs} round(s); "
    print(f"\n({time.monotonic() - started:.0f} s; {sizes}scenarios {', '.join(sorted(args.only))}; Python "
          f"{sys.version.split()[0]}, one Azurite on this machine)")
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        say(f"worker logs kept in {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
