"""azjobs jobs for the benchmarks; each reports to the side channel.

The queue named here is only the default: the harness enqueues with
``job.options(queue=...)`` so every run has a queue of its own.
"""

from __future__ import annotations

import time

import azjobs

from . import sidechannel, workload

SLEEP_S = 0.05


@azjobs.job(queue="bench-noop")
def noop(n: int) -> None:
    """Does nothing: the cost measured is the framework's and the storage's."""
    now = time.time()
    sidechannel.record(f"n{n}", now, now)


@azjobs.job(queue="bench-sleep")
def sleep50(n: int) -> None:
    """An I/O-bound job: 50 ms of waiting."""
    start = time.time()
    time.sleep(SLEEP_S)
    sidechannel.record(f"s{n}", start, time.time())


@azjobs.job(queue="bench-cpu")
def cpu20(n: int) -> None:
    """A CPU-bound job: about 20 ms of pure-Python arithmetic (benchmarks/workload.py), holding the GIL."""
    start = time.time()
    workload.burn()
    sidechannel.record(f"c{n}", start, time.time())


@azjobs.job(queue="bench-probe")
def probe(sent_at: float) -> None:
    """Latency probe: records when it was enqueued (as its tag) and when it started."""
    now = time.time()
    sidechannel.record(f"{sent_at:.6f}", now, now)
