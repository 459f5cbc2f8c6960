"""The limits' part in the life of a message (a hook of the execution core; see azjobs/execution/hooks.py).

``before_run``: for a job with limits, take a slot of each concurrency limit, then a start of each
rate limit; with no room, give back what was taken and answer ``throttle``: the core sends the
same message again, ``delay`` seconds later (a deferral hop), and deletes this delivery. No attempt
is used and the copy's dequeue count starts again, so a job waiting on a limit never reaches
``maxDequeueCount`` or the poison queue, however long it waits. ``settled`` / ``raised``: the run
ended (or never started): its slots are given back.

Delays carry jitter so waiting jobs do not come back together: a rate limit knows when it has
room again (that, plus up to one sub-window of W/10, at least a second, at random); a full
concurrency limit does not, so a delivery waits between 1 s and a quarter of the time it has
waited since it was enqueued (at most ``MAX_WAIT_S``), at random.

When the limits table cannot be reached, a limited job is throttled (``UNAVAILABLE_WAIT_S``),
never run past its limit. The hook comes first in ``azjobs.hosting.standard_hooks()``: a
throttled delivery costs no job state write, and a run that job state then skips gives its slot
back when it settles.
"""

from __future__ import annotations

import math
import os
import random
import socket
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..execution.hooks import Handling, Hook, Verdict
from ..model.envelope import parse_time
from ..model.limits import Limit, key_value
from ..model.secrets import get_logger
from . import slots, tokens
from .renewer import Renewer
from .table import LimitsUnavailable, LimitTable, shown, table_for
from .tally import Tally

if TYPE_CHECKING:
    from ..execution.executor import Executor
    from ..model.outcome import Result

log = get_logger("azjobs.limits")

MAX_WAIT_S = 30
UNAVAILABLE_WAIT_S = 15


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LimitsHook(Hook):
    """Enforces the jobs' limits (``concurrency``, ``rate_limit``, ``limit``) for one executor."""

    def __init__(self, executor: "Executor") -> None:
        super().__init__(executor)
        self.clock = _now
        self.rng = random.Random()
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.renewer = Renewer(self.table, self.clock)
        self.tally = Tally(self.table, self.worker, self.clock)

    def table(self) -> LimitTable:
        table = table_for(self.executor.client)
        if table is None:  # only a test double's client says so (see table_for): the hook passed over it
            raise LimitsUnavailable("this client keeps no limits table")
        return table

    # -- the executor's hook -------------------------------------------------------------------
    def before_run(self, handling: Handling) -> Verdict | None:
        definition, envelope = handling.definition, handling.envelope
        if definition is None or definition.limits is None or envelope is None:
            return None
        if table_for(self.executor.client) is None:  # a test double with no storage account: limits not enforced
            return None
        limits = definition.limits.resolve()
        args, kwargs = handling.arguments if handling.arguments is not None else (tuple(envelope.args),
                                                                                  dict(envelope.kwargs))
        key = key_value(definition.limits, definition.signature, args, kwargs)
        taken: list[slots.Slot] = []
        try:
            for limit in limits:
                if limit.concurrency is not None:
                    got = slots.acquire(self.table(), limit, key, self._holder(handling), self.clock, self.rng)
                    if isinstance(got, slots.Full):
                        return self._throttle(handling, limit, taken,
                                              f"limit {_named(limit, key)}: all {limit.concurrency} slots are taken",
                                              self._waiting_delay(handling))
                    taken.append(got)
            for limit in limits:
                if limit.rate is not None:
                    answer = tokens.take(self.table(), limit, key, self.clock)
                    if isinstance(answer, tokens.Wait):
                        return self._throttle(handling, limit, taken,
                                              f"limit {_named(limit, key)}: {answer.counted} starts in the last "
                                              f"{limit.rate.window_s}s (rate_limit={limit.rate})",
                                              self._rate_delay(answer, limit))
        except LimitsUnavailable as exc:
            return self._throttle(handling, limits[0], taken, f"the limits table could not be used ({exc})",
                                  UNAVAILABLE_WAIT_S + self.rng.randint(0, UNAVAILABLE_WAIT_S))
        except BaseException:
            self._give_back(taken)
            raise
        handling.notes[self] = taken
        for slot in taken:
            self.renewer.add(slot, handling.info.held)
        for limit in limits:
            self.tally.count(limit.name, handling.info.queue, "started")
        return None

    def settled(self, handling: Handling, result: "Result") -> None:
        self._give_back(handling.notes.pop(self, ()))

    def raised(self, handling: Handling, error: BaseException, kind: str) -> None:
        self._give_back(handling.notes.pop(self, ()))

    def close(self, deadline: float | None = None) -> None:
        self.tally.close(deadline)

    # -- helpers ---------------------------------------------------------------------------------
    def _holder(self, handling: Handling) -> dict[str, Any]:
        envelope = handling.envelope
        assert envelope is not None
        # Clipped: a property is at most 64 KiB, and a refused write would throttle the job for ever.
        return {"Holder": shown(handling.info.worker_id or self.worker), "Job": shown(envelope.job),
                "JobId": shown(envelope.id), "Queue": handling.info.queue}

    def _throttle(self, handling: Handling, limit: Limit, taken: list[slots.Slot], why: str,
                  delay_s: int) -> Verdict:
        self._give_back(taken)
        self.tally.count(limit.name, handling.info.queue, "throttled")
        return Verdict("throttle", why, max(1, int(delay_s)))

    def _give_back(self, taken: Any) -> None:
        for slot in taken:
            self.renewer.drop(slot)
            try:
                slots.release(self.table(), slot)
            except Exception as exc:  # its lease runs out instead
                log.warning("could not give back slot %s of limit %s (its lease of %ss frees it): %s", slot.row,
                            slot.limit.name, slot.limit.lease_s, exc,
                            extra={"action": "limit_release_failed", "limit": slot.limit.name})

    def _waiting_delay(self, handling: Handling) -> int:
        """1 s to a quarter of the time waited so far (at most ``MAX_WAIT_S``), at random."""
        envelope = handling.envelope
        assert envelope is not None
        try:
            waited = (self.clock() - parse_time(envelope.enqueued_at)).total_seconds()
        except (TypeError, ValueError):
            waited = 0.0
        top = max(1, min(MAX_WAIT_S, math.ceil(waited / 4)))
        return self.rng.randint(1, max(1, top))

    def _rate_delay(self, answer: tokens.Wait, limit: Limit) -> int:
        """When the window has room again, plus jitter over about one sub-window per waiting start."""
        assert limit.rate is not None
        spread = max(1.0, limit.rate.window_s / tokens.SUBWINDOWS)
        return math.ceil(answer.retry_after_s + self.rng.uniform(0, spread))


def _named(limit: Limit, key: str) -> str:
    shown = limit.name if not key else f"{limit.name}[{key[:60]}]"
    return repr(shown)


__all__ = ["LimitsHook", "MAX_WAIT_S", "UNAVAILABLE_WAIT_S"]
