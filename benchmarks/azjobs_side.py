"""azjobs as a user runs it: ``job.enqueue``/``enqueue_many`` and the ``azjobs`` worker command.

The worker is the CLI in a subprocess with default settings
(``python -m azjobs -q QUEUE -i benchmarks.jobs --burst``), ``AzureWebJobsStorage`` set to
the Azurite connection string, and its log going to a file.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import azjobs

from . import jobs, sidechannel
from .process import WorkerProcess
from .watch import Drain, watch


def client(connection_string: str) -> azjobs.Client:
    """A Client that is also the process default (``job.enqueue`` uses it)."""
    return azjobs.configure(connection_string)


def enqueue_one_by_one(connection_string: str, queue: str, n: int) -> float:
    bound = jobs.noop.options(queue=queue)
    client(connection_string).ensure_queue(queue)
    start = time.perf_counter()
    for i in range(n):
        bound.enqueue(i)
    return time.perf_counter() - start


def enqueue_many(connection_string: str, queue: str, n: int, job=jobs.noop) -> float:
    client(connection_string).ensure_queue(queue)
    start = time.perf_counter()
    result = job.options(queue=queue).enqueue_many(range(n))
    elapsed = time.perf_counter() - start
    result.raise_for_failures()
    return elapsed


def worker_env(connection_string: str, side_path: str) -> dict[str, str]:
    env = dict(os.environ)
    env["AzureWebJobsStorage"] = connection_string
    env[sidechannel.ENV] = side_path
    env.pop("AZJOBS_HOST_JSON", None)
    return env


def worker_argv(queue: str, burst: bool, concurrency: int | None = None) -> list[str]:
    argv = [sys.executable, "-m", "azjobs", "-q", queue, "-i", "benchmarks.jobs"]
    if burst:
        argv.append("--burst")
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    return argv


def drain(connection_string: str, queue: str, n: int, workdir: Path, *, job=jobs.noop,
          concurrency: int | None = None, timeout: float = 300.0) -> Drain:
    """Pre-enqueue ``n`` jobs (untimed), then time a burst worker working them off."""
    enqueue_many(connection_string, queue, n, job=job)
    side = str(workdir / f"{queue}.side")
    worker = WorkerProcess(worker_argv(queue, burst=True, concurrency=concurrency),
                           worker_env(connection_string, side), workdir / f"{queue}.log").start()
    try:
        result = watch(worker, side, n, client(connection_string).queue(queue), timeout)
        code = worker.wait(60)
        if code != 0:
            raise RuntimeError(f"azjobs worker exited with {code} (log: {worker.log_path})")
        # The burst worker exited by itself: its rusage is exact.
        result.cpu_s, result.peak_rss = worker.cpu_s, worker.peak_rss
        return result
    finally:
        worker.stop()


def start_idle_worker(connection_string: str, queue: str, workdir: Path) -> tuple[WorkerProcess, str]:
    client(connection_string).ensure_queue(queue)
    side = str(workdir / f"{queue}.side")
    worker = WorkerProcess(worker_argv(queue, burst=False), worker_env(connection_string, side),
                           workdir / f"{queue}.log").start()
    return worker, side


def send_probe(queue: str) -> float:
    sent = time.time()
    jobs.probe.options(queue=queue).enqueue(sent)
    return sent
