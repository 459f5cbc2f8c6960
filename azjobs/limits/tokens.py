"""Rate limits: at most N starts in any window of W seconds, over every worker and instance.

One row per limit and key holds the starts of the recent past in ten sub-windows of W/10
(dramatiq's ``WindowRateLimiter`` keeps one counter per window; one window allows 2N across a
boundary). A start is admitted when the sub-window it falls in and the ten before it hold fewer
than N starts: those eleven cover every window of length W that ends now, so no window of W
seconds ever holds more than N starts (the price: a steady rate of N per 1.1 W at most).

Admitting is one read and one ETag-conditional write (insert for a new row): 2 table calls per
start; a writer that loses the race (412/409) reads again, up to ``TRIES`` times. A throttled
delivery costs the read and learns when the oldest counted start leaves the window. All starts of
one limit and key are writes to one entity, one after another: each takes a round trip, so a
single key admits a few hundred starts a second at most (Table Storage's ceiling for a partition
is ~2,000 entities/s); clocks of different machines must agree to well under W/10.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..model.limits import Limit
from .table import LimitTable, etag_of, rate_partition, shown, status_of

TRIES = 5
SUBWINDOWS = 10
ROW = "window"


@dataclass(frozen=True)
class Admitted:
    counted: int  # starts in the window, this one included


@dataclass(frozen=True)
class Wait:
    counted: int  # starts in the window now
    retry_after_s: float  # when the oldest counted start leaves it


def _buckets(entity: Any) -> dict[int, int]:
    if entity is None:
        return {}
    try:
        data = json.loads(entity.get("Buckets") or "{}")
        return {int(index): int(count) for index, count in data.items()}
    except (TypeError, ValueError):  # a row written by something else: start again
        return {}


def window_state(limit: Limit, entity: Any, now: datetime) -> tuple[int, dict[int, int], float]:
    """(current sub-window index, the counted sub-windows, sub-window length in seconds)."""
    assert limit.rate is not None
    width = limit.rate.window_s / SUBWINDOWS
    current = math.floor(now.timestamp() / width)
    counted = {index: count for index, count in _buckets(entity).items() if current - SUBWINDOWS <= index <= current}
    return current, counted, width


def take(table: LimitTable, limit: Limit, key: str, now: Any) -> Admitted | Wait:
    """Admit one start under ``limit`` for ``key``, or say how long until there is room."""
    assert limit.rate is not None
    partition = rate_partition(limit.name, key)
    last = Wait(limit.rate.count, 1.0)
    for _ in range(TRIES):
        try:
            entity = table.call("get_entity", partition, ROW)
        except Exception as exc:
            if status_of(exc) != 404:
                raise
            entity = None
        moment = now()
        current, counted, width = window_state(limit, entity, moment)
        total = sum(counted.values())
        if total >= limit.rate.count:
            return Wait(total, _room_in(counted, limit.rate.count, current, width, moment))
        counted[current] = counted.get(current, 0) + 1
        row = {"PartitionKey": partition, "RowKey": ROW, "Limit": limit.name, "Key": shown(key),
               "Buckets": json.dumps({str(index): count for index, count in sorted(counted.items())}),
               "WindowS": limit.rate.window_s, "Count": limit.rate.count}
        try:
            if entity is None:
                table.call("create_entity", row)
            else:
                table.call("update_entity", row, mode=_replace(), etag=etag_of(entity),
                           match_condition=_if_not_modified())
        except Exception as exc:
            if status_of(exc) in (404, 409, 412):  # another start was counted first: read again
                last = Wait(total + 1, width)
                continue
            raise
        return Admitted(total + 1)
    return last


def _room_in(counted: dict[int, int], limit: int, current: int, width: float, moment: datetime) -> float:
    """Seconds until the counted starts fall below ``limit`` (sub-window i stops counting at i + 11)."""
    left = sum(counted.values())
    for index in sorted(counted):
        left -= counted[index]
        if left < limit:
            leaves_at = (index + SUBWINDOWS + 1) * width
            return max(0.0, leaves_at - moment.timestamp())
    return width


def recent_starts(limit: Limit, entity: Any, now: datetime) -> int:
    """Starts counted in the window that ends now (what ``azjobs limits`` shows)."""
    _, counted, _ = window_state(limit, entity, now)
    return sum(counted.values())


def _if_not_modified() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


def _replace() -> Any:
    from azure.data.tables import UpdateMode

    return UpdateMode.REPLACE


__all__ = ["Admitted", "ROW", "TRIES", "Wait", "recent_starts", "take", "window_state"]
