"""Workflow history kept durably in Table Storage, in the Durable extension's own event format.

One table (default ``azjobsworkflows``); a workflow is a partition (its id) and each
orchestrator episode one row, ``RowKey`` = the episode's sequence number (zero-padded).
An episode row is written with an insert (``create_entity``), so it commits atomically
and only once: two workers that replay the same workflow at the same time cannot both
append episode N; the loser reloads and replays again. A row holds the episode's
history events as JSON (split over ``d0``, ``d1``, ... since a string property holds at most
64 KiB of UTF-16: 32K characters of plain text, fewer with emoji; see azjobs/table_rules.py),
which incoming events it consumed (``sources``: so a redelivered
completion or start is recognised), whether the messages it asked for were sent
(``sent``) and the workflow's status after it (``status``).

``flow.enqueue()`` first writes the workflow's ``pending`` row (RowKey ``pending``: the queue
and the time it was enqueued; the worker adds its status, start and finish times: the row
``azjobs workflow list`` reads), then sends its start message, so an id that has neither rows
nor a ``pending`` row was never enqueued (``WorkflowNotFoundError``) rather than "not started
yet". A workflow id is a PartitionKey: it may not hold ``/ \\ # ?`` or control characters and is
at most 1 KiB (``id_problem``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..model.secrets import describe, get_logger
from ..storage.table_rules import MAX_ENTITY_BYTES, SAFE_STRING_UNITS, key_problem, utf16_units

log = get_logger("azjobs.workflows")

DEFAULT_TABLE = "azjobsworkflows"
TABLE_SETTING = "AZJOBS_WORKFLOWS_TABLE"
# One ``d<i>`` property: at most this many UTF-16 units (Azure's unit; an emoji takes two).
CHUNK_UNITS = SAFE_STRING_UNITS
# Parts per row: the row stays under the service's 1 MiB entity limit (a string costs 2 bytes a UTF-16
# unit, plus a few bytes per property), with 64 KiB left for the keys and the other properties.
MAX_PARTS = (MAX_ENTITY_BYTES - 64 * 1024) // (2 * CHUNK_UNITS + 64)  # 15: 480,000 units of history

# History event types (DurableTask HistoryEventType).
EXECUTION_STARTED = 0
EXECUTION_COMPLETED = 1
TASK_SCHEDULED = 4
TASK_COMPLETED = 5
TASK_FAILED = 6
TIMER_CREATED = 10
TIMER_FIRED = 11
ORCHESTRATOR_STARTED = 12
ORCHESTRATOR_COMPLETED = 13

RUNNING, COMPLETED, FAILED = "Running", "Completed", "Failed"
TERMINATED = "Terminated"  # cancelled (handle.cancel(), azjobs cancel ID): as Durable's terminate
ENDED = (COMPLETED, FAILED, TERMINATED)
TERMINATED_ROW = "terminated"  # the RowKey of the marker a cancel writes first: steps read it before they run
PENDING = "Pending"  # enqueued, not started by a worker yet
PENDING_ROW = "pending"  # the RowKey of the row flow.enqueue() writes (episode rows are digits)


# A step's value that says it never ran and never will (its job is not registered where it was sent, or its
# stored arguments no longer fit the job): its workflow fails at once, whatever attempts the step has left.
# It travels as the step's value because that is the one thing a Durable activity can return without being
# retried. Reserved: a job that returns an object whose only key is this one fails that attempt instead.
CANNOT_RUN = "azjobs_step_cannot_run"
CANNOT_RUN_REASONS = ("unknown_job", "bad_arguments")


def cannot_run(reason: str, error_type: str, message: str) -> dict[str, Any]:
    """The value a step reports when it can never run (``reason``: ``unknown_job`` or ``bad_arguments``)."""
    return {CANNOT_RUN: {"reason": reason, "type": error_type, "message": message}}


def cannot_run_of(value: Any) -> dict[str, Any] | None:
    """The ``{"reason", "type", "message"}`` of a step value made by ``cannot_run``; None for any other value."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(CANNOT_RUN), dict):
        return value[CANNOT_RUN]
    return None


def cannot_run_error(step: dict[str, Any], why: dict[str, Any]) -> str:
    """The workflow's error for a step that cannot run: ``<type>: step <path> (<job>) cannot run: <message>``."""
    return f"{why.get('type')}: step {step.get('path')} ({step.get('job')}) cannot run: {why.get('message')}"


def table_name(name: str | None = None) -> str:
    return name or os.environ.get(TABLE_SETTING) or DEFAULT_TABLE


