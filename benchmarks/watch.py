"""Watching a worker subprocess drain a queue, the same way for every framework.

A drain starts when the first job starts (so process start-up is not counted) and ends
when every job has run *and* the queue is empty (deletes included: azjobs deletes after
the job, Celery/kombu before it). The queue's approximate count includes invisible
messages, so zero means every message is gone. Both are polled every 25 ms.

Throughput counts distinct jobs: a job that ran twice (its message came back after a
lease ran out, or was received twice) counts once, and the extra runs are reported as
duplicates. The worker tree's CPU time is read when the first job starts, so the drain's
CPU can be told from the start-up's.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from . import sidechannel
from .process import WorkerProcess

POLL_S = 0.025


@dataclass
class Drain:
    jobs: int  # distinct jobs that ran (what throughput counts)
    runs: int  # side-channel lines: every run, duplicates included
    seconds: float  # first job start → queue empty with all jobs run
    cpu_s: float  # worker tree CPU (user + system), start-up included
    cpu_at_first_job: float  # the same, read when the first job started
    peak_rss: int  # bytes
    peak_running: int  # most jobs running at once, from the side channel's start/end times
    wall_s: float  # worker process start → drained (start-up included)
    per_process: Counter = field(default_factory=Counter)  # pid → runs
    first_start_by_process: dict = field(default_factory=dict)  # pid → its first job's start (wall clock)

    @property
    def rate(self) -> float:
        """Distinct jobs per second."""
        return self.jobs / self.seconds if self.seconds > 0 else 0.0

    @property
    def duplicates(self) -> int:
        return self.runs - self.jobs

    @property
    def drain_cpu_s(self) -> float:
        """Worker CPU from the first job's start to the end (start-up excluded)."""
        return max(0.0, self.cpu_s - self.cpu_at_first_job)

    @property
    def start_skew(self) -> float:
        """Seconds between the first and the last process to start its first job (0 for one process)."""
        starts = list(self.first_start_by_process.values())
        return max(starts) - min(starts) if len(starts) > 1 else 0.0


def peak_running(entries: list[sidechannel.Entry]) -> int:
    events = sorted([(e.start, 1) for e in entries] + [(e.end, -1) for e in entries], key=lambda x: (x[0], -x[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def watch(worker: WorkerProcess, side_path: str, expected: int, queue_client, timeout: float) -> Drain:
    """Wait until ``expected`` distinct jobs ran and the queue is empty; raises if the worker dies or time runs out."""
    deadline = time.monotonic() + timeout
    reader = sidechannel.Reader(side_path)
    cpu_at_first: float | None = None
    while reader.poll() < expected:
        if cpu_at_first is None and reader.runs:
            usage = worker.tree_usage()
            cpu_at_first = usage[0] if usage else 0.0
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {reader.distinct} of {expected} jobs ran in {timeout}s "
                               f"(log: {worker.log_path})")
        if not worker.alive() and reader.poll() < expected:
            raise RuntimeError(f"worker exited with {worker.returncode} after "
                               f"{reader.distinct} of {expected} jobs (log: {worker.log_path})")
        time.sleep(POLL_S)
    if cpu_at_first is None:  # every job ran within one poll
        cpu_at_first = 0.0
    while True:
        if queue_client.get_queue_properties().approximate_message_count == 0:
            empty_at = time.time()
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue not empty {timeout}s after start (log: {worker.log_path})")
        time.sleep(POLL_S)
    worker.sample()
    reader.poll()
    entries = reader.entries
    first = min(e.start for e in entries)
    end = max(empty_at, max(e.end for e in reader.first_runs()))
    first_start: dict[int, float] = {}
    for e in entries:
        first_start[e.pid] = min(first_start.get(e.pid, e.start), e.start)
    return Drain(jobs=reader.distinct, runs=reader.runs, seconds=end - first, cpu_s=worker.cpu_s,
                 cpu_at_first_job=cpu_at_first, peak_rss=worker.peak_rss, peak_running=peak_running(entries),
                 wall_s=end - worker.started_at, per_process=Counter(e.pid for e in entries),
                 first_start_by_process=first_start)
