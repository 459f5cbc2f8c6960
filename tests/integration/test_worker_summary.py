"""The worker's --stats-interval summary line, from a real worker run against Azurite."""

from __future__ import annotations

import logging
from datetime import timedelta

from azjobs import QueueSettings
from azjobs.runtime.worker import Worker
from tests.jobs import worker_jobs as wj

FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.5))


def test_worker_logs_a_summary_line_per_interval_while_it_runs(client, queue_name, raw_queue, test_dir, caplog):
    wj.slow.options(queue=queue_name).enqueue("k", 1.0)
    wj.record.options(queue=queue_name).enqueue_many([("a",), ("b",)]).raise_for_failures()
    raw_queue(queue_name)
    with caplog.at_level(logging.INFO, logger="azjobs.worker"):
        stats = Worker([queue_name], client=client, settings=FAST, burst=True, stats_interval=0.25).run()
    assert stats.succeeded == 3
    lines = [r for r in caplog.records if getattr(r, "action", None) == "worker_summary"]
    assert len(lines) >= 2
    assert any(r.running == 1 for r in lines)  # the slow job was running while a line was written
    assert sum(r.succeeded for r in lines) <= 3 and all(r.getMessage().startswith("worker summary (last ")
                                                       for r in lines)
    assert not [r for r in caplog.records if getattr(r, "action", None) == "worker_summary_failed"]


def test_no_summary_without_the_interval(client, queue_name, raw_queue, test_dir, caplog):
    wj.slow.options(queue=queue_name).enqueue("k", 0.6)
    raw_queue(queue_name)
    with caplog.at_level(logging.INFO, logger="azjobs.worker"):
        Worker([queue_name], client=client, settings=FAST, burst=True).run()
    assert not [r for r in caplog.records if getattr(r, "action", None) == "worker_summary"]
