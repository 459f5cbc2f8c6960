"""Job counters and histograms through the OpenTelemetry metrics API (meter ``azjobs``).

| instrument | kind | unit | counts |
|---|---|---|---|
| ``azjobs.jobs.started`` | counter | ``{job}`` | job runs started (a retry is a new run) |
| ``azjobs.jobs.succeeded`` | counter | ``{job}`` | runs that returned |
| ``azjobs.jobs.retried`` | counter | ``{job}`` | retry copies written (a failed run with retries left, or an unknown job) |
| ``azjobs.jobs.dead_lettered`` | counter | ``{job}`` | poison records written (the job's, or an unusable message's) |
| ``azjobs.jobs.skipped`` | counter | ``{job}`` | redeliveries of a finished job, settled without running (duplicates) |
| ``azjobs.jobs.throttled`` | counter | ``{job}`` | deliveries a limit had no room for, sent on for later (no attempt used) |
| ``azjobs.jobs.cancelled`` | counter | ``{job}`` | cancelled jobs' deliveries settled without running, or runs whose result was discarded |
| ``azjobs.jobs.redelivered`` | counter | ``{job}`` | deliveries released for the host-style redelivery (storage failed, a timeout) |
| ``azjobs.job.duration`` | histogram | ``s`` | run time of each run, with ``azjobs.outcome`` |
| ``azjobs.job.queue_wait`` | histogram | ``s`` | enqueue to start: from ``enqueued_at`` (a retry: from its copy's write; a long delay: from ``due_at``) |

Every point carries ``messaging.destination.name`` (the queue) and ``azjobs.job.name`` when
the message names a job. The instruments come from the global meter provider (the API's
proxy forwards to a provider set later), created once on first use.
"""

from __future__ import annotations

import threading
from typing import Any

from ..version import __version__
from .otel import api

METER_NAME = "azjobs"

COUNTERS = {
    "started": ("azjobs.jobs.started", "job runs started"),
    "succeeded": ("azjobs.jobs.succeeded", "job runs that returned"),
    "retried": ("azjobs.jobs.retried", "retry copies written"),
    "dead_lettered": ("azjobs.jobs.dead_lettered", "poison records written"),
    "skipped": ("azjobs.jobs.skipped", "redeliveries of finished jobs settled without running (duplicates)"),
    "throttled": ("azjobs.jobs.throttled", "deliveries a limit had no room for, sent on for later"),
    "cancelled": ("azjobs.jobs.cancelled", "deliveries of cancelled jobs (not run, or their run's result discarded)"),
    "redelivered": ("azjobs.jobs.redelivered", "deliveries released for redelivery"),
}
DURATION = "azjobs.job.duration"
QUEUE_WAIT = "azjobs.job.queue_wait"

_lock = threading.Lock()
_instruments: dict[str, Any] | None = None


def instruments() -> dict[str, Any] | None:
    """The counters (by short name) and the two histograms, or None without OpenTelemetry."""
    global _instruments
    if _instruments is None:
        otel = api()
        if otel is None:
            return None
        with _lock:
            if _instruments is None:
                meter = otel.metrics.get_meter(METER_NAME, __version__)
                made: dict[str, Any] = {
                    short: meter.create_counter(name, unit="{job}", description=text)
                    for short, (name, text) in COUNTERS.items()
                }
                made["duration"] = meter.create_histogram(DURATION, unit="s", description="job run time")
                made["queue_wait"] = meter.create_histogram(
                    QUEUE_WAIT, unit="s", description="time from enqueue to the start of the run")
                _instruments = made
    return _instruments


def add(short: str, attributes: dict[str, Any]) -> None:
    made = instruments()
    if made is not None:
        made[short].add(1, attributes)


def observe(short: str, seconds: float, attributes: dict[str, Any]) -> None:
    made = instruments()
    if made is not None:
        made[short].record(max(0.0, seconds), attributes)


__all__ = ["COUNTERS", "DURATION", "METER_NAME", "QUEUE_WAIT", "add", "instruments", "observe"]
