"""The side channel: jobs of every framework append one line per run to a shared file.

Each line is ``TAG START END PID`` (wall-clock seconds, and the process that ran the job).
The tag names the job (``n17`` is no-op job 17), so a job that runs twice writes two lines
with one tag: the harness counts *distinct* tags to know when a drain is done and what its
throughput is, and the lines beyond them as duplicate runs. Appends of one short line with
``O_APPEND`` are atomic, so threads and forked children can share the file.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
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
    pid = os.getpid()
    line = f"{tag} {start:.6f} {end:.6f} {pid}\n".encode()
    with _lock:
        if _fd is None or _fd_pid != pid:
            _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            _fd_pid = pid
        os.write(_fd, line)


@dataclass(frozen=True)
class Entry:
    tag: str
    start: float
    end: float
    pid: int = 0


def _parse(line: bytes) -> Entry | None:
    parts = line.split()
    if len(parts) not in (3, 4):
        return None
    return Entry(parts[0].decode(), float(parts[1]), float(parts[2]), int(parts[3]) if len(parts) == 4 else 0)


def read(path: str) -> list[Entry]:
    """Every complete line written so far, duplicates included."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    entries = []
    for line in data.split(b"\n"):
        entry = _parse(line)
        if entry is not None:
            entries.append(entry)
    return entries


class Reader:
    """Follows a side-channel file incrementally (reads only what was appended since the last poll).

    ``distinct`` is the number of different jobs that ran, ``runs`` the number of lines;
    ``runs - distinct`` is the duplicate runs. Cheap enough to poll every 25 ms while a
    worker is being measured on the same cores.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: list[Entry] = []
        self.counts: Counter[str] = Counter()
        self._offset = 0
        self._partial = b""

    def poll(self) -> int:
        """Read new lines; the number of distinct jobs seen so far."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return len(self.counts)
        if data:
            self._offset += len(data)
            data = self._partial + data
            lines = data.split(b"\n")
            self._partial = lines.pop()  # b"" when the data ended with a newline
            for line in lines:
                entry = _parse(line)
                if entry is not None:
                    self.entries.append(entry)
                    self.counts[entry.tag] += 1
        return len(self.counts)

    @property
    def distinct(self) -> int:
        return len(self.counts)

    @property
    def runs(self) -> int:
        return len(self.entries)

    @property
    def duplicates(self) -> int:
        return self.runs - self.distinct

    def first_runs(self) -> list[Entry]:
        """Each job's first run only (the one that counts)."""
        seen: set[str] = set()
        out = []
        for entry in sorted(self.entries, key=lambda e: e.start):
            if entry.tag not in seen:
                seen.add(entry.tag)
                out.append(entry)
        return out

    def wait_for(self, expected: int, timeout: float, poll_s: float = 0.05, alive=None) -> int:
        """Wait until ``expected`` distinct jobs ran (or the timeout / ``alive()`` turning False)."""
        deadline = time.monotonic() + timeout
        seen = self.poll()
        while seen < expected and time.monotonic() < deadline:
            if alive is not None and not alive():
                break
            time.sleep(poll_s)
            seen = self.poll()
        return seen
