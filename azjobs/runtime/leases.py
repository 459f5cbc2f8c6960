"""Leases: keep fetched messages hidden while they wait or run, as the Functions host does.

A fetched message is hidden for the lease (``-r``). The keeper renews each tracked message
at half its lease, so a long job is never handed to another worker; a job that finishes
within half the lease costs no renewal call at all. Each renewal returns a new pop
receipt, and the delete (or release) must use the newest one.

Renewals are independent of each other: one scheduler thread hands each due renewal to a
small pool, and every call is bounded well inside what is left of that lease (no SDK
retry, connect and read timeouts of at most half the remaining lease), so one slow call
never lets the other leases lapse. The pool's threads are daemon threads: a renewal still
waiting on storage that does not answer never holds a stopped worker's process open.

Outcomes of a renewal:

- success: the new receipt and a new expiry; next renewal at half the lease;
- pop-receipt mismatch (400) or 404: the message is someone else's now. Renewal stops and
  the lease is *lost*, so its delete is skipped;
- no answer (timeout, dropped connection, 5xx): *uncertain* — storage may have applied it,
  and the receipt it returned is gone. The next attempt comes sooner, with the old receipt.
  If that one meets a mismatch while the last confirmed lease has not yet run out, nobody
  else can have received the message (it was invisible), so the mismatch is our own applied
  update: the lease is *orphaned*, still ours but with an unknown receipt. When the message
  becomes visible again and this worker receives it, ``adopt`` takes the new receipt: a
  running job keeps its lease, and a finished job's settlement (delete or release) is
  carried out then, without running the job a second time.
"""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import threading
import time
from typing import Any, Callable

from ..model.secrets import describe, get_logger

log = get_logger("azjobs.worker")

MIN_CALL_S = 0.5  # the shortest timeout a renewal call gets
MAX_CALL_S = 10.0  # and the longest
RENEWAL_THREADS = 8


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


def is_definite_error(exc: BaseException) -> bool:
    """True when storage answered and refused (4xx): the call was certainly not applied."""
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500


class Lease:
    """One fetched message's hold: its newest pop receipt, and whether it is still ours."""

    __slots__ = ("queue", "queue_client", "message_id", "pop_receipt", "lost", "orphaned", "uncertain", "closed",
                 "renewals", "interval", "expires_at", "later", "orphaned_at", "lock")

    def __init__(self, queue: str, queue_client: Any, message_id: str, pop_receipt: str, interval: float,
                 expires_at: float) -> None:
        self.queue = queue
        self.queue_client = queue_client
        self.message_id = message_id
        self.pop_receipt = pop_receipt
        self.lost = False  # another consumer holds the message now
        self.orphaned = False  # still ours, but the receipt storage last gave is unknown
        self.uncertain = False  # the last renewal got no answer: it may have been applied
        self.closed = False
        self.renewals = 0
        self.interval = interval
        self.expires_at = expires_at  # (keeper clock) when the last confirmed lease runs out
        self.later: Callable[[str], None] | None = None  # settlement waiting for the receipt of an orphan
        self.orphaned_at = 0.0
        self.lock = threading.Lock()