def id_problem(workflow_id: object) -> str | None:
    """Why ``workflow_id`` can be no workflow's id (it keys the history table's partition); None when it can."""
    return key_problem(workflow_id)


class HistoryTooLarge(Exception):
    """One episode's events do not fit in a table row."""


# 4xx answers that mean something else (credentials, a missing table, a lost race, throttling) or may pass:
# every other 4xx (400 PropertyValueTooLarge, EntityTooLarge, InvalidInput, 413 ...) refuses the data for good.
_NOT_PERMANENT = (401, 403, 404, 408, 409, 412, 429)


def refused_for_good(exc: BaseException) -> bool:
    """True when Table Storage refused a write for good: the same write can never succeed."""
    code = getattr(exc, "status_code", None)
    return isinstance(code, int) and 400 <= code < 500 and code not in _NOT_PERMANENT


def table_answer(exc: BaseException) -> str:
    """Table Storage's answer in one line: ``400 PropertyValueTooLarge: The property value exceeds ...``."""
    code, message = getattr(exc, "error_code", None), ""
    text = str(exc)
    start = text.find('{"odata.error"')
    if start >= 0:
        try:
            detail = json.JSONDecoder().raw_decode(text[start:])[0]["odata.error"]
            code = code or detail.get("code")
            message = (detail.get("message") or {}).get("value") or ""
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    first = message.strip().splitlines()[0] if message.strip() else ""
    answer = f"{getattr(exc, 'status_code', '')} {code or getattr(exc, 'reason', '') or type(exc).__name__}".strip()
    return f"{answer}: {first}" if first else answer


@dataclass
class Episode:
    seq: int
    events: list[dict[str, Any]]
    sources: list[str]
    sent: bool
    status: str


@dataclass
class History:
    workflow_id: str
    episodes: list[Episode] = field(default_factory=list)
    enqueued: bool = False  # flow.enqueue() wrote its pending row
    enqueued_at: Any = None  # when (the pending row's enqueued_at)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for episode in self.episodes for event in episode.events]

    @property
    def sources(self) -> set[str]:
        return {key for episode in self.episodes for key in episode.sources}

    @property
    def next_seq(self) -> int:
        return self.episodes[-1].seq + 1 if self.episodes else 0

    @property
    def status(self) -> str | None:
        return self.episodes[-1].status if self.episodes else None

    def episode_of(self, source: str) -> Episode | None:
        for episode in self.episodes:
            if source in episode.sources:
                return episode
        return None


