"""What ``azjobs limits`` shows: each limit, who holds its slots now, its recent starts and throttles.

Reads only: one range query per limit for its slots (every key), one for its rate windows, and one
for the processes' counts rows (``azjobs.limits.tally``). Nothing is written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from ..model.definition import JobDefinition
from ..model.limits import Limit, shared_limits
from .slots import live_rows
from .table import LimitTable, counts_partition, digest, prefix_filter
from .tally import minute_of, recent_counts
from .tokens import recent_starts


def declared(definitions: Iterable[JobDefinition]) -> tuple[list[tuple[Limit, list[str]]], list[str]]:
    """The limits the given jobs use (and every shared one declared), each with its jobs; and the problems
    (a job naming a shared limit nobody declared)."""
    found: dict[tuple[bool, str], tuple[Limit, list[str]]] = {
        (True, item.name): (item, []) for item in shared_limits()}
    problems: list[str] = []
    for definition in definitions:
        if definition.limits is None:
            continue
        try:
            limits = definition.limits.resolve()
        except Exception as exc:  # an undeclared shared limit: said, the rest still shown
            problems.append(f"job {definition.name}: {exc}")
            limits = [definition.limits.own] if definition.limits.own is not None else []
        for item in limits:
            found.setdefault((item.shared, item.name), (item, []))[1].append(definition.name)
    return sorted(found.values(), key=lambda pair: (not pair[0].shared, pair[0].name)), problems


def read(table: LimitTable, limit: Limit, jobs: list[str], now: datetime, since_minutes: int = 5) -> dict[str, Any]:
    """One limit's numbers now (for ``--json`` as they are; the text form prints them)."""
    row: dict[str, Any] = {"limit": limit.name, "shared": limit.shared, "jobs": sorted(jobs),
                           "concurrency": limit.concurrency, "rate_limit": str(limit.rate) if limit.rate else None,
                           "lease_s": limit.lease_s}
    if limit.concurrency is not None:
        query, params = prefix_filter(f"c-{digest(limit.name)}-")
        live = live_rows(table.query(query, params), now)
        per_key: dict[str, int] = {}
        for entity in live:
            per_key[entity.get("Key", "")] = per_key.get(entity.get("Key", ""), 0) + 1
        row["holding"] = len(live)
        row["keys_holding"] = len(per_key)
        row["busiest_key_holding"] = max(per_key.values(), default=0)
        row["holders"] = sorted(({"key": entity.get("Key", ""), "job": entity.get("Job"), "job_id": entity.get("JobId"),
                                  "holder": entity.get("Holder"), "queue": entity.get("Queue"),
                                  "since": _iso(entity.get("AcquiredAt")),
                                  "lease_until": _iso(entity.get("LeaseUntil"))} for entity in live),
                                key=lambda holder: (holder["key"], holder["since"] or ""))
    if limit.rate is not None:
        query, params = prefix_filter(f"r-{digest(limit.name)}-")
        counted = {entity.get("Key", ""): recent_starts(limit, entity, now) for entity in table.query(query, params)}
        row["window_s"] = limit.rate.window_s
        row["window_starts"] = sum(counted.values())
        row["busiest_key_window_starts"] = max(counted.values(), default=0)
    since = minute_of(now) - since_minutes + 1
    started = throttled = 0
    for entity in table.query("PartitionKey eq @pk", {"pk": counts_partition(limit.name)}):
        more_started, more_throttled = recent_counts(entity, since)
        started, throttled = started + more_started, throttled + more_throttled
    row["recent_minutes"] = since_minutes
    row["recent_started"], row["recent_throttled"] = started, throttled
    return row


def throttled_by_queue(table: LimitTable, now: datetime, since_minutes: int) -> dict[str, int]:
    """Throttled deliveries per queue over every limit in the last ``since_minutes`` (``azjobs stats``)."""
    since = minute_of(now) - since_minutes + 1
    totals: dict[str, int] = {}
    for entity in table.query("PartitionKey ge @lo and PartitionKey lt @hi", {"lo": "n-", "hi": "n."}):
        _, throttled = recent_counts(entity, since)
        queue = entity.get("Queue") or ""
        totals[queue] = totals.get(queue, 0) + throttled
    return totals


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if isinstance(moment, datetime) else None


__all__ = ["declared", "read", "throttled_by_queue"]
