"""Storage calls per job, counted by a proxy in front of Azurite, for each contender.

Every call a client makes on the way (queue look-ups at start, sends, receives — empty
ones too — deletes, lease renewals) goes through ``CountingProxy``. The raw SDK's calls do
not depend on its transport (default or tuned), so it is counted once. The enqueue side and
the drain side are counted apart; per-job figures divide by the jobs run. CPU seconds and
peak RSS come from the (unproxied) drain runs instead, so the proxy cannot skew them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import azjobs_side, celery_peer, raw_sdk
from .process import WorkerProcess
from .proxy import CountingProxy, total
from .watch import watch


@dataclass
class CallCount:
    contender: str
    jobs: int
    enqueue: Counter
    drain: Counter

    def per_job(self) -> float:
        return (total(self.enqueue) + total(self.drain)) / self.jobs

    def kind_per_job(self, *kinds: str) -> float:
        both = self.enqueue + self.drain
        return sum(both[k] for k in kinds) / self.jobs


def proxied_connection_string(connection_string: str, proxy_port: int, queue_port: int) -> str:
    return connection_string.replace(f"127.0.0.1:{queue_port}/", f"127.0.0.1:{proxy_port}/")


def measure_azjobs(proxy: CountingProxy, direct: str, proxied: str, queue: str, n: int, workdir: Path,
                   setup: azjobs_side.Setup = azjobs_side.HOST_DEFAULTS, label: str = "") -> CallCount:
    azjobs_side.client(proxied)
    proxy.reset()
    azjobs_side.enqueue_many(proxied, queue, n)
    enqueue = proxy.reset()
    worker, side = azjobs_side.start_worker(proxied, queue, workdir, burst=True, setup=setup)
    try:
        watch(worker, side, n, raw_sdk.queue_client(direct, queue), timeout=300)
        worker.wait(60)
    finally:
        worker.stop()
    drain = proxy.reset()
    azjobs_side.client(direct)
    return CallCount(label or f"azjobs worker, {setup.label}", n, enqueue, drain)


def measure_raw(proxy: CountingProxy, proxied: str, queue: str, n: int, body: str, label: str = "") -> CallCount:
    raw_sdk.queue_client(proxied, queue).create_queue()
    proxy.reset()
    raw_sdk.enqueue(proxied, queue, [body] * n, threads=8)
    enqueue = proxy.reset()
    raw_sdk.drain(proxied, queue, n, threads=8)
    drain = proxy.reset()
    return CallCount(label or "raw SDK (8 threads, receive 32)", n, enqueue, drain)


def measure_celery(proxy: CountingProxy, direct: str, proxied_url: str, queue: str, n: int, workdir: Path,
                   label: str = "") -> CallCount:
    queue_client = raw_sdk.queue_client(direct, queue)
    queue_client.create_queue()
    from .celery_app import app

    with app.connection_for_write(proxied_url) as conn:
        noop = celery_peer._task("noop")
        noop.apply_async((0,), queue=queue, connection=conn)  # connect and look the queue up
        queue_client.clear_messages()
        proxy.reset()
        for i in range(n):
            noop.apply_async((i,), queue=queue, connection=conn)
        enqueue = proxy.reset()
    side = str(workdir / f"{queue}.side")
    worker = WorkerProcess(celery_peer.worker_argv(queue, "threads", 4),
                           celery_peer.worker_env(proxied_url, queue, side), workdir / f"{queue}.log").start()
    try:
        watch(worker, side, n, queue_client, timeout=300)
    finally:
        worker.stop()
    drain = proxy.reset()
    return CallCount(label or "Celery --pool threads -c 4", n, enqueue, drain)


def start_proxy(queue_port: int) -> CountingProxy:
    proxy = CountingProxy(queue_port).start()
    time.sleep(0.05)
    return proxy
