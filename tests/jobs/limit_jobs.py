"""Jobs for the limits tests, in ``azjobs`` subprocesses (``-i tests.jobs.limit_jobs``).

Each run appends ``<pid> <start> <end> <key>`` to ``$AZJOBS_TEST_DIR/<file>.runs`` (``time.time()``,
one clock for every process of the machine), so a test can see what overlapped. Tests set
``AZJOBS_LIMITS_TABLE`` to a table of their own and enqueue with ``job.options(queue=...)``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import azjobs

QUEUE = "limit-tests"  # the declared queue; tests override it per call

azjobs.limit("lt-shared", concurrency=1, lease_s=6)


def _note(file: str, key: str, started: float) -> None:
    line = f"{os.getpid()} {started:.6f} {time.time():.6f} {key}\n"
    with open(Path(os.environ["AZJOBS_TEST_DIR"]) / f"{file}.runs", "a", encoding="utf-8") as fh:
        fh.write(line)


def _started(file: str, key: str) -> None:
    """Notes ``<pid> <start> <key>`` in ``<file>.started``."""
    with open(Path(os.environ["AZJOBS_TEST_DIR"]) / f"{file}.started", "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {time.time():.6f} {key}\n")


@azjobs.job(queue=QUEUE, name="lt.capped", concurrency=2)
def capped(key: str, seconds: float) -> None:
    started = time.time()
    time.sleep(seconds)
    _note("capped", key, started)


@azjobs.job(queue=QUEUE, name="lt.rated", rate_limit="5/s")
def rated(key: str) -> None:
    _note("rated", key, time.time())


@azjobs.job(queue=QUEUE, name="lt.per_customer", concurrency=1, limit_key="customer")
def per_customer(customer: str, key: str, seconds: float) -> None:
    started = time.time()
    time.sleep(seconds)
    _note(f"customer-{customer}", key, started)


@azjobs.job(queue=QUEUE, name="lt.held", limit="lt-shared")
def held(key: str, seconds: float) -> None:
    started = time.time()
    _started("held", key)
    time.sleep(seconds)
    _note("held", key, started)


@azjobs.job(queue=QUEUE, name="lt.held_long", limit="lt-shared")
def held_long(key: str, seconds: float) -> None:
    """Shares "lt-shared" with ``held``: the limit counts both jobs' runs."""
    held(key, seconds)


@azjobs.job(queue=QUEUE, name="lt.pause")
def pause(file: str, key: str, seconds: float) -> None:
    """No limit: notes its start, then sleeps (the weighted-queue test)."""
    started = time.time()
    _started(file, key)
    time.sleep(seconds)
    _note(file, key, started)
