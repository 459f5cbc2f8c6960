"""Leases: keep fetched messages hidden while they wait or run, as the Functions host does.

A fetched message is hidden for the lease (``-r``). One keeper thread renews every
tracked message at half its lease, so a long job is never handed to another worker; a job
that finishes within half the lease costs no renewal call at all. Each renewal returns a
new pop receipt, and the delete (or release) must use the newest one.

On a pop-receipt mismatch (400) or 404 the message is someone else's now: renewal stops and
the lease is marked lost, so its delete is skipped. On other errors (5xx, timeouts) the
interval halves, down to a tenth of the lease, like the host's 5-minute → 1-minute rule.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from typing import Any, Callable

log = logging.getLogger("azjobs.worker")


def is_lost_error(exc: BaseException) -> bool:
    """True for errors meaning the message is no longer ours: pop-receipt mismatch, 404, 409."""
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

    if isinstance(exc, (ResourceNotFoundError, ResourceExistsError)):
        return True
    status = getattr(exc, "status_code", None)
    code = str(getattr(exc, "error_code", "") or "")
    return status in (404, 409) or code in ("PopReceiptMismatch", "MessageNotFound", "QueueNotFound") or (
        status == 400 and "popreceipt" in str(exc).replace(" ", "").lower()
    )


class Lease:
    """One fetched message's hold: its newest pop receipt, and whether it is still ours."""

    __slots__ = ("queue", "queue_client", "message_id", "pop_receipt", "lost", "closed", "renewals", "interval",
                 "lock")

    def __init__(self, queue: str, queue_client: Any, message_id: str, pop_receipt: str, interval: float) -> None:
        self.queue = queue
        self.queue_client = queue_client
        self.message_id = message_id
        self.pop_receipt = pop_receipt
        self.lost = False
        self.closed = False
        self.renewals = 0
        self.interval = interval
        self.lock = threading.Lock()


class LeaseKeeper:
    """Renews tracked leases at half their length on one background thread."""

    def __init__(self, lease_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_s = max(1, math.ceil(lease_s))  # the service takes whole seconds
        self.half = self.lease_s / 2.0
        self.min_interval = max(self.lease_s / 10.0, 0.2)
        self._clock = clock
        self._heap: list[tuple[float, int, Lease]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> "LeaseKeeper":
        self._thread = threading.Thread(target=self._loop, name="azjobs-lease", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing (messages still held reappear when their lease ends)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def track(self, queue: str, queue_client: Any, message_id: str, pop_receipt: str) -> Lease:
        """Start keeping a just-received message hidden."""
        lease = Lease(queue, queue_client, message_id, pop_receipt, self.half)
        with self._cond:
            heapq.heappush(self._heap, (self._clock() + self.half, next(self._seq), lease))
            if self._heap[0][2] is lease:
                self._cond.notify()
        return lease

    def close(self, lease: Lease) -> str | None:
        """Stop renewing; the newest pop receipt, or None if the message is no longer ours.

        Waits for a renewal in progress, so the receipt returned is the newest.
        """
        with lease.lock:
            lease.closed = True
            return None if lease.lost else lease.pop_receipt

    def __len__(self) -> int:
        with self._cond:
            return sum(1 for _, _, lease in self._heap if not lease.closed)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    while self._heap and self._heap[0][2].closed:
                        heapq.heappop(self._heap)  # finished messages drop out without a call
                    if self._heap:
                        wait = self._heap[0][0] - self._clock()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                _, _, lease = heapq.heappop(self._heap)
            delay = self._renew(lease)
            if delay is not None:
                with self._cond:
                    heapq.heappush(self._heap, (self._clock() + delay, next(self._seq), lease))

    def _renew(self, lease: Lease) -> float | None:
        """Renew one lease; the delay until the next renewal, or None to stop renewing it."""
        with lease.lock:
            if lease.closed or self._stopped:
                return None
            try:
                updated = lease.queue_client.update_message(
                    lease.message_id, lease.pop_receipt, visibility_timeout=self.lease_s
                )
            except Exception as exc:
                if is_lost_error(exc):
                    lease.lost = True
                    log.warning("lease on message %s of %s lost (%s); it will not be deleted by this worker",
                                lease.message_id, lease.queue, type(exc).__name__,
                                extra={"action": "lease_lost", "queue": lease.queue, "message_id": lease.message_id})
                    return None
                lease.interval = max(lease.interval / 2.0, self.min_interval)
                log.warning("renewing the lease on message %s of %s failed (%s); retrying in %.1fs",
                            lease.message_id, lease.queue, type(exc).__name__, lease.interval,
                            extra={"action": "lease_renew_failed", "queue": lease.queue,
                                   "message_id": lease.message_id})
                return lease.interval
            lease.pop_receipt = updated.pop_receipt
            lease.renewals += 1
            lease.interval = self.half
            log.debug("lease on message %s of %s renewed for %ss", lease.message_id, lease.queue, self.lease_s,
                      extra={"action": "lease_renewed", "queue": lease.queue, "message_id": lease.message_id})
            return self.half
