"""Jobs for the workflow tests, in-process and in ``azjobs`` subprocesses (``-i tests.jobs.workflow_jobs``).

Each run leaves evidence under ``$AZJOBS_TEST_DIR`` (see tests.jobs.worker_jobs): ``<key>.started``
one line per start, ``<key>.runs`` one line per completed run. Tests enqueue with
``job.options(queue=<unique queue>).s(...)``.
"""

from __future__ import annotations

import time

import azjobs
from tests.jobs.worker_jobs import _append, runs, starts  # noqa: F401  (re-exported for the tests)

QUEUE = "workflow-tests"  # the declared queue; tests override it per step


@azjobs.job(queue=QUEUE, name="wf.add", retry=azjobs.NoRetry())
def add(a: int, b: int, key: str = "add") -> int:
    _append(key, "runs")
    return a + b


@azjobs.job(queue=QUEUE, name="wf.double", retry=azjobs.NoRetry())
def double(n: int, key: str = "double") -> int:
    _append(key, "runs")
    return 2 * n


@azjobs.job(queue=QUEUE, name="wf.total", retry=azjobs.NoRetry())
def total(values: list, key: str = "total") -> int:
    _append(key, "runs")
    return sum(values)


@azjobs.job(queue=QUEUE, name="wf.slow", retry=azjobs.NoRetry())
def slow(n: int, key: str, seconds: float) -> int:
    """Note the start, sleep, note the completed run; returns n + 1."""
    _append(key, "started")
    time.sleep(seconds)
    _append(key, "runs")
    return n + 1


@azjobs.job(queue=QUEUE, name="wf.flaky", retry=azjobs.Fixed(0.2, max_retries=2))
def flaky(n: int, key: str) -> int:
    """Fails its first attempt (per key), then succeeds."""
    _append(key, "started")
    if len(starts(_dir(), key)) == 1:
        raise ConnectionError(f"{key}: first attempt fails")
    _append(key, "runs")
    return n * 10


@azjobs.job(queue=QUEUE, name="wf.broken", retry=azjobs.Fixed(0.1, max_retries=1))
def broken(n: int, key: str) -> None:
    _append(key, "started")
    raise ValueError(f"broken step got {n}")


def _dir():
    from tests.jobs.worker_jobs import _dir as directory

    return directory()


@azjobs.job(queue=QUEUE, name="wf.emoji", retry=azjobs.NoRetry())
def emoji(n: int) -> str:
    return "😀" * n


@azjobs.job(queue=QUEUE, name="wf.echo", retry=azjobs.NoRetry())
def echo(value):
    return value