class HistoryStore:
    """Reads and appends workflow histories in one table of the account."""

    def __init__(self, table_service: Any, table: str | None = None) -> None:
        self.service = table_service
        self.table = table_name(table)
        self._client = None
        self._ready = False

    @classmethod
    def for_client(cls, client: Any, table: str | None = None) -> "HistoryStore":
        """The history table of ``client``'s account; a test double's own store (``azjobs.testing``'s inline
        client keeps histories in memory) when it carries one as ``workflow_history``."""
        own = getattr(client, "workflow_history", None)
        if isinstance(own, cls):
            return own
        return cls(client.connection.table_service(), table)

    @property
    def client(self):
        if self._client is None:
            self._client = self.service.get_table_client(self.table)
        return self._client

    def ensure(self) -> None:
        if not self._ready:
            self.service.create_table_if_not_exists(self.table)
            self._ready = True

    def load(self, workflow_id: str) -> History:
        from azure.core.exceptions import ResourceNotFoundError

        history = History(workflow_id)
        try:
            rows = self.client.query_entities("PartitionKey eq @pk", parameters={"pk": workflow_id})
            for row in sorted(rows, key=lambda r: r["RowKey"]):
                if not row["RowKey"].isdigit():
                    if row["RowKey"] == PENDING_ROW and row.get("enqueued_at") is not None:
                        history.enqueued, history.enqueued_at = True, row.get("enqueued_at")
                    continue
                parts = int(row.get("parts", 1))
                text = "".join(row.get(f"d{i}", "") for i in range(parts))
                history.episodes.append(Episode(seq=int(row["RowKey"]), events=json.loads(text),
                                                sources=json.loads(row.get("sources", "[]")),
                                                sent=bool(row.get("sent", False)), status=row.get("status", RUNNING)))
        except ResourceNotFoundError:
            pass  # no table yet: no workflow has run
        return history

    def commit(self, workflow_id: str, episode: Episode) -> bool:
        """Insert the episode row; False when another worker committed that episode first."""
        from azure.core.exceptions import ResourceExistsError

        text = json.dumps(episode.events, separators=(",", ":"), ensure_ascii=False)
        chunks = split_units(text, CHUNK_UNITS)
        if len(chunks) > MAX_PARTS:
            # Said once, without the workflow id: the failure it becomes names the workflow.
            raise HistoryTooLarge(f"episode {episode.seq} of its history is {utf16_units(text):,} UTF-16 units, more "
                                  f"than one table row holds ({MAX_PARTS * CHUNK_UNITS:,}); pass references (a blob "
                                  "name, a row id) as step arguments and results, not large values")
        entity = {"PartitionKey": workflow_id, "RowKey": f"{episode.seq:08d}", "parts": len(chunks),
                  "sources": json.dumps(episode.sources), "sent": episode.sent, "status": episode.status}
        for i, chunk in enumerate(chunks):
            entity[f"d{i}"] = chunk
        self.ensure()
        try:
            self.client.create_entity(entity)
        except ResourceExistsError:
            return False
        if episode.seq == 0 or episode.status != RUNNING:
            self._list(workflow_id, episode)
        return True

    def _list(self, workflow_id: str, episode: Episode) -> None:
        """Keep the workflow's listing row (its ``pending`` row: ``azjobs workflow list``) up to date: status,
        started and finished times. Best effort: the committed history is what counts."""
        from azure.data.tables import UpdateMode

        moment = datetime.now(timezone.utc)
        entity: dict[str, Any] = {"PartitionKey": workflow_id, "RowKey": PENDING_ROW, "status": episode.status}
        if episode.seq == 0:
            entity["started_at"] = moment
        if episode.status != RUNNING:
            entity["finished_at"] = moment
        try:
            self.client.upsert_entity(entity, mode=UpdateMode.MERGE)
        except Exception as exc:
            log.warning("workflow %s: its listing row was not updated (%s); `azjobs workflow list` may show it as it "
                        "was", workflow_id, describe(exc), extra={"action": "workflow_listing_stale",
                                                                  "workflow_id": workflow_id})

    def record_pending(self, workflow_id: str, queue: str, enqueued_at: Any) -> None:
        """The row that says the workflow was enqueued (written before its start message is sent)."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": workflow_id, "RowKey": PENDING_ROW, "queue": queue, "enqueued_at": enqueued_at}
        try:
            self.client.upsert_entity(entity, mode=UpdateMode.MERGE)
        except ResourceNotFoundError:  # the first workflow of this table
            self.service.create_table_if_not_exists(self.table)
            self._ready = True
            self.client.upsert_entity(entity, mode=UpdateMode.MERGE)

    def mark_terminated(self, workflow_id: str, reason: str) -> None:
        """The marker a step reads before it runs (one point read): its workflow was cancelled."""
        from azure.data.tables import UpdateMode

        self.ensure()
        self.client.upsert_entity({"PartitionKey": workflow_id, "RowKey": TERMINATED_ROW, "reason": reason},
                                  mode=UpdateMode.MERGE)

    def terminated(self, workflow_id: str) -> bool:
        """True when the workflow was cancelled (its marker row is there)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.client.get_entity(workflow_id, TERMINATED_ROW)
        except ResourceNotFoundError:  # no such row (or no table yet)
            return False
        return True

    def mark_sent(self, workflow_id: str, seq: int) -> None:
        from azure.data.tables import UpdateMode

        self.client.upsert_entity({"PartitionKey": workflow_id, "RowKey": f"{seq:08d}", "sent": True},
                                  mode=UpdateMode.MERGE)


