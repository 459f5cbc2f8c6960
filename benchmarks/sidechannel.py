"""The side channel: jobs of every framework append one line per run to a shared file.

Each line is ``TAG START END`` (wall-clock seconds). The harness counts lines to know when
a drain is done and reads the times for latency. Appends of one short line with
``O_APPEND`` are atomic, so threads and forked children can share the file.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

ENV = "AZJOBS_BENCH_SIDE"

_lock = threading.Lock()
_fd: int | None = None
_fd_pid: int | None = None


def record(tag: str, start: float, end: float) -> None:
    """Append one completion line (a no-op when the env var is not set)."""
    global _fd, _fd_pid
    path = os.environ.get(ENV)
    if not path:
        return
    line = f"{tag} {start:.6f} {end:.6f}\n".encode()
    with _lock:
        if _fd is None or _fd_pid != os.getpid():
            _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            _fd_pid = os.getpid()
        os.write(_fd, line)


@dataclass(frozen=True)
class Entry:
    tag: str
    start: float
    end: float


def read(path: str) -> list[Entry]:
    """Every complete line written so far."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    entries = []
    for line in data.split(b"\n"):
        parts = line.split()
        if len(parts) == 3:
            entries.append(Entry(parts[0].decode(), float(parts[1]), float(parts[2])))
    return entries


def count(path: str) -> int:
    """Lines written so far (cheap enough to poll every few tens of milliseconds)."""
    try:
        with open(path, "rb") as handle:
            return handle.read().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for(path: str, expected: int, timeout: float, poll_s: float = 0.05, alive=None) -> int:
    """Wait until ``expected`` lines exist (or the timeout / ``alive()`` turning False); the count."""
    deadline = time.monotonic() + timeout
    seen = count(path)
    while seen < expected and time.monotonic() < deadline:
        if alive is not None and not alive():
            break
        time.sleep(poll_s)
        seen = count(path)
    return seen
