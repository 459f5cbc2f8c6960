"""Workflow overhead per step: a fan-out of N steps plus a fan-in, against the same N jobs enqueued plainly.

Run by hand (asserts nothing about timing)::

    .venv/bin/python -m benchmarks.workflows            # 200 steps, 3 rounds
    .venv/bin/python -m benchmarks.workflows --steps 500 --rounds 5

One Azurite on free ports, one in-process ``Worker`` (host defaults but a 0.5 s polling cap,
so idle back-off does not dominate either side). Each round:

- **plain**: ``enqueue_many`` of N no-op jobs, then the time until the worker has run all N;
- **workflow**: ``azjobs.chain(azjobs.group(N no-op steps), fan-in step).enqueue()`` and the
  time until ``handle.result()`` returns: start message, history episodes in Table Storage,
  N step messages, N completion reports, the fan-in step, the final episode.

Overhead per step = (workflow − plain) / N. The workflow also pays one more job (the fan-in)
and its round trips, included in the overhead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import azjobs  # noqa: E402
from azjobs import QueueSettings  # noqa: E402
from azjobs.runtime.worker import Worker  # noqa: E402

COUNT = {"n": 0}
LOCK = threading.Lock()


@azjobs.job(queue="bench-wf", name="bench.wf.step", retry=azjobs.NoRetry())
def step(n: int) -> int:
    with LOCK:
        COUNT["n"] += 1
    return n


@azjobs.job(queue="bench-wf", name="bench.wf.fan_in", retry=azjobs.NoRetry())
def fan_in(values: list) -> int:
    return len(values)


def wait_count(target: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while COUNT["n"] < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {COUNT['n']} of {target} jobs ran")
        time.sleep(0.005)


def one_round(client, steps: int) -> tuple[float, float]:
    queue, flows = f"bw-{uuid.uuid4().hex[:12]}", f"bwf-{uuid.uuid4().hex[:12]}"
    os.environ["AZJOBS_WORKFLOWS_TABLE"] = f"bw{uuid.uuid4().hex[:12]}"
    client.ensure_queue(queue)
    worker = Worker([queue], client=client, settings=QueueSettings(max_polling_interval=timedelta(seconds=0.5)),
                    workflows=flows)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    time.sleep(1.0)  # both receivers running
    try:
        COUNT["n"] = 0
        started = time.perf_counter()
        step.options(queue=queue).enqueue_many(list(range(steps))).raise_for_failures()
        wait_count(steps)
        plain = time.perf_counter() - started

        COUNT["n"] = 0
        started = time.perf_counter()
        handle = azjobs.chain(azjobs.group(*(step.options(queue=queue).s(n) for n in range(steps))),
                              fan_in.options(queue=queue).s()).enqueue(queue=flows)
        assert handle.result(timeout=600, interval=0.02) == steps
        workflow = time.perf_counter() - started
    finally:
        worker.stop()
        thread.join(30)
    return plain, workflow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from devtools.azurite import Azurite

    os.environ.setdefault("AZJOBS_TEST_DIR", tempfile.mkdtemp())
    server = Azurite().start()
    try:
        client = azjobs.configure(server.connection_string)
        results = []
        for index in range(args.rounds):
            plain, workflow = one_round(client, args.steps)
            results.append((plain, workflow))
            print(f"round {index + 1}: plain {plain:.2f}s, workflow {workflow:.2f}s, "
                  f"overhead {(workflow - plain) / args.steps * 1000:.1f} ms/step", file=sys.stderr, flush=True)
    finally:
        server.stop()
    plain = statistics.median(r[0] for r in results)
    workflow = statistics.median(r[1] for r in results)
    print(f"| {args.steps} no-op jobs | median of {args.rounds} | jobs/s |")
    print("|---|---|---|")
    print(f"| plain enqueue_many + worker | {plain:.2f} s | {args.steps / plain:.0f} |")
    print(f"| workflow: group of {args.steps} + fan-in | {workflow:.2f} s | {args.steps / workflow:.0f} |")
    print(f"| overhead per step | {(workflow - plain) / args.steps * 1000:.1f} ms | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
