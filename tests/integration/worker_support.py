"""Helpers for the runner's integration tests: subprocess workers, background workers, waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
JOBS = "tests.jobs.worker_jobs"


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout``; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def until(condition: Callable[[], object], timeout_s: float = 20.0, pause_s: float = 0.05):
    """Poll ``condition`` until it returns something true, and return that; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(pause_s)
    raise AssertionError(f"not reached within {timeout_s}s")


def spawn(connection_string: str, test_dir: Path, *args: str, name: str = "worker",
          env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -m azjobs -i tests.jobs.worker_jobs ARGS`` with its log in ``test_dir/<name>.log``."""
    env = dict(os.environ, AzureWebJobsStorage=connection_string, AZJOBS_TEST_DIR=str(test_dir),
               PYTHONPATH=str(ROOT), **(env_extra or {}))
    log = open(test_dir / f"{name}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "azjobs", "-i", JOBS, *args], cwd=test_dir, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def log_of(test_dir: Path, name: str = "worker") -> str:
    path = test_dir / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


class Background:
    """Run ``worker.run()`` on a thread; ``stop()`` asks it to stop and waits for the stats."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self.stats = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.stats = self.worker.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> "Background":
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0):
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error
        return self.stats

    def __enter__(self) -> "Background":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            self.worker.stop(force=True)
            self.thread.join(10)
