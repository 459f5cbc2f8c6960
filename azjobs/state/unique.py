"""Unique jobs: one unfinished job per key, held with conditional writes (a ``StateStore`` mixin).

A key is held while its job is not finished and its TTL (from when the job is due) has not run
out; a conditional insert (or a conditional take-over) makes one caller win.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .entities import MAX_UNIQUE_KEY_UNITS, START_TRIES, UNIQUE_ROW, _aware, _clip, _is, _replace, unique_partition
from .errors import StateUnavailable
from .record import FINISHED


class UniqueKeys:
    """Unique-job keys in the state table (a ``StateStore`` mixin)."""

    # -- unique jobs -----------------------------------------------------------
    def claim_unique(self, key: str, job_id: str, ttl: timedelta, *, visible_at: datetime | None = None) -> str | None:
        """Hold ``key`` for ``job_id``; None if it is now ours, else the id of the job holding it.

        A key is held while its job is not finished and its TTL (from when the job is due) has
        not run out; a conditional insert (or a conditional take-over) makes one caller win.
        """
        from azure.core import MatchConditions

        now = self.clock()
        partition = unique_partition(key)
        entity = {"PartitionKey": partition, "RowKey": UNIQUE_ROW, "JobId": job_id,
                  "UniqueKey": _clip(key, MAX_UNIQUE_KEY_UNITS),
                  "UpdatedAt": now, "ExpiresAt": max(now, visible_at or now) + ttl}
        for _ in range(START_TRIES):
            try:
                self._write("create_entity", entity)
                return None
            except Exception as exc:
                if not _is(exc, 409):
                    raise
            held = self._get_key(partition, UNIQUE_ROW)
            if held is None:
                continue
            holder = held.get("JobId", "")
            expires = _aware(held.get("ExpiresAt"))
            if expires is not None and expires > now and holder:
                status = self.status_of(holder)
                if status is None or status not in FINISHED:
                    return holder  # unfinished, or its record not written yet: the key is held
            try:
                self._call("update_entity", entity, mode=_replace(), etag=held.metadata["etag"],
                           match_condition=MatchConditions.IfNotModified)
                return None
            except Exception as exc:
                if not _is(exc, 404, 412):
                    raise
        raise StateUnavailable(f"unique key {key!r} kept changing hands; gave up")

    def release_unique(self, key: str, job_id: str) -> None:
        """Free ``key`` if ``job_id`` still holds it (its message was never sent)."""
        from azure.core import MatchConditions

        held = self._get_key(unique_partition(key), UNIQUE_ROW)
        if held is None or held.get("JobId") != job_id:
            return
        try:
            self._call("delete_entity", held["PartitionKey"], UNIQUE_ROW, etag=held.metadata["etag"],
                       match_condition=MatchConditions.IfNotModified)
        except Exception as exc:
            if not _is(exc, 404, 412):
                raise
