"""Helpers for the reliability suite: worker subprocesses, the job ledger, queue counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from tests.integration.worker_support import wait_for as _wait_for
from tests.jobs.reliability_jobs import LEDGER_ENV

ROOT = Path(__file__).resolve().parents[2]
JOBS = "tests.jobs.reliability_jobs"


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (the reliability suites' longer default)."""
    return _wait_for(predicate, timeout=timeout, interval=interval)


def spawn(connection_string: str, test_dir: Path, *args: str, name: str = "worker") -> subprocess.Popen:
    """Start ``python -m azjobs -i tests.jobs.reliability_jobs --log-format json ARGS``.

    Its log (JSON lines) is appended to ``test_dir/<name>.log``; jobs write the ledger
    ``test_dir/ledger``.
    """
    env = dict(os.environ, AzureWebJobsStorage=connection_string, PYTHONPATH=str(ROOT))
    env[LEDGER_ENV] = str(ledger_path(test_dir))
    log = open(test_dir / f"{name}.log", "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "azjobs", "-i", JOBS, "--log-format", "json", *args],
                                cwd=test_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    finally:
        log.close()


def ledger_path(test_dir: Path) -> Path:
    return Path(test_dir) / "ledger"


def log_text(test_dir: Path, name: str = "worker") -> str:
    path = Path(test_dir) / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def log_events(test_dir: Path, name: str = "worker") -> list[dict[str, Any]]:
    """The JSON log lines of a worker (non-JSON lines, e.g. a traceback on stderr, are skipped)."""
    events = []
    for line in log_text(test_dir, name).splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    return events


def actions(test_dir: Path, name: str = "worker") -> list[str]:
    return [event["action"] for event in log_events(test_dir, name) if "action" in event]


@dataclass
class Ledger:
    """What the jobs wrote: per key, the (pid, time) of every start and every finish."""

    starts: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    finishes: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, test_dir: Path) -> "Ledger":
        ledger = cls()
        path = ledger_path(test_dir)
        if not path.exists():
            return ledger
        for line in path.read_text(encoding="utf-8").splitlines():
            kind, key, pid, moment = line.split()
            target = ledger.starts if kind == "S" else ledger.finishes
            target[key].append((int(pid), float(moment)))
        return ledger

    def finished(self, keys: Iterable[str]) -> int:
        return sum(1 for key in keys if self.finishes.get(key))

    def lost(self, keys: Iterable[str]) -> list[str]:
        """Keys with no finished run."""
        return [key for key in keys if not self.finishes.get(key)]

    def duplicates(self, keys: Iterable[str]) -> list[str]:
        """Keys that finished more than once."""
        return [key for key in keys if len(self.finishes.get(key, ())) > 1]

    def extra_runs(self, keys: Iterable[str]) -> int:
        return sum(max(0, len(self.finishes.get(key, ())) - 1) for key in keys)


def all_finished(test_dir: Path, keys: list[str]) -> Callable[[], bool]:
    return lambda: not Ledger.read(test_dir).lost(keys)


def message_count(queue_client: Any) -> int:
    """Approximate number of messages, visible or not."""
    return queue_client.get_queue_properties().approximate_message_count


def receive_all(queue_client: Any, visibility_timeout: int = 120) -> list[Any]:
    """Receive every visible message (hiding each for ``visibility_timeout``) in batches of 32."""
    received: list[Any] = []
    while True:
        page = list(next(queue_client.receive_messages(messages_per_page=32, max_messages=32,
                                                       visibility_timeout=visibility_timeout).by_page(), []))
        if not page:
            return received
        received.extend(page)


def stop(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM a worker and wait for its exit code."""
    process.terminate()
    return process.wait(timeout)


def report(suite: str, **figures: Any) -> None:
    """Print a suite's figures on one line (shown with ``pytest -s`` or in the junit output)."""
    print(f"[reliability] {suite}: " + ", ".join(f"{name}={value}" for name, value in figures.items()))


@dataclass
class Stopped:
    """What SIGTERM left behind: the exit, the ledger, and the messages visible again."""

    code: int
    exit_s: float
    ledger: Ledger
    started: set[str]
    unfinished: list[str]
    visible: list[Any]
    visible_keys: list[str]


def sigterm_and_collect(process: subprocess.Popen, test_dir: Path, queue_client: Any, timeout: float) -> Stopped:
    """SIGTERM ``process``, wait for its exit, then read the ledger and receive what is visible again."""
    import signal
    import time

    from azjobs import Envelope

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout)
    exit_s = time.monotonic() - signalled
    ledger = Ledger.read(test_dir)
    started = set(ledger.starts)
    visible = receive_all(queue_client, visibility_timeout=120)
    return Stopped(code, exit_s, ledger, started, [key for key in started if not ledger.finishes.get(key)], visible,
                   [Envelope.decode(message.content).args[0] for message in visible])
