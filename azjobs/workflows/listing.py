"""Recent workflows: ``azjobs workflow list`` and the dashboard's ``/workflows`` page.

Each workflow has one listing row in the history table, its ``pending`` row: ``flow.enqueue()``
writes it (the queue and ``enqueued_at``), and the worker adds the workflow's ``status``,
``started_at`` when its first episode commits and ``finished_at`` when it completes or fails
(``HistoryStore._list``). Listing reads those rows only (one query filtered on ``RowKey`` and
the time), never a workflow's history.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .history import COMPLETED, FAILED, PENDING, PENDING_ROW, RUNNING, HistoryStore, _iso

STATUSES = (PENDING, RUNNING, COMPLETED, FAILED)
DEFAULT_LIMIT = 100


def status_named(text: str) -> str:
    """``failed`` -> ``Failed``: a status in any case; ValueError naming the statuses for anything else."""
    for status in STATUSES:
        if status.lower() == (text or "").strip().lower():
            return status
    raise ValueError(f"{text!r} is not a workflow status: give one of {', '.join(STATUSES)}")


def recent(store: HistoryStore, *, since: datetime | None = None, status: str | None = None,
           limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """The workflows enqueued or started since ``since`` (all when None), newest first, at most ``limit``;
    only those in ``status`` when given. Each: id, status, queue, created_at, started_at, finished_at (ISO 8601
    UTC text or None). Storage errors propagate; a table that does not exist yet has no workflows."""
    from azure.core.exceptions import ResourceNotFoundError

    query = "RowKey eq @row"
    parameters: dict[str, Any] = {"row": PENDING_ROW}
    if since is not None:
        query += " and ( enqueued_at ge @since or started_at ge @since )"  # (the SDK reads @name up to a space)
        parameters["since"] = since.astimezone(timezone.utc)
    try:
        rows = list(store.client.query_entities(query, parameters=parameters))
    except ResourceNotFoundError:
        return []
    items = []
    for row in rows:
        item = {"id": row["PartitionKey"], "status": row.get("status") or PENDING, "queue": row.get("queue"),
                "created_at": _iso(row.get("enqueued_at") or row.get("started_at")),
                "started_at": _iso(row.get("started_at")), "finished_at": _iso(row.get("finished_at"))}
        if status is None or item["status"] == status:
            items.append(item)
    items.sort(key=lambda item: item["created_at"] or "", reverse=True)
    return items[:limit]


__all__ = ["DEFAULT_LIMIT", "STATUSES", "recent", "status_named"]
