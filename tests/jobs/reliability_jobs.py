"""Jobs for the reliability suite (``-i tests.jobs.reliability_jobs`` in ``azjobs`` subprocesses).

Every run leaves durable evidence in the ledger file named by ``$AZJOBS_RELIABILITY_LOG``:
one ``S key pid time`` line when the job starts and one ``F key pid time`` line when it
finishes, each written with a single ``write`` on an ``O_APPEND`` descriptor, so lines from
concurrent threads and processes never interleave and a ``kill -9`` loses none that were
written. A test reads the ledger to count what ran at least once, twice, or never.
"""

from __future__ import annotations

import os
import time

import azjobs

QUEUE = "reliability-tests"  # the declared queue; tests always override it per call
LEDGER_ENV = "AZJOBS_RELIABILITY_LOG"


def note(kind: str, key: str) -> None:
    """Append one ledger line (``kind`` is ``S`` for start, ``F`` for finish)."""
    line = f"{kind} {key} {os.getpid()} {time.time():.3f}\n".encode("utf-8")
    fd = os.open(os.environ[LEDGER_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@azjobs.job(queue=QUEUE, name="rel.work")
def work(key: str, seconds: float = 0.0) -> None:
    """Note the start, sleep ``seconds`` (the job's work), note the finish."""
    note("S", key)
    if seconds > 0:
        time.sleep(seconds)
    note("F", key)
