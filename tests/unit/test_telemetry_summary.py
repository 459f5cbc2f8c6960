"""The worker's periodic summary line (--stats-interval): what it counts and how it reads."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from azjobs import cli
from azjobs.telemetry.summary import Summary
from azjobs.runtime.worker import WorkerStats


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_line_counts_what_happened_since_the_last_one(caplog):
    stats, clock = WorkerStats(succeeded=5, retry_scheduled=1), Clock()
    state = {"running": 0, "in_flight": 0}
    summary = Summary(60, lambda: (dataclasses.replace(stats), state["running"], state["in_flight"]), clock=clock)
    summary.start()
    summary.stop()
    stats.succeeded, stats.retry_scheduled, stats.dead_lettered, stats.throttled = 125, 4, 1, 7
    state.update(running=4, in_flight=12)
    clock.now += 60
    with caplog.at_level(logging.INFO, logger="azjobs.worker"):
        fields = summary.log_once()
    (record,) = [r for r in caplog.records if getattr(r, "action", None) == "worker_summary"]
    assert record.getMessage() == ("worker summary (last 60s): 120 succeeded, 3 retries scheduled, 1 dead-lettered, "
                                   "0 skipped, 0 cancelled, 7 throttled, 0 released for redelivery; 2.2 jobs/s; 4 running, "
                                   "12 in flight")
    assert (fields["succeeded"], fields["retry_scheduled"], fields["dead_lettered"], fields["throttled"],
            fields["jobs_per_s"]) == (120, 3, 1, 7, 2.183)
    assert (record.running, record.in_flight, record.window_s) == (4, 12, 60.0)
    clock.now += 30
    assert summary.log_once()["succeeded"] == 0  # nothing new since the last line


def test_the_flag_is_off_by_default_and_takes_seconds():
    parser = cli.build_parser()
    assert parser.parse_args(["-q", "emails"]).stats_interval == 0
    assert parser.parse_args(["-q", "emails", "--stats-interval", "30"]).stats_interval == 30.0
    with pytest.raises(SystemExit):
        parser.parse_args(["-q", "emails", "--stats-interval", "-1"])
    with pytest.raises(ValueError):
        Summary(0, lambda: (WorkerStats(), 0, 0))
