"""Start and throttle counts of one process, per limit and queue, written every ``FLUSH_S`` seconds.

Each process writes only its own rows (``n-<limit>`` / ``<worker>|<queue>``: an upsert, no ETag, no
contention), with its counts per minute for the last ``KEEP_MINUTES`` minutes; ``azjobs limits``
and ``azjobs stats`` add the rows up. Cost: one write per limit and queue this process used, every
``FLUSH_S`` seconds, and none while nothing changes; never a call in a job's path.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from ..model.secrets import get_logger
from .table import LimitTable, counts_partition

log = get_logger("azjobs.limits")

FLUSH_S = 10.0
KEEP_MINUTES = 60


def minute_of(moment: datetime) -> int:
    return int(moment.timestamp() // 60)


class Tally:
    """Counts kept in memory and flushed by a daemon thread that exists while there is something to write."""

    def __init__(self, table: Callable[[], LimitTable], worker: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._table = table
        self.worker = worker
        self._clock = clock
        self._lock = threading.Condition()
        # (limit, queue) -> {minute: [started, throttled]}
        self._counts: dict[tuple[str, str], dict[int, list[int]]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def count(self, limit: str, queue: str, what: str) -> None:
        slot = 0 if what == "started" else 1
        minute = minute_of(self._clock())
        with self._lock:
            per = self._counts.setdefault((limit, queue), {})
            per.setdefault(minute, [0, 0])[slot] += 1
            for old in [m for m in per if m < minute - KEEP_MINUTES]:
                del per[old]
            self._dirty.add((limit, queue))
            if not self._closed and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._loop, name="azjobs-limits-tally", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait(FLUSH_S)
                if not self._dirty or self._closed:
                    self._thread = None
                    return
            self.flush()

    def flush(self, deadline: float | None = None) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            rows = {key: {str(m): list(v) for m, v in self._counts.get(key, {}).items()} for key in dirty}
        for (limit, queue), recent in rows.items():
            if deadline is not None and time.monotonic() > deadline:
                break
            entity = {"PartitionKey": counts_partition(limit), "RowKey": _row_key(self.worker, queue),
                      "Limit": limit, "Queue": queue, "Worker": self.worker, "Recent": json.dumps(recent),
                      "UpdatedAt": self._clock()}
            try:
                self._table().call("upsert_entity", entity)
            except Exception as exc:  # counts are for reading only: a failed write is tried again next time
                with self._lock:
                    self._dirty.add((limit, queue))
                log.debug("limit counts of %s not written: %s", limit, exc,
                          extra={"action": "limit_counts_failed", "limit": limit})

    def close(self, deadline: float | None = None) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self.flush(deadline)


def _row_key(worker: str, queue: str) -> str:
    text = f"{worker}|{queue}"
    return "".join(ch if ch not in "/\\#?" and ord(ch) >= 0x20 and not 0x7F <= ord(ch) <= 0x9F else "_"
                   for ch in text)[:250]


def recent_counts(entity: Any, since_minute: int) -> tuple[int, int]:
    """(started, throttled) in a counts row since ``since_minute``."""
    try:
        recent = json.loads(entity.get("Recent") or "{}")
    except (TypeError, ValueError):
        return 0, 0
    started = throttled = 0
    for minute, pair in recent.items():
        try:
            if int(minute) >= since_minute:
                started += int(pair[0])
                throttled += int(pair[1])
        except (TypeError, ValueError, IndexError):
            continue
    return started, throttled


__all__ = ["FLUSH_S", "KEEP_MINUTES", "Tally", "minute_of", "recent_counts"]
