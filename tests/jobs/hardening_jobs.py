"""Jobs for the worker-hardening tests (in-process workers; evidence in ``$AZJOBS_TEST_DIR``).

Each run appends ``<key>.started`` at its start and ``<key>.runs`` at its end, so a test
can count runs and see whether two overlapped.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import azjobs

QUEUE = "hardening-tests"  # tests override it per call
REGISTRY = azjobs.Registry()
HOOK_SECONDS = {"value": 0.0}
hooked: list = []


def _note(key: str, suffix: str) -> None:
    with open(Path(os.environ["AZJOBS_TEST_DIR"]) / f"{key}.{suffix}", "a", encoding="utf-8") as fh:
        fh.write(f"{time.time():.3f}\n")


def times(key: str, suffix: str) -> list[float]:
    path = Path(os.environ["AZJOBS_TEST_DIR"]) / f"{key}.{suffix}"
    return [float(line) for line in path.read_text().split()] if path.exists() else []


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="hard.exits", retry=azjobs.Fixed(0, max_retries=1))
def exits(key: str) -> None:
    _note(key, "started")
    sys.exit(7)


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="hard.work")
def work(key: str, seconds: float = 0.0, payload: str = "") -> int:
    _note(key, "started")
    time.sleep(seconds)
    _note(key, "runs")
    return len(payload)


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="hard.hang")
def hang(key: str, seconds: float) -> None:
    _note(key, "started")
    time.sleep(seconds)
    _note(key, "runs")


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="hard.async_hang")
async def async_hang(key: str, seconds: float) -> None:
    _note(key, "started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _note(key, "cancelled")
        raise
    _note(key, "runs")


def _slow_hook(record) -> None:
    hooked.append(record)
    time.sleep(HOOK_SECONDS["value"])


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="hard.fatal", retry=azjobs.NoRetry(), on_dead_letter=_slow_hook)
def fatal(key: str) -> None:
    _note(key, "started")
    raise azjobs.Fail(f"{key} cannot work")


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="hard.flaky_big", retry=azjobs.Fixed(0, max_retries=2))
def flaky_big(key: str, payload: str) -> int:
    _note(key, "started")
    if len(times(key, "started")) == 1:
        raise RuntimeError("first attempt fails")
    with open(Path(os.environ["AZJOBS_TEST_DIR"]) / f"{key}.payload", "w", encoding="utf-8") as fh:
        fh.write(payload)
    _note(key, "runs")
    return len(payload)
