"""Jobs for the runner's tests, in-process and in ``azjobs`` subprocesses (``-i tests.jobs.worker_jobs``).

Each job leaves evidence in files under ``$AZJOBS_TEST_DIR`` (read when the job runs), so a
test can see what ran, how often and where, without parsing a worker's output:
``<key>.runs`` gets one line per completed run, ``<key>.started`` one line per start.
Tests enqueue with ``job.options(queue=<unique queue>)``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import azjobs

QUEUE = "worker-tests"  # the declared queue; tests always override it per call

_lock = threading.Lock()
_running = 0
peak = 0  # most record_concurrency jobs seen running at once in this process


def _dir() -> Path:
    return Path(os.environ["AZJOBS_TEST_DIR"])


def _append(key: str, suffix: str, text: str = "") -> None:
    line = f"{os.getpid()} {threading.current_thread().name} {time.time():.3f} {text}".rstrip() + "\n"
    with open(_dir() / f"{key}.{suffix}", "a", encoding="utf-8") as fh:
        fh.write(line)


def runs(directory: Path, key: str) -> list[str]:
    """The lines written by completed runs of ``key`` (empty if none)."""
    path = Path(directory) / f"{key}.runs"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def starts(directory: Path, key: str) -> list[str]:
    path = Path(directory) / f"{key}.started"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@azjobs.job(queue=QUEUE, name="wt.record")
def record(key: str) -> None:
    """Note one run of ``key``."""
    _append(key, "runs")


@azjobs.job(queue=QUEUE, name="wt.slow")
def slow(key: str, seconds: float) -> None:
    """Note the start, sleep, then note the run."""
    _append(key, "started")
    time.sleep(seconds)
    _append(key, "runs")


@azjobs.job(queue=QUEUE, name="wt.slow_once")
def slow_once(key: str, seconds: float) -> None:
    """Sleep only on the first attempt (a crashed first run, then a quick rerun)."""
    _append(key, "started")
    marker = _dir() / f"{key}.slept"
    if not marker.exists():
        marker.write_text("1")
        time.sleep(seconds)
    _append(key, "runs")


@azjobs.job(queue=QUEUE, name="wt.fail", max_retries=0)
def fail(key: str) -> None:
    """Always fails, with no retries: the core dead-letters it at once."""
    _append(key, "started")
    raise RuntimeError(f"{key} failed on purpose")


@azjobs.job(queue=QUEUE, name="wt.record_async")
async def record_async(key: str) -> None:
    """An async job: notes the thread it ran on and whether an event loop was running."""
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    _append(key, "runs", f"loop={id(loop)}")


@azjobs.job(queue=QUEUE, name="wt.concurrent")
def concurrent(seconds: float) -> None:
    """Counts how many of these run at once (in-process tests read ``peak``)."""
    global _running, peak
    with _lock:
        _running += 1
        peak = max(peak, _running)
    try:
        time.sleep(seconds)
    finally:
        with _lock:
            _running -= 1


@azjobs.job(queue=QUEUE, name="wt.concurrent_async")
async def concurrent_async(seconds: float) -> None:
    global _running, peak
    with _lock:
        _running += 1
        peak = max(peak, _running)
    try:
        await asyncio.sleep(seconds)
    finally:
        with _lock:
            _running -= 1


def reset_peak() -> None:
    global peak
    with _lock:
        peak = 0


@azjobs.job(queue=QUEUE, name="wt.fail_retry", max_retries=5)
def fail_retry(key: str) -> None:
    """Always fails, with retries allowed: the core writes a retry copy (or raises Redeliver if it cannot)."""
    _append(key, "started")
    raise RuntimeError(f"{key} failed on purpose")
