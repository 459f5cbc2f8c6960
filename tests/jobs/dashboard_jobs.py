"""A job for the dashboard's browser tests, run in-process and by ``azjobs -i tests.jobs.dashboard_jobs`` workers.

``repaired(token)`` fails for good (``azjobs.Fail``: straight to the poison queue) until the
file ``$AZJOBS_TEST_DIR/repaired`` exists; then it succeeds and writes ``<token>.done``.
So a test can dead-letter it, "fix the bug", requeue it from the dashboard and watch a
worker run it. Tests enqueue with ``repaired.options(queue=<unique queue>)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import azjobs

QUEUE = "dashboard-tests"  # the declared queue; tests always override it per call


def _dir() -> Path:
    return Path(os.environ["AZJOBS_TEST_DIR"])


@azjobs.job(queue=QUEUE)
def repaired(token: str) -> str:
    if not (_dir() / "repaired").exists():
        raise azjobs.Fail(f"{token}: the bug is not fixed yet")
    (_dir() / f"{token}.done").write_text("ran\n", encoding="utf-8")
    return token
