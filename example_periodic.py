"""Periodic jobs for the demo: a heartbeat every 2 seconds, and a weekday report declared with azjobs.periodic."""

from __future__ import annotations

import azjobs


@azjobs.job(queue="reports", schedule="*/2 * * * * *")
def heartbeat() -> None:
    """Fired by the worker's scheduler (or a generated timer trigger on Functions) at every tick."""
    job = azjobs.current_job()
    print(f"[heartbeat] tick {job.scheduled_at}{' (past due)' if job.past_due else ''}", flush=True)


@azjobs.job(queue="reports")
def daily_report(region: str) -> None:
    print(f"[daily_report] report for {region}", flush=True)


# The same job on its own schedule with its own arguments: 7:00 on weekdays (UTC unless WEBSITE_TIME_ZONE).
azjobs.periodic("0 0 7 * * Mon-Fri", daily_report, args=("eu",), name="daily-report-eu")
