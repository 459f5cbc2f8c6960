"""Reading job state: one record, recent records, and what ``prune`` may delete (a ``StateStore`` mixin)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from ..model.secrets import describe, get_logger
from .entities import (_FINISHED_VALUES, PARTITION_PREFIX, UNIQUE_PREFIX, JobError, _aware, _is, _loads, _updated,
                        id_problem)
from .record import ARGUMENTS_NOT_KEPT, FINISHED, JobRecord, JobStatus

log = get_logger("azjobs.state")


@dataclass(frozen=True)
class Prunable:
    """One entity ``prune`` deletes: a job record (``name`` the job, ``detail`` its status) or a unique key
    (``name`` the key's text, ``detail`` the job that held it)."""

    kind: str  # "record" or "unique"
    partition: str
    row: str
    name: str
    detail: str
    updated_at: datetime
    blob: str = ""


class Queries:
    """The reads of ``StateStore`` (a mixin: ``self`` is the store)."""

    # -- reading -------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        """The record of ``job_id``, or None if there is none (an id no key can hold has none: no call is made)."""
        if id_problem(job_id) is not None:
            return None
        entity = self._get(job_id)
        return None if entity is None else self.record(entity)

    def recent(self, *, since: datetime | None = None, limit: int = 100,
               status: JobStatus | None = None) -> list[JobRecord]:
        """Records changed since ``since`` (all kept ones without), last changed first, at most ``limit``.

        Table Storage has no index but the key: this scans the table (fine for a dashboard over
        a week's retention; a very busy app should keep ``since`` recent).
        """
        parts = ["PartitionKey ge @first", "PartitionKey lt @after"]
        parameters: dict[str, Any] = {"first": PARTITION_PREFIX, "after": PARTITION_PREFIX[:-1] + "."}
        if since is not None:
            parts.append("UpdatedAt ge @since")
            parameters["since"] = since.astimezone(timezone.utc)
        if status is not None:
            parts.append("Status eq @status")
            parameters["status"] = JobStatus(status).value
        try:
            entities = list(self._call("query_entities", " and ".join(parts), parameters=parameters))
        except Exception as exc:
            if _is(exc, 404):
                return []
            raise
        entities.sort(key=_updated, reverse=True)
        return [self.record(e) for e in entities[:max(0, limit)]]

    def prunable(self, older_than: timedelta | None = None, *, include_unfinished: bool = False) -> list[Prunable]:
        """What ``prune`` with the same arguments deletes, deleting nothing (``azjobs state prune --dry-run``).

        Job records past their retention (or not updated within ``older_than``) that are finished;
        with ``include_unfinished`` READY, RUNNING and RETRYING ones too. Unique keys only once they
        expired, and (unless ``include_unfinished``) only when their job is finished or has no record:
        a key that still holds a job off is never taken away.
        """
        now = self.clock()
        select = ["PartitionKey", "RowKey", "Status", "Job", "UpdatedAt", "ExpiresAt", "ReturnValueRef", "JobId",
                  "UniqueKey"]
        if older_than is None:
            query, parameters = "ExpiresAt lt @now", {"now": now}
        else:
            query, parameters = "UpdatedAt lt @cutoff", {"cutoff": now - older_than}
        try:
            entities = list(self._call("query_entities", query, parameters=parameters, select=select))
        except Exception as exc:
            if _is(exc, 404):
                return []
            raise
        found: list[Prunable] = []
        for entity in entities:
            partition = str(entity.get("PartitionKey", ""))
            if partition.startswith(UNIQUE_PREFIX):
                expires = _aware(entity.get("ExpiresAt"))
                if expires is None or expires > now:
                    continue  # still held (whatever --older-than says)
                holder = str(entity.get("JobId") or "")
                if not include_unfinished and holder:
                    status = self.status_of(holder)
                    if status is not None and status not in FINISHED:
                        continue  # its job is not finished
                found.append(Prunable("unique", partition, str(entity.get("RowKey")),
                                      str(entity.get("UniqueKey") or ""), holder, _updated(entity)))
            elif partition.startswith(PARTITION_PREFIX):
                status = str(entity.get("Status") or "")
                if not include_unfinished and status not in _FINISHED_VALUES:
                    continue
                found.append(Prunable("record", partition, str(entity.get("RowKey")), str(entity.get("Job") or ""),
                                      status, _updated(entity), str(entity.get("ReturnValueRef") or "")))
        return found

    def prune(self, older_than: timedelta | None = None, *, include_unfinished: bool = False) -> int:
        """Delete what ``prunable`` lists (and the records' return-value blobs); returns how many entities went."""
        return self.remove(self.prunable(older_than, include_unfinished=include_unfinished))

    def remove(self, items: Iterable[Prunable]) -> int:
        """Delete the entities ``prunable`` listed (and their return-value blobs); how many went."""
        removed = 0
        for item in items:
            try:
                self._call("delete_entity", item.partition, item.row)
                removed += 1
            except Exception as exc:
                if not _is(exc, 404):
                    raise
            if item.blob and self.payloads is not None:
                try:
                    self.payloads.delete(item.blob)
                except Exception as exc:
                    log.warning("could not delete return value blob %s: %s", item.blob, describe(exc),
                                extra={"action": "state_prune_blob_failed"})
        return removed

    def record(self, entity: Any) -> JobRecord:
        """A JobRecord from an entity (a large return value is read back from Blob Storage)."""
        value = _loads(entity.get("ReturnValue"), None)
        ref = entity.get("ReturnValueRef")
        if ref and self.payloads is not None:
            try:
                value = _loads(self.payloads.get(ref).decode("utf-8"), None)
            except Exception as exc:  # the record still says what happened; only the value is unreadable
                log.warning("return value of job %s unreadable at %s: %s", entity["RowKey"], ref, describe(exc),
                            extra={"action": "state_return_value_unreadable", "job_id": entity["RowKey"]})
        arguments = _loads(entity.get("Arguments"), {})
        try:
            status = JobStatus(entity.get("Status", "READY"))
        except ValueError:
            status = JobStatus.READY
        return JobRecord(
            id=entity["RowKey"], job=entity.get("Job", ""), queue=entity.get("Queue") or None,
            status=status, enqueued_at=_aware(entity.get("EnqueuedAt")), started_at=_aware(entity.get("StartedAt")),
            finished_at=_aware(entity.get("FinishedAt")),
            last_attempted_at=_aware(entity.get("LastAttemptedAt")), attempts=int(entity.get("Attempts") or 0),
            worker_ids=list(_loads(entity.get("WorkerIds"), [])), return_value=value,
            errors=[JobError.from_dict(e) for e in _loads(entity.get("Errors"), [])],
            args=list(arguments.get("args", [])) if isinstance(arguments, dict) else [],
            kwargs=dict(arguments.get("kwargs", {})) if isinstance(arguments, dict) else {},
            # Written empty when over a Table string property (enqueued()): say so, never show an empty call.
            arguments_note=ARGUMENTS_NOT_KEPT if entity.get("Arguments") == "" else "",
            cancel_requested=bool(entity.get("CancelRequested")),
        )

    def status_of(self, job_id: str) -> JobStatus | None:
        if id_problem(job_id) is not None:
            return None
        entity = self._get(job_id)
        if entity is None:
            return None
        try:
            return JobStatus(entity.get("Status"))
        except ValueError:
            return None
