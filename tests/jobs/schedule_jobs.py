"""A periodic job for the scheduler's tests, run by ``azjobs`` subprocesses (``-i tests.jobs.schedule_jobs``).

Its queue, schedule and name come from the environment, so each test has its own (the name is
also the schedule's lock and status blob). Each run appends ``<tick> <past_due> <job id> <pid>``
to ``$AZJOBS_TEST_DIR/ticks.runs``.
"""

from __future__ import annotations

import os
from pathlib import Path

import azjobs


@azjobs.job(queue=os.environ.get("AZJOBS_SCHEDULE_QUEUE", "schedule-tests"),
            schedule=os.environ.get("AZJOBS_SCHEDULE", "* * * * * *"),
            name=os.environ.get("AZJOBS_SCHEDULE_JOB", "schedule_tests.tick"))
def tick() -> None:
    job = azjobs.current_job()
    # scheduled_at is an aware datetime: written back in the wire form the tests compare with.
    tick_text = job.scheduled_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    line = f"{tick_text} {int(job.past_due)} {job.id} {os.getpid()}\n"
    with open(Path(os.environ["AZJOBS_TEST_DIR"]) / "ticks.runs", "a", encoding="utf-8") as fh:
        fh.write(line)
