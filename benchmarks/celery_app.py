"""The Celery 5 peer: the same four jobs on kombu's ``azurestoragequeues`` transport.

Configured from the environment so the worker subprocess and the enqueuing harness agree:
``AZJOBS_BENCH_BROKER`` (``azurestoragequeues://<key>@<queue endpoint URL>``) and
``AZJOBS_BENCH_CELERY_QUEUE`` (the run's own queue). Gossip, mingle, heartbeats and remote
control are off, so the worker polls only the job queue.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from . import sidechannel, workload

BROKER_ENV = "AZJOBS_BENCH_BROKER"
QUEUE_ENV = "AZJOBS_BENCH_CELERY_QUEUE"

app = Celery("azjobs_bench", broker=os.environ.get(BROKER_ENV, "memory://"))
app.conf.update(
    task_default_queue=os.environ.get(QUEUE_ENV, "celery"),
    task_ignore_result=True,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
)


@app.task(name="bench.noop")
def noop(n: int) -> None:
    now = time.time()
    sidechannel.record(f"n{n}", now, now)


@app.task(name="bench.sleep50")
def sleep50(n: int) -> None:
    start = time.time()
    time.sleep(0.05)
    sidechannel.record(f"s{n}", start, time.time())


@app.task(name="bench.cpu20")
def cpu20(n: int) -> None:
    start = time.time()
    workload.burn()
    sidechannel.record(f"c{n}", start, time.time())


@app.task(name="bench.probe")
def probe(sent_at: float) -> None:
    now = time.time()
    sidechannel.record(f"{sent_at:.6f}", now, now)
