"""Keeping the slots of running jobs: each lease is renewed once a third of it has passed.

The limits feature renews its own leases rather than riding on the worker's message lease: on
Functions the host, not azjobs, keeps the message, and a slot's lease (``lease_s``, 60 s by
default) is much shorter than a message's (10 minutes), so a crashed holder's slot comes back
within a minute. As job state does for its RUNNING records, a slot is renewed only while its
delivery still holds its message (``MessageInfo.held``: the worker's lease is neither closed nor
lost; on Functions, the invocation is within its ``functionTimeout``); a run whose message is gone
lets its slot run out. One daemon thread per process, alive only while slots are held.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Callable

from ..model.secrets import get_logger
from .slots import Slot, renew
from .table import LimitTable

log = get_logger("azjobs.limits")


class Renewer:
    def __init__(self, table: Callable[[], LimitTable], clock: Callable[[], datetime]) -> None:
        self._table = table
        self._clock = clock
        self._held: dict[int, tuple[Slot, Callable[[], bool]]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, slot: Slot, held: Callable[[], bool] | None) -> None:
        with self._cond:
            self._held[id(slot)] = (slot, held or (lambda: True))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="azjobs-limits-leases", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def drop(self, slot: Slot) -> None:
        with self._cond:
            self._held.pop(id(slot), None)

    def __len__(self) -> int:
        with self._cond:
            return len(self._held)

    def _due_in(self, slot: Slot, now: datetime) -> float:
        renew_at = (slot.lease_until - now).total_seconds() - slot.limit.lease_s * 2 / 3
        return max(0.0, renew_at)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._held:
                    self._thread = None
                    return
                now = self._clock()
                wait = min(self._due_in(slot, now) for slot, _ in self._held.values())
                if wait > 0:
                    self._cond.wait(min(wait, 5.0))
                    continue
                due = [(key, slot, held) for key, (slot, held) in self._held.items() if self._due_in(slot, now) <= 0]
            for key, slot, held in due:
                self._visit(key, slot, held)

    def _visit(self, key: int, slot: Slot, held: Callable[[], bool]) -> None:
        try:
            holding = bool(held())
        except Exception:  # noqa: BLE001 - a broken predicate must not stop the others
            holding = False
        if not holding:
            with self._cond:
                self._held.pop(key, None)
            return
        try:
            kept = renew(self._table(), slot, self._clock())
        except Exception as exc:  # unreachable: try again soon; the lease still has two thirds left
            log.warning("could not renew a slot of limit %s: %s", slot.limit.name, exc,
                        extra={"action": "limit_slot_renew_failed", "limit": slot.limit.name})
            with self._cond:
                self._cond.wait(1.0)
            return
        if not kept:
            log.warning("slot %s of limit %s was lost (its lease ran out and another run took it): the limit may be "
                        "exceeded until this run ends", slot.row, slot.limit.name,
                        extra={"action": "limit_slot_lost", "limit": slot.limit.name})
            with self._cond:
                self._held.pop(key, None)


__all__ = ["Renewer"]
