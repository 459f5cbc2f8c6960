"""May this delivery run? The store's decision on what a job's record says (``StateStore.start``).

A pure function of the entity: run, ``skip`` a finished job or a superseded attempt, ``defer``
a message whose job runs under another live lease, or ``cancel`` a cancelled job (the store
then writes CANCELLED when ``why`` is ``CANCEL_PENDING``: a cancel that found no live run).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from .entities import OWN_WRITE, Start, _aware
from .record import JobStatus

if TYPE_CHECKING:
    from ..model.envelope import Envelope

CANCELLED = "the job was cancelled"
# The record asks for a cancel and no live run of it is left to write CANCELLED: this delivery does.
CANCEL_PENDING = "the job was cancelled (its record is marked CANCELLED now: no run of it is left)"
_ACTIVE = frozenset({JobStatus.READY.value, JobStatus.RUNNING.value, JobStatus.RETRYING.value})


def decide(entity: Any, envelope: "Envelope", message_id: str, dequeue_count: int, now: datetime) -> Start:
    """The decision for one delivery of ``envelope`` given its job's record ``entity``."""
    status = entity.get("Status")
    if status == JobStatus.CANCELLED.value:
        return Start("cancel", why=CANCELLED)
    decision = _decide(entity, envelope, message_id, dequeue_count, now)
    if entity.get("CancelRequested") and status in _ACTIVE:
        if decision.action == "defer":  # a live run elsewhere was asked to stop; it writes CANCELLED
            return Start("cancel", why=f"{CANCELLED} (its run elsewhere was asked to stop)")
        if decision.action == "run":
            return Start("cancel", why=CANCEL_PENDING)
    return decision


def _decide(entity: Any, envelope: "Envelope", message_id: str, dequeue_count: int, now: datetime) -> Start:
    status = entity.get("Status")
    recorded_attempt = int(entity.get("Attempt") or 1)
    same_message = bool(message_id) and entity.get("MessageId") == message_id
    if status == JobStatus.SUCCESSFUL.value:
        return Start("skip", why="the job already succeeded (a redelivered or duplicate message)")
    if status in (JobStatus.FAILED.value, JobStatus.DEAD_LETTERED.value):
        if same_message:
            return Start("skip", why=f"the job was already {status} from this message (its delete failed)")
        return Start("run", why=f"a new message for a {status} job (a replay)")
    if envelope.attempt < recorded_attempt:
        return Start("skip", why=f"attempt {envelope.attempt} was superseded by attempt {recorded_attempt} "
                                 "(a redelivery of a message whose retry was already scheduled)")
    if status == JobStatus.RUNNING.value:
        if envelope.attempt > recorded_attempt:
            return Start("run", why="a retry copy of an attempt that ended (its RETRYING write was lost)")
        recorded_count = int(entity.get("DequeueCount") or 0)
        if same_message and dequeue_count > recorded_count:
            return Start("run", why="the previous delivery of this message lost its lease (its worker stopped)")
        if same_message and dequeue_count == recorded_count:
            # One receive gives one (message id, dequeue count): this delivery wrote that RUNNING
            # itself, and the answer was lost (a timeout after the service applied the write).
            return Start("run", why=OWN_WRITE)
        lease_until = _aware(entity.get("LeaseUntil"))
        if lease_until is not None and lease_until > now:
            wait_s = max(1, int((lease_until - now).total_seconds()) + 1)
            return Start("defer", why=f"the job is RUNNING under another live lease (message "
                                      f"{entity.get('MessageId')})", defer_s=wait_s)
        return Start("run", why="a RUNNING record whose lease ran out (its worker stopped)")
    return Start("run")


__all__ = ["CANCEL_PENDING", "CANCELLED", "decide"]