class _Renewers:
    """A few daemon threads running submitted calls (unlike ``ThreadPoolExecutor``'s, which the
    interpreter waits for at exit, however long their storage call takes)."""

    def __init__(self, threads: int) -> None:
        self._calls: "queue.SimpleQueue[tuple[Callable[..., Any], tuple] | None]" = queue.SimpleQueue()
        self._size = max(1, threads)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = False

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            if self._stopped:
                raise RuntimeError("the renewal threads were shut down")
            if len(self._threads) < self._size:
                thread = threading.Thread(target=self._run, name=f"azjobs-renew-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)
            self._calls.put((call, args))

    def shutdown(self) -> None:
        """Drop the calls not started; the threads end after the call each is in (not waited for)."""
        with self._lock:
            self._stopped = True
            while True:
                try:
                    self._calls.get_nowait()
                except queue.Empty:
                    break
            for _ in self._threads:
                self._calls.put(None)

    def _run(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            call, args = item
            try:
                call(*args)
            except Exception:  # a renewal thread never dies
                log.exception("unexpected error renewing a lease", extra={"action": "lease_renewal_crashed"})


class LeaseKeeper:
    """Renews tracked leases at half their length, each renewal on its own pool thread."""

    def __init__(self, lease_s: float, *, clock: Callable[[], float] = time.monotonic,
                 threads: int = RENEWAL_THREADS) -> None:
        self.lease_s = max(1, math.ceil(lease_s))  # the service takes whole seconds
        self.half = self.lease_s / 2.0
        self.min_interval = max(self.lease_s / 10.0, 0.2)
        self.orphan_ttl = max(600.0, 4 * self.lease_s)
        self._clock = clock
        self._heap: list[tuple[float, int, Lease]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._pool = _Renewers(threads)
        self._orphans: dict[tuple[str, str], Lease] = {}

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
        self._pool.shutdown()

    def track(self, queue: str, queue_client: Any, message_id: str, pop_receipt: str,
              received_at: float | None = None) -> Lease:
        """Start keeping a just-received message hidden (``received_at``: when the receive was sent)."""
        now = self._clock()
        lease = Lease(queue, queue_client, message_id, pop_receipt, self.half,
                      (now if received_at is None else received_at) + self.lease_s)
        self._schedule(lease, now + self.half)
        return lease

    def close(self, lease: Lease, later: Callable[[str], None] | None = None) -> str | None:
        """Stop renewing; the newest pop receipt, or None if there is none to use now.

        None with ``lease.lost``: the message is someone else's. None with ``lease.orphaned``:
        it is ours with an unknown receipt; ``later`` runs with the new receipt if it comes
        back to this worker (see ``adopt``). Waits for a renewal in progress (bounded), so
        the receipt returned is the newest.
        """
        with lease.lock:
            lease.closed = True
            if lease.lost:
                return None
            if lease.orphaned:
                lease.later = later
                return None
            return lease.pop_receipt

    def adopt(self, queue: str, message_id: str, pop_receipt: str, received_at: float | None = None) -> bool:
        """A received message that is an orphaned lease of ours: take its new receipt; True if it was one.

        A running job keeps its lease (renewed again); a finished one's waiting settlement
        runs now with the new receipt. Either way the message is not run again.
        """
        with self._cond:
            lease = self._orphans.pop((queue, message_id), None)
        if lease is None:
            return False
        now = self._clock()
        with lease.lock:
            lease.pop_receipt = pop_receipt
            lease.orphaned = lease.uncertain = False
            lease.expires_at = (now if received_at is None else received_at) + self.lease_s
            later, lease.later = lease.later, None
            closed = lease.closed
        log.warning("message %s of %s came back to this worker after its receipt was lost; %s", message_id, queue,
                    "settling it now" if closed else "its job is still running and keeps the lease",
                    extra={"action": "lease_recovered", "queue": queue, "message_id": message_id})
        if not closed:
            self._schedule(lease, now + self.half)
        elif later is not None:
            later(pop_receipt)
        return True

    def orphans(self) -> int:
        with self._cond:
            return len(self._orphans)

    def __len__(self) -> int:
        with self._cond:
            return sum(1 for _, _, lease in self._heap if not lease.closed)

    # -- scheduling ------------------------------------------------------------
    def _schedule(self, lease: Lease, at: float) -> None:
        with self._cond:
            if self._stopped:
                return
            heapq.heappush(self._heap, (at, next(self._seq), lease))
            if self._heap[0][2] is lease:
                self._cond.notify()

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
                        self._cond.wait(min(wait, 1.0))
                    else:
                        self._cond.wait(1.0)
                    self._prune_orphans()
                if self._stopped:
                    return
                _, _, lease = heapq.heappop(self._heap)
            try:
                self._pool.submit(self._renew_and_reschedule, lease)
            except RuntimeError:  # the pool was shut down: stopping
                return

    def _prune_orphans(self) -> None:
        """Forget orphans that never came back (another worker received them); under ``_cond``."""
        if not self._orphans:
            return
        now = self._clock()
        for key, lease in list(self._orphans.items()):
            if now - lease.orphaned_at > self.orphan_ttl:
                del self._orphans[key]

    def _renew_and_reschedule(self, lease: Lease) -> None:
        delay = self._renew(lease)
        if delay is not None:
            self._schedule(lease, self._clock() + delay)

    def call_timeout(self, lease: Lease, now: float) -> float:
        """The bound on one renewal call: half of what is left of the lease, within [0.5 s, 10 s]."""
        return max(MIN_CALL_S, min((lease.expires_at - now) / 2.0, MAX_CALL_S))

    def _renew(self, lease: Lease) -> float | None:
        """Renew one lease; the delay until the next renewal, or None to stop renewing it."""
        with lease.lock:
            if lease.closed or self._stopped:
                return None
            sent = self._clock()
            timeout = self.call_timeout(lease, sent)
            try:
                updated = lease.queue_client.update_message(
                    lease.message_id, lease.pop_receipt, visibility_timeout=self.lease_s,
                    retry_total=0, connection_timeout=timeout, read_timeout=timeout,
                )
            except Exception as exc:
                return self._failed(lease, exc, sent)
            lease.pop_receipt = updated.pop_receipt
            lease.expires_at = sent + self.lease_s
            lease.uncertain = False
            lease.renewals += 1
            lease.interval = self.half
            log.debug("lease on message %s of %s renewed for %ss", lease.message_id, lease.queue, self.lease_s,
                      extra={"action": "lease_renewed", "queue": lease.queue, "message_id": lease.message_id})
            return self.half

    def _failed(self, lease: Lease, exc: Exception, sent: float) -> float | None:
        """Under ``lease.lock``: what a failed renewal means for the lease."""
        if is_lost_error(exc):
            if lease.uncertain and sent < lease.expires_at:
                # Invisible until expires_at, so only our own earlier (unanswered) update can have
                # changed the receipt: the message is still ours.
                lease.orphaned, lease.orphaned_at = True, self._clock()
                with self._cond:
                    self._orphans[(lease.queue, lease.message_id)] = lease
                log.warning("lease on message %s of %s: an unanswered renewal was applied, so its receipt is "
                            "unknown; the message stays ours and is settled if it comes back to this worker",
                            lease.message_id, lease.queue,
                            extra={"action": "lease_receipt_unknown", "queue": lease.queue,
                                   "message_id": lease.message_id})
                return None
            lease.lost = True
            log.warning("lease on message %s of %s lost (%s); it will not be deleted by this worker",
                        lease.message_id, lease.queue, type(exc).__name__,
                        extra={"action": "lease_lost", "queue": lease.queue, "message_id": lease.message_id})
            return None
        if not is_definite_error(exc):
            lease.uncertain = True  # no answer: storage may have applied it
        remaining = lease.expires_at - self._clock()
        lease.interval = max(min(lease.interval / 2.0, remaining / 4.0), self.min_interval)
        log.warning("renewing the lease on message %s of %s failed (%s); retrying in %.1fs",
                    lease.message_id, lease.queue, describe(exc),
                    lease.interval,
                    extra={"action": "lease_renew_failed", "queue": lease.queue, "message_id": lease.message_id})
        return lease.interval


__all__ = ["Lease", "LeaseKeeper", "is_definite_error", "is_lost_error"]
