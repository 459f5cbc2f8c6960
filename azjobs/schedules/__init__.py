"""Periodic jobs: NCRONTAB schedules fired by generated timer triggers on Functions and by the worker.

- ``ncrontab``: the expression parser and its next/previous fire times (NCrontab's day rules, time zones);
- ``declarations``: declarations (``@azjobs.job(schedule=...)``, ``azjobs.periodic(...)``) and what a tick enqueues;
- ``ticks``: the blob lease and status that make several workers fire each tick once;
- ``scheduler``: the worker's scheduler thread;
- ``listing``: ``azjobs schedules``.
"""

from .declarations import Periodic, periodic, schedules, time_zone
from .ncrontab import Expression, ScheduleError, parse

__all__ = ["Expression", "Periodic", "ScheduleError", "parse", "periodic", "schedules", "time_zone"]
