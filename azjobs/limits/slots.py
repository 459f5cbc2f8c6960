"""Concurrency slots: at most N runs at once, as N leased rows of one Table partition.

Taking a slot is one query of the partition (the live rows are the runs holding slots now) and one
conditional write: ``create_entity`` on a slot number no row has (409 if another worker took it
first) or an ETag-matched update of a row whose lease ran out (412 if another worker took it
first). The loser reads again, up to ``TRIES`` times, then is throttled. Giving the slot back is
an ETag-matched delete (a 412 means the lease ran out and someone else holds the slot now: theirs
stays). A holder renews its lease while its job runs (``azjobs.limits.renewer``); one that stops
(``kill -9``, a lost host) frees its slot when the lease ends.

Cost: 3 table calls per run (query, take, give back) plus one write per ``lease_s / 3`` of run
time; a throttled delivery costs the query. Every call of one limit and key goes to one partition
(~2,000 entities/s): about 600 runs/s per limit and key.

Clocks: a lease is compared with the reader's clock; a row is taken over only ``SKEW_S`` after its
lease ended, so machines whose clocks differ by less than that never take a live slot.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from ..model.limits import Limit
from .table import LimitTable, aware, etag_of, shown, slot_partition, status_of, written_etag

TRIES = 3
SKEW_S = 5.0


@dataclass
class Slot:
    """A slot this process holds: which row, its ETag as last written, and its lease."""

    limit: Limit
    partition: str
    row: str
    etag: str | None
    lease_until: datetime
    lost: bool = False
    renewals: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Full:
    """No slot free: how many are held (live leases) and the soonest one ends."""

    held: int
    soonest_end_s: float | None


def _row(index: int) -> str:
    return f"slot-{index:04d}"


def _index(row: str) -> int | None:
    try:
        return int(row[5:]) if row.startswith("slot-") else None
    except ValueError:
        return None


def live_rows(rows: list[Any], now: datetime) -> list[Any]:
    """The rows whose lease has not ended (with the clock margin)."""
    margin = timedelta(seconds=SKEW_S)
    return [row for row in rows if (aware(row.get("LeaseUntil")) or now) + margin > now]


def acquire(table: LimitTable, limit: Limit, key: str, holder: dict[str, Any], now: Callable[[], datetime],
            rng: random.Random | None = None) -> Slot | Full:
    """Take one of ``limit.concurrency`` slots for ``key``, or say why none is free."""
    assert limit.concurrency is not None
    rng = rng or random
    partition = slot_partition(limit.name, key)
    full = Full(0, None)
    for _ in range(TRIES):
        rows = table.query("PartitionKey eq @pk", {"pk": partition})
        moment = now()
        live = live_rows(rows, moment)
        if len(live) >= limit.concurrency:
            ends = [aware(row.get("LeaseUntil")) for row in live]
            soonest = min(((end - moment).total_seconds() + SKEW_S for end in ends if end is not None), default=None)
            return Full(len(live), soonest)
        live_ids = {id(row) for row in live}
        by_index = {_index(row["RowKey"]): row for row in rows}
        candidates = [index for index in range(limit.concurrency)
                      if index not in by_index or id(by_index[index]) not in live_ids]
        if not candidates:  # every free number is above a lowered limit's rows: wait for one to end
            return Full(len(live), None)
        index = rng.choice(candidates)
        lease_until = moment + timedelta(seconds=limit.lease_s)
        entity = {"PartitionKey": partition, "RowKey": _row(index), "Limit": limit.name, "Key": shown(key),
                  "LeaseUntil": lease_until, "AcquiredAt": moment, **holder}
        existing = by_index.get(index)
        try:
            if existing is None:
                answer = table.call("create_entity", entity)
            else:
                answer = table.call("update_entity", entity, mode=_replace(), etag=etag_of(existing),
                                    match_condition=_if_not_modified())
        except Exception as exc:
            if status_of(exc) in (404, 409, 412):  # another worker took that slot first: look again
                full = Full(len(live) + 1, None)
                continue
            raise
        return Slot(limit, partition, _row(index), written_etag(answer), lease_until)
    return full


def renew(table: LimitTable, slot: Slot, now: datetime) -> bool:
    """Extend the slot's lease; False when it is no longer ours (its lease ran out and it was taken, or deleted)."""
    lease_until = now + timedelta(seconds=slot.limit.lease_s)
    try:
        answer = table.call("update_entity", {"PartitionKey": slot.partition, "RowKey": slot.row,
                                              "LeaseUntil": lease_until},
                            mode=_merge(), etag=slot.etag, match_condition=_if_not_modified())
    except Exception as exc:
        if status_of(exc) in (404, 412):
            slot.lost = True
            return False
        raise
    slot.etag, slot.lease_until = written_etag(answer), lease_until
    slot.renewals += 1
    return True


def release(table: LimitTable, slot: Slot) -> bool:
    """Give the slot back; False when it was no longer ours (nothing is deleted then)."""
    try:
        table.call("delete_entity", slot.partition, slot.row, etag=slot.etag, match_condition=_if_not_modified())
    except Exception as exc:
        if status_of(exc) in (404, 412):
            return False
        raise
    return True


def _if_not_modified() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


def _replace() -> Any:
    from azure.data.tables import UpdateMode

    return UpdateMode.REPLACE


def _merge() -> Any:
    from azure.data.tables import UpdateMode

    return UpdateMode.MERGE


__all__ = ["Full", "SKEW_S", "Slot", "TRIES", "acquire", "release", "renew"]
