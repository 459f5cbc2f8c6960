"""Celery 5 with kombu's ``azurestoragequeues`` transport, on the same Azurite.

Broker URL form (kombu/transport/azurestoragequeues.py): ``azurestoragequeues://<account
key>@<queue endpoint URL>``; kombu splits at the last ``@`` (the key may hold ``/``) and,
for a URL naming ``devstoreaccount1``, passes the key as Azurite's account credential.
The worker is ``celery worker`` in a subprocess, ``--pool threads -c 4`` or
``--pool prefork -c 2``, with gossip/mingle/heartbeat off; completions come back over the
side channel.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import sidechannel
from .process import WorkerProcess
from .watch import Drain, watch


def broker_url(queue_port: int, account: str, key: str) -> str:
    return f"azurestoragequeues://{key}@http://127.0.0.1:{queue_port}/{account}"


def configure(url: str, queue: str) -> None:
    """Point the in-process Celery app at the broker (before its first use)."""
    from . import celery_app

    os.environ[celery_app.BROKER_ENV] = url
    os.environ[celery_app.QUEUE_ENV] = queue
    celery_app.app.conf.broker_url = url


def _task(name: str):
    from . import celery_app

    return getattr(celery_app, name)


def warm_up(queue: str, queue_client, task: str = "noop") -> None:
    """Send (and clear) one message so kombu has connected and looked the queue up: not timed,
    like the other clients' queue creation."""
    _task(task).apply_async((0,), queue=queue)
    queue_client.clear_messages()


def enqueue_delay_loop(queue: str, n: int, queue_client, task: str = "noop") -> float:
    """``task.apply_async`` (``delay`` with a queue) in a loop on one thread; seconds taken."""
    job = _task(task)
    warm_up(queue, queue_client, task)
    start = time.perf_counter()
    for i in range(n):
        job.apply_async((i,), queue=queue)
    return time.perf_counter() - start


def preload(queue: str, n: int, queue_client, task: str = "noop", threads: int = 8) -> None:
    """Fill a queue with ``n`` Celery messages quickly (one broker connection per thread)."""
    from . import celery_app

    job = _task(task)
    warm_up(queue, queue_client, task)

    def part(indices: range) -> None:
        with celery_app.app.connection_for_write() as conn:
            for i in indices:
                job.apply_async((i,), queue=queue, connection=conn)

    step = (n + threads - 1) // threads
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(part, [range(s, min(n, s + step)) for s in range(0, n, step)]):
            pass


def worker_env(url: str, queue: str, side_path: str) -> dict[str, str]:
    from . import celery_app

    env = dict(os.environ)
    env[celery_app.BROKER_ENV] = url
    env[celery_app.QUEUE_ENV] = queue
    env[sidechannel.ENV] = side_path
    return env


def worker_argv(queue: str, pool: str, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "benchmarks.celery_app", "worker", "-Q", queue,
            "--pool", pool, "-c", str(concurrency), "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-l", "WARNING"]


def drain(url: str, queue: str, n: int, workdir: Path, queue_client, *, pool: str, concurrency: int,
          task: str = "noop", timeout: float = 300.0) -> Drain:
    preload(queue, n, queue_client, task)
    side = str(workdir / f"{queue}.side")
    worker = WorkerProcess(worker_argv(queue, pool, concurrency), worker_env(url, queue, side),
                           workdir / f"{queue}.log").start()
    try:
        return watch(worker, side, n, queue_client, timeout)
    finally:
        worker.stop()


def start_idle_worker(url: str, queue: str, workdir: Path) -> tuple[WorkerProcess, str]:
    side = str(workdir / f"{queue}.side")
    worker = WorkerProcess(worker_argv(queue, "threads", 4), worker_env(url, queue, side),
                           workdir / f"{queue}.log").start()
    return worker, side


def send_probe(queue: str) -> float:
    sent = time.time()
    _task("probe").apply_async((sent,), queue=queue)
    return sent
