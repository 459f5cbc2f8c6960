"""The store's cancel writes: ``StateStore.cancel`` and what a cancelled run writes (a mixin of the store).

Every write is conditional on the ETag the decision was read with, so a cancel that crosses a
start is decided by the table: either the cancel lands first (the start's conditional write
fails, the start reads CANCELLED and the message is deleted without running) or the start
does (the cancel reads RUNNING and asks the run to stop).

- A job not running (READY, RETRYING, or RUNNING under a lease that ran out: its worker
  stopped) becomes CANCELLED at once; no run of it can start after that write.
- A job running under a live lease gets ``CancelRequested``; its run learns of it through
  ``cancel_requests`` (one read per partition and ``PER_QUERY`` running jobs, every few
  seconds: ``azjobs.state.running``) and writes CANCELLED when it ends (``cancelled``). A cancel
  that crosses the run's success leaves SUCCESSFUL (the success write wins), one that crosses a
  failure with retries left ends CANCELLED (``StateStore.retrying``).
- A finished job (SUCCESSFUL, FAILED, DEAD_LETTERED, CANCELLED) is left as it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable

from .entities import START_TRIES, _FINISHED_VALUES, _aware, _is, _merge, id_problem, partition_of
from .errors import StateUnavailable
from .record import JobRecord, JobStatus

if TYPE_CHECKING:
    from ..model.envelope import Envelope

# RowKeys per query: Table Storage allows 15 comparisons in a filter (one is the PartitionKey).
PER_QUERY = 14

CANCELLED = "cancelled"  # not running: CANCELLED now
REQUESTED = "requested"  # running: asked to stop; CANCELLED once its run ends
FINISHED = "finished"  # already finished: nothing changed


class Cancels:
    """The cancel writes of ``StateStore`` (``self`` is the store)."""

    def cancel(self: Any, job_id: str) -> tuple[JobRecord, str] | None:
        """Cancel ``job_id``: its record as written and what happened (``CANCELLED``, ``REQUESTED`` or
        ``FINISHED``); None when it has no record."""
        from azure.core import MatchConditions

        if id_problem(job_id) is not None:
            return None
        for _ in range(START_TRIES):
            entity = self._get(job_id)
            if entity is None:
                return None
            status = entity.get("Status")
            if status in _FINISHED_VALUES:
                return self.record(entity), FINISHED
            now = self.clock()
            lease = _aware(entity.get("LeaseUntil"))
            if status == JobStatus.RUNNING.value and lease is not None and lease > now:
                if entity.get("CancelRequested"):
                    return self.record(entity), REQUESTED
                update, what = _key(job_id, now), REQUESTED
            else:
                update, what = self._cancelled_fields(entity, now), CANCELLED
            update.update(CancelRequested=True, CancelRequestedAt=now)
            try:
                self._call("update_entity", update, mode=_merge(), etag=entity.metadata["etag"],
                           match_condition=MatchConditions.IfNotModified)
            except Exception as exc:
                if _is(exc, 404, 412):
                    continue  # it changed under us (a start, an outcome): decide again on what it says now
                raise
            return self.record({**entity, **update}), what
        raise StateUnavailable(f"record of job {job_id} kept changing; gave up cancelling it")

    def mark_cancelled(self: Any, entity: Any, now: datetime) -> bool:
        """CANCELLED on ``entity`` as read (its ETag); False when it changed since."""
        from azure.core import MatchConditions

        try:
            self._call("update_entity", self._cancelled_fields(entity, now), mode=_merge(),
                       etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except Exception as exc:
            if _is(exc, 404, 412):
                return False
            raise
        return True

    def cancelled(self: Any, envelope: "Envelope") -> None:
        """CANCELLED after a run that was cancelled while it ran (before its message is deleted)."""
        now = self.clock()

        def change(entity: Any | None) -> dict[str, Any] | None:
            if entity is None or entity.get("Status") in _FINISHED_VALUES:
                return None  # gone (pruned), or another delivery finished it
            return self._cancelled_fields(entity, now)

        self._read_modify_write(envelope.id, change)

    def _cancelled_fields(self: Any, entity: Any, now: datetime) -> dict[str, Any]:
        # Kept at least as long as it was to be: a delayed job's record must outlive its message.
        expires = max(_aware(entity.get("ExpiresAt")) or now, self._expires(now))
        return dict(_key(entity["RowKey"], now), Status=JobStatus.CANCELLED.value, FinishedAt=now, LeaseUntil=now,
                    CancelRequested=True, ExpiresAt=expires)

    def cancel_requests(self: Any, job_ids: Iterable[str]) -> set[str]:
        """Which of ``job_ids`` were cancelled: one query per partition and ``PER_QUERY`` ids."""
        by_partition: dict[str, list[str]] = {}
        for job_id in dict.fromkeys(job_ids):
            if id_problem(job_id) is None:
                by_partition.setdefault(partition_of(job_id), []).append(job_id)
        found: set[str] = set()
        for partition, ids in by_partition.items():
            for start in range(0, len(ids), PER_QUERY):
                chunk = ids[start:start + PER_QUERY]
                rows = " or ".join(f"RowKey eq @r{i}" for i in range(len(chunk)))
                parameters = {"p": partition, **{f"r{i}": job_id for i, job_id in enumerate(chunk)}}
                try:
                    entities = list(self._call("query_entities", f"PartitionKey eq @p and ( {rows} )",
                                               parameters=parameters, select=["RowKey", "Status", "CancelRequested"]))
                except Exception as exc:
                    if _is(exc, 404):
                        return found
                    raise
                found.update(str(e["RowKey"]) for e in entities
                             if e.get("CancelRequested") or e.get("Status") == JobStatus.CANCELLED.value)
        return found


def _key(job_id: str, now: datetime) -> dict[str, Any]:
    return {"PartitionKey": partition_of(job_id), "RowKey": job_id, "UpdatedAt": now}


__all__ = ["CANCELLED", "Cancels", "FINISHED", "PER_QUERY", "REQUESTED"]
