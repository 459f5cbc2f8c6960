"""Settlement: what the Functions host does with a delivery once the function is done.

The execution core decides and writes a job's outcome (retry copy, poison record); what
is left is the message itself, and that is the host's part, which the worker plays:

- the core returned a ``Result``: delete the message with the newest pop receipt, then
  remove its claim-check blob (only once the message is gone, so a failed delete leaves a
  redelivery that can still run);
- the core raised (``Redeliver``: it could not write what it needed; or anything else; or
  the job ran past its timeout): at ``maxDequeueCount`` deliveries, write the poison record
  *while still holding the lease* and then delete; otherwise release the message with
  host.json ``visibilityTimeout``;
- fetched but never started (the worker is stopping): release at once (visibility 0).

A lease that turned out to be someone else's is never deleted or released. An orphaned
lease (ours, receipt unknown; see azjobs/lease.py) is settled when the message comes back.

The worker calls ``settle``; the parity suite calls the same code for its runner path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ..execution.executor import Executor
from ..model.outcome import MessageInfo, Result
from ..execution.recorder import describe
from ..model.secrets import get_logger
from ..model.settings import QueueSettings
from .leases import Lease, LeaseKeeper
from .settler import Settler

log = get_logger("azjobs.worker")


@dataclass
class Delivery:
    """One received message and its lease."""

    queue: str
    queue_client: Any
    message: Any
    lease: Lease
    finished: bool = False  # its settlement was attempted (the runner's in-flight bookkeeping)

    @property
    def info(self) -> MessageInfo:
        message = self.message
        lease = self.lease
        return MessageInfo(queue=self.queue, message_id=message.id, dequeue_count=message.dequeue_count or 1,
                           insertion_time=message.inserted_on, pop_receipt=message.pop_receipt,
                           held=lambda: not (lease.closed or lease.lost))


def _nothing() -> None:
    pass


class Settlement:
    """Deletes, releases and poisons deliveries the way the host does. Thread-safe."""

    def __init__(self, *, executor: Executor, keeper: LeaseKeeper, settler: Settler,
                 count: Callable[[str], None] | None = None, forced: Callable[[], bool] | None = None) -> None:
        self.executor = executor
        self.keeper = keeper
        self.settler = settler
        self._count = count or (lambda name: None)
        self._forced = forced or (lambda: False)

    @property
    def settings(self) -> QueueSettings:
        return self.executor.settings

    def settle(self, delivery: Delivery, outcome: Result | BaseException,
               on_done: Callable[[], None] = _nothing) -> None:
        """Settle after the core: a Result is deleted, an exception released (or poisoned at the max).

        ``on_done`` runs exactly once, when the delete or release was attempted.
        """
        if isinstance(outcome, Result):
            self._count(outcome.outcome.value)
            self.delete(delivery, outcome, on_done)
        else:
            self.redeliver(delivery, outcome, on_done)

    # -- the host's moves --------------------------------------------------
    def delete(self, delivery: Delivery, result: Result, on_done: Callable[[], None] = _nothing) -> None:
        """Delete with the newest receipt; the claim-check blob goes once the message is gone.

        The lease is closed only when a delete thread takes the delete up, so a message
        waiting behind busy delete threads stays leased (renewed) instead of reappearing.
        The message stays in flight until its delete was attempted, so fetching never runs
        ahead of deleting (Azurite slows down with many invisible messages).
        """
        ref = result.payload_ref
        on_deleted = None if ref is None else (lambda: self._forget_payload(ref, delivery))

        def held() -> bool:  # still hidden under our lease (the keeper's clock is time.monotonic)
            return time.monotonic() < delivery.lease.expires_at

        def delete_later(receipt: str) -> None:  # an orphaned lease's message came back to us
            self.settler.delete(delivery.queue_client, delivery.queue, delivery.message.id, receipt, None, on_deleted,
                                held)

        def receipt_now() -> str | None:
            receipt = self.keeper.close(delivery.lease, later=delete_later)
            if receipt is None:
                self._not_ours(delivery, "delete")
            return receipt

        self.settler.delete(delivery.queue_client, delivery.queue, delivery.message.id, receipt_now, on_done,
                            on_deleted, held)

    def redeliver(self, delivery: Delivery, error: BaseException, on_done: Callable[[], None] = _nothing) -> None:
        """What the host does after a failed invocation: poison at maxDequeueCount, else release."""
        info = delivery.info
        if info.dequeue_count >= self.settings.max_dequeue_count:
            # The lease keeps being renewed until the record is durable and the message deleted,
            # so a slow write or on_dead_letter hook never lets the message reappear.
            try:
                result = self.executor.dead_letter_redelivered(delivery.message.content, info, error, encoded=True)
            except Exception as exc:
                log.error("could not dead-letter message %s of %s (%s); releasing it", info.message_id, info.queue,
                          describe(exc), extra={"action": "dead_letter_failed", "queue": info.queue,
                                                "message_id": info.message_id})
            else:
                self._count("dead_lettered")
                self.delete(delivery, result, on_done)
                return
        visibility = int(self.settings.visibility_timeout.total_seconds())

        def release_with(receipt: str) -> str:
            return self.settler.release(delivery.queue_client, delivery.queue, delivery.message.id, receipt,
                                        visibility)

        try:
            receipt = self.keeper.close(delivery.lease, later=release_with)
            if receipt is None:
                self._not_ours(delivery, "release")
                return
            status = release_with(receipt)
            if status == "gone":
                self._count("lease_lost")
                return  # someone else's now (the settler logged it); not this worker's redelivery
            self._count("redelivered")
            when = f"in {visibility}s" if status == "ok" else "when its lease ends (the release failed)"
            log.info("message %s of %s released for redelivery %s (dequeue count %d of %d): %s", info.message_id,
                     info.queue, when, info.dequeue_count, self.settings.max_dequeue_count, describe(error),
                     extra={"action": "message_redelivered", "queue": info.queue, "message_id": info.message_id,
                            "dequeue_count": info.dequeue_count, "delay_s": visibility if status == "ok" else None})
        finally:
            on_done()

    def release_unstarted(self, delivery: Delivery, on_done: Callable[[], None] = _nothing) -> None:
        """Release a fetched message that never started (visibility 0), so another worker takes it now."""
        try:
            receipt = self.keeper.close(delivery.lease)
            if receipt is not None and not self._forced():
                def released(delivery: Delivery = delivery) -> None:
                    self._count("released")
                    log.debug("released unstarted message %s of %s", delivery.message.id, delivery.queue,
                              extra={"action": "message_released", "queue": delivery.queue,
                                     "message_id": delivery.message.id})

                # On the settler's threads, so a stop never waits on storage beyond its grace period.
                self.settler.release_later(delivery.queue_client, delivery.queue, delivery.message.id, receipt, 0,
                                           released)
        finally:
            on_done()

    # -- helpers -------------------------------------------------------------
    def _not_ours(self, delivery: Delivery, what: str) -> None:
        lease = delivery.lease
        if lease.orphaned:
            self._count("receipt_unknown")
            log.warning("%s of message %s on %s waits: its receipt is unknown after an unanswered renewal; it is "
                        "carried out if the message comes back to this worker", what, delivery.message.id,
                        delivery.queue, extra={"action": f"{what}_deferred", "queue": delivery.queue,
                                               "message_id": delivery.message.id})
            return
        self._count("lease_lost")
        log.warning("%s of message %s on %s skipped: its lease was lost, another worker owns it now", what,
                    delivery.message.id, delivery.queue,
                    extra={"action": f"{what}_skipped", "queue": delivery.queue, "message_id": delivery.message.id})

    def _forget_payload(self, ref: str, delivery: Delivery) -> None:
        """Delete a claim-check blob once its message is gone; a failure only leaves an orphan blob."""
        try:
            self.executor.payloads.delete(ref)
        except Exception as exc:
            log.warning("could not delete payload blob %s: %s", ref, describe(exc),
                        extra={"action": "payload_delete_failed", "queue": delivery.queue})


__all__ = ["Delivery", "Settlement"]
