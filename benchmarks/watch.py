"""Watching a worker subprocess drain a queue, the same way for every framework.

A drain starts when the first job starts (so process start-up is not counted) and ends
when every job has run *and* the queue is empty (deletes included: azjobs deletes after
the job, Celery/kombu before it). The queue's approximate count includes invisible
messages, so zero means every message is gone. Both are polled every 25 ms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import sidechannel
from .process import WorkerProcess

POLL_S = 0.025


@dataclass
class Drain:
    jobs: int  # side-channel completions seen (duplicates included)
    seconds: float  # first job start → queue empty with all jobs run
    cpu_s: float  # worker tree CPU (user + system)
    peak_rss: int  # bytes
    peak_running: int  # most jobs running at once, from the side channel's start/end times
    wall_s: float  # worker process start → drained (start-up included)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


def peak_running(entries: list[sidechannel.Entry]) -> int:
    events = sorted([(e.start, 1) for e in entries] + [(e.end, -1) for e in entries], key=lambda x: (x[0], -x[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def watch(worker: WorkerProcess, side_path: str, expected: int, queue_client, timeout: float) -> Drain:
    """Wait until ``expected`` jobs ran and the queue is empty; raises if the worker dies or time runs out."""
    deadline = time.monotonic() + timeout
    while sidechannel.count(side_path) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sidechannel.count(side_path)} of {expected} jobs ran in {timeout}s "
                               f"(log: {worker.log_path})")
        if not worker.alive() and sidechannel.count(side_path) < expected:
            raise RuntimeError(f"worker exited with {worker.returncode} after "
                               f"{sidechannel.count(side_path)} of {expected} jobs (log: {worker.log_path})")
        time.sleep(POLL_S)
    while True:
        if queue_client.get_queue_properties().approximate_message_count == 0:
            empty_at = time.time()
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue not empty {timeout}s after start (log: {worker.log_path})")
        time.sleep(POLL_S)
    worker.sample()
    entries = sidechannel.read(side_path)
    first = min(e.start for e in entries)
    end = max(empty_at, max(e.end for e in entries))
    return Drain(jobs=len(entries), seconds=end - first, cpu_s=worker.cpu_s, peak_rss=worker.peak_rss,
                 peak_running=peak_running(entries), wall_s=end - worker.started_at)