def split_units(text: str, units: int) -> list[str]:
    """``text`` in pieces of at most ``units`` UTF-16 units each (never splitting a character); [""] for ""."""
    if units < 2:
        raise ValueError(f"a piece must hold at least 2 UTF-16 units (one character), not {units}")
    chunks = []
    start = 0
    while start < len(text):
        end = min(len(text), start + units)  # a character is at least one unit
        size = utf16_units(text[start:end])
        while size > units:  # each character dropped from the end gives back one or two units
            end -= max(1, (size - units) // 2)
            size = utf16_units(text[start:end])
        chunks.append(text[start:end])
        start = end
    return chunks or [""]


def summary(history: History) -> dict[str, Any]:
    """What ``azjobs workflow status`` and ``handle.status()`` show: steps, results, output or error."""
    scheduled: dict[int, dict[str, Any]] = {}
    done: dict[int, Any] = {}
    failed: dict[int, dict[str, Any]] = {}
    output: Any = None
    error: str | None = None
    timers = 0
    created = finished = None
    for event in history.events:
        kind = event.get("EventType")
        created = created or event.get("Timestamp")
        if kind == TASK_SCHEDULED:
            call = json.loads(event.get("Input") or "null") or {}
            if isinstance(call, dict) and "failure" in call:
                continue  # the failed workflow's poison-record activity, not a step
            scheduled[event["EventId"]] = call
        elif kind == TASK_COMPLETED:
            done[event["TaskScheduledId"]] = json.loads(event.get("Result") or "null")
        elif kind == TASK_FAILED:
            failed[event["TaskScheduledId"]] = {"reason": event.get("Reason"), "details": event.get("Details")}
        elif kind == TIMER_CREATED:
            timers += 1
        elif kind == EXECUTION_COMPLETED:
            finished = event.get("Timestamp")
            if event.get("OrchestrationStatus") == COMPLETED:
                output = json.loads(event.get("Result") or "null")
            else:
                error = event.get("Reason")

    status = history.status or (PENDING if history.enqueued else "Unknown")

    # A step is a path in the spec; each retry of it is another scheduled task of the same path (an attempt).
    attempts: dict[Any, list[int]] = {}
    for task_id in sorted(scheduled):
        attempts.setdefault(scheduled[task_id].get("path") or f"task {task_id}", []).append(task_id)

    def step(path: Any, task_ids: list[int]) -> dict[str, Any]:
        task_id = task_ids[-1]  # the last attempt says how the step stands
        call = scheduled[task_id]
        entry = {"task": task_id, "job": call.get("job"), "step": call.get("path"), "attempts": len(task_ids)}
        why = cannot_run_of(done.get(task_id))
        if why is not None:
            entry.update(state="failed", error=cannot_run_error({"path": entry["step"], "job": entry["job"]}, why))
        elif task_id in done:
            entry.update(state="done", result=done[task_id])
        elif task_id in failed:
            # Still running, the workflow waits to try it again; a step out of attempts has failed it.
            entry.update(state="retrying" if status == RUNNING else "failed", error=failed[task_id]["reason"])
        else:
            entry.update(state="running")
        return entry

    steps = [step(path, task_ids) for path, task_ids in attempts.items()]
    # A failed attempt is answered with a timer in the episode that received it (the retry wait, created even
    # when no attempt is left); every other timer is an azjobs.sleep.
    retry_waits = 0
    for episode in history.episodes:
        kinds = [event.get("EventType") for event in episode.events]
        retry_waits += min(kinds.count(TASK_FAILED), kinds.count(TIMER_CREATED))
    return {
        "id": history.workflow_id,
        "status": status,
        "created_at": _iso(created or history.enqueued_at),
        "finished_at": _iso(finished),
        "steps": steps,
        "done": sum(1 for s in steps if s["state"] == "done"),
        "running": sum(1 for s in steps if s["state"] in ("running", "retrying")),
        "failed": sum(1 for s in steps if s["state"] == "failed"),
        "attempts": sum(s["attempts"] for s in steps),
        "sleeps": timers - retry_waits,
        "retry_waits": retry_waits,
        "timers": timers,
        "history_length": len(history.events),
        "output": output,
        "error": error,
    }


def _iso(moment: Any) -> str | None:
    """An event's ``Timestamp`` (``2026-01-01T00:00:00.000000Z``) or a datetime, as ISO 8601 UTC with a Z."""
    if moment is None or moment == "":
        return None
    if isinstance(moment, datetime):
        return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = str(moment)
    try:
        return _iso(datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=timezone.utc))
    except ValueError:
        return text


def find(store: HistoryStore, workflow_id: str) -> dict[str, Any] | None:
    """The ``summary`` of a workflow in ``store`` (``Pending`` when enqueued but not started); None when it was
    never enqueued there (or its id can be no workflow's: then no call is made). Storage errors propagate.
    Used by ``azjobs workflow status``, ``WorkflowHandle.status()`` and the dashboard."""
    if id_problem(workflow_id) is not None:
        return None
    history = store.load(workflow_id)
    if not history.episodes and not history.enqueued:
        return None
    return summary(history)


__all__ = ["CANNOT_RUN", "DEFAULT_TABLE", "PENDING", "Episode", "History", "HistoryStore", "HistoryTooLarge",
           "cannot_run", "cannot_run_error", "cannot_run_of", "find", "id_problem", "refused_for_good", "split_units",
           "summary", "table_answer", "table_name"]
