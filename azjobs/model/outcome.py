"""What happens to one delivery of a message: its facts (``MessageInfo``), the job's run (``JobRun``)
and the outcome the execution core decides (``Result``). Shared by the core, the hosts and the features."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from .envelope import Envelope


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD_LETTERED = "dead_lettered"
    DEFERRED = "deferred"  # received before its due time and sent on for another hop
    SKIPPED = "skipped"  # a redelivery of a job that already finished: settled without running
    THROTTLED = "throttled"  # a limit had no free slot or token: sent on for later, no attempt used
    CANCELLED = "cancelled"  # cancelled (azjobs.cancel): deleted without running, or its run's result discarded


@dataclass(frozen=True)
class MessageInfo:
    """What the queue says about one delivery of a message."""

    queue: str
    message_id: str = ""
    dequeue_count: int = 1
    insertion_time: datetime | None = None
    pop_receipt: str | None = None
    # Who runs it, for job state: the Functions invocation id; None means "host:pid".
    worker_id: str | None = None
    # Whether this delivery still holds its message (job state keeps a running job's record lease
    # while it does: azjobs/state/running.py); None: for as long as the run lasts.
    held: Callable[[], bool] | None = field(default=None, compare=False, repr=False)


@dataclass
class Result:
    outcome: Outcome
    envelope: Envelope | None = None
    error: BaseException | None = None
    detail: str = ""
    duration_s: float = 0.0
    retry_in_s: float | None = None
    ran: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # A claim-check blob nothing needs once the message is gone (remove it after the delete).
    payload_ref: str | None = None


@dataclass(frozen=True)
class JobRun:
    """What running the job gave: its value, or what it raised (any BaseException)."""

    value: Any = None
    error: BaseException | None = None
    duration_s: float = 0.0


__all__ = ["JobRun", "MessageInfo", "Outcome", "Result"]
