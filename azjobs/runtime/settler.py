"""The settler: deletes finished messages and releases unfinished ones, never crashing the worker.

Deletes go through a few threads of their own: at high concurrency a small pool of
deleters is faster against storage than a delete from every job thread, and a job thread
is free for the next job as soon as its job returns. A failed delete or release is retried
with back-off and then logged; a pop-receipt mismatch, 404 or 409 is ignored (logged at
debug), as the Functions host does — the message is someone else's, or already gone.

One "gone" means the opposite: a delete sent again after a try whose answer was lost (the
connection reset or timed out after the request went out), that finds the message not found
(404 ``MessageNotFound``) while the message is still hidden under this worker's lease, was
deleted by that unanswered try: nobody else can have received it, so it counts as deleted by
us and what belongs to it (its claim-check blob) is removed. The same answer to a first try,
or after the lease ran out, leaves everything as it is. A try whose answer was lost is never
re-sent inside the SDK (``retry_read=0``), so the settler sees every such try; the SDK's
retry policy still retries, with its back-off and the service's ``Retry-After``, a connection
that could not be made and an error answer (503 ServerBusy, 500). An attempt answered 500, 502
or 504 may have deleted the message all the same: a "not found" after it, in the same try, is
read like one after a lost answer.

Credentials that storage rejects (401/403, ``ClientAuthenticationError``) are not retried: the
call fails and ``on_credentials_rejected`` reports it (the worker's rejected-credential path).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

from azure.core.exceptions import ServiceResponseError

from ..model.secrets import describe, get_logger
from ..storage.diagnosis import AUTH, storage_error_kind
from .leases import is_lost_error

log = get_logger("azjobs.worker")

ATTEMPTS = 4
FIRST_RETRY_S = 0.2


class _Status(str):
    """A settlement call's outcome ("ok", "gone", "failed"); falsy only when it failed."""

    def __bool__(self) -> bool:
        return self != "failed"


class Settler:
    """Deletes (on a few threads) and releases (inline) messages with retries."""

    def __init__(self, threads: int = 4, *, on_delete_failed: Callable[[], None] | None = None,
                 on_credentials_rejected: Callable[[str, BaseException], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._queue: "queue.Queue[tuple[Any, ...] | None]" = queue.Queue()
        self._threads = [threading.Thread(target=self._loop, name=f"azjobs-delete-{i}", daemon=True)
                         for i in range(max(1, threads))]
        self._on_delete_failed = on_delete_failed
        self._on_credentials_rejected = on_credentials_rejected
        self._sleep = sleep
        self._started = False
        self._give_up_at: float | None = None  # after this moment (time.monotonic), a failed call is not retried

    def start(self) -> "Settler":
        for thread in self._threads:
            thread.start()
        self._started = True
        return self

    def delete(self, queue_client: Any, queue_name: str, message_id: str,
               pop_receipt: str | Callable[[], str | None],
               on_done: Callable[[], None] | None = None, on_deleted: Callable[[], None] | None = None,
               held: Callable[[], bool] | None = None) -> None:
        """Schedule the delete of a finished message (returns at once).

        ``pop_receipt`` may be a function called just before the delete (it closes the lease
        then, so the message stays leased while it waits for a delete thread; None: skip).
        ``on_deleted`` runs if storage deleted it (not when it was already someone else's);
        then ``on_done`` runs once the delete was attempted, whatever came of it. ``held``
        says whether the message is still hidden under this worker's lease (without it, a
        "not found" after an unanswered try is not taken for our own delete).
        """
        self._queue.put((queue_client, queue_name, message_id, pop_receipt, None, (on_deleted, on_done, held)))

    def release_later(self, queue_client: Any, queue_name: str, message_id: str, pop_receipt: str, visibility_s: int,
                      on_released: Callable[[], None] | None = None) -> None:
        """Schedule a release on the settler's threads (returns at once); ``on_released`` runs if storage took it."""
        self._queue.put((queue_client, queue_name, message_id, pop_receipt, visibility_s, on_released))

    def give_up_at(self, deadline: float | None) -> None:
        """Retry failed calls only until ``deadline`` (time.monotonic()): a stopping worker's grace period."""
        self._give_up_at = deadline

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every scheduled call has been attempted; False if ``timeout`` ran out first."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop the threads; with ``wait``, after the scheduled calls were attempted (for at most ``timeout`` s)."""
        if not self._started:
            return
        flushed = self.flush(timeout) if wait else False
        if not flushed:
            self._give_up_at = time.monotonic()  # threads still busy stop retrying; what is left reappears later
        for _ in self._threads:
            self._queue.put(None)
        if flushed:
            for thread in self._threads:
                thread.join(timeout=5)

    def release(self, queue_client: Any, queue_name: str, message_id: str, pop_receipt: str,
                visibility_s: int) -> str:
        """Make a message visible again in ``visibility_s`` seconds (inline, retried).

        "ok"; "gone" (someone else's now: it is not this worker's to release); or "failed"
        (it reappears when its lease ends). Truthy unless it failed.
        """
        return _Status(self._call(
            lambda: queue_client.update_message(message_id, pop_receipt, visibility_timeout=visibility_s),
            "release", queue_name, message_id,
        ))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                queue_client, queue_name, message_id, pop_receipt, visibility_s, on_released = item
                if visibility_s is not None:
                    if self.release(queue_client, queue_name, message_id, pop_receipt, visibility_s) and on_released:
                        on_released()
                else:
                    on_deleted, on_done, held = on_released
                    try:
                        receipt = pop_receipt() if callable(pop_receipt) else pop_receipt
                        if receipt is None:
                            continue  # not ours (any more): nothing to delete
                        done = self._call(_Delete(queue_client, message_id, receipt), "delete", queue_name,
                                          message_id, held=held)
                        if done == "failed" and self._on_delete_failed is not None:
                            self._on_delete_failed()
                        elif done == "ok" and on_deleted is not None:
                            on_deleted()
                    finally:
                        if on_done is not None:
                            on_done()
            except Exception:  # never let a deleter thread die
                log.exception("unexpected error in a delete thread", extra={"action": "delete_failed"})
            finally:
                self._queue.task_done()

    def _call(self, operation: Callable[[], Any], what: str, queue_name: str, message_id: str, *,
              held: Callable[[], bool] | None = None) -> str:
        """"ok", "gone" (the message is someone else's or already deleted) or "failed"."""
        delay = FIRST_RETRY_S
        gone = "gone"
        unanswered = 0  # tries sent whose answer was lost: storage may have applied them
        for attempt in range(1, ATTEMPTS + 1):
            ours = held is not None and unanswered > 0 and held()  # still hidden under our lease as this try goes
            try:
                operation()
                return "ok"
            except Exception as exc:
                if (what == "delete" and _not_found(exc) and held is not None
                        and (ours or (getattr(operation, "maybe_applied", False) and held()))):
                    log.info("delete of message %s on %s: an earlier try's answer was lost and the message is not "
                             "found now, under this worker's lease: that try deleted it", message_id, queue_name,
                             extra={"action": "delete_answer_lost", "queue": queue_name, "message_id": message_id})
                    return "ok"
                if isinstance(exc, ServiceResponseError):
                    unanswered += 1
                if storage_error_kind(exc) == AUTH:
                    log.error("%s of message %s on %s: storage rejected the credentials (%s); it will reappear "
                              "when its lease ends", what, message_id, queue_name, describe(exc),
                              extra={"action": f"{what}_failed", "queue": queue_name, "message_id": message_id})
                    if self._on_credentials_rejected is not None:
                        self._on_credentials_rejected(queue_name, exc)
                    return "failed"
                if is_lost_error(exc):
                    # Deleted by an unanswered earlier try, or received by another consumer: either way
                    # not ours, so nothing that belongs to the message (its payload blob) is touched.
                    log.debug("%s of message %s on %s skipped: it is no longer ours (%s)", what, message_id,
                              queue_name, describe(exc),
                              extra={"action": f"{what}_skipped", "queue": queue_name, "message_id": message_id})
                    return gone
                if attempt == ATTEMPTS or (self._give_up_at is not None and time.monotonic() >= self._give_up_at):
                    log.error("%s of message %s on %s failed after %d attempts: %s; it will reappear when its "
                              "lease ends", what, message_id, queue_name, attempt, describe(exc),
                              extra={"action": f"{what}_failed", "queue": queue_name, "message_id": message_id})
                    return "failed"
                log.warning("%s of message %s on %s failed (%s); retrying in %.1fs", what, message_id, queue_name,
                            describe(exc), delay,
                            extra={"action": f"{what}_retry", "queue": queue_name, "message_id": message_id})
                self._sleep(delay)
                delay *= 2
        return "failed"  # pragma: no cover


# Answers after which a delete may have been applied all the same (Storage: "may or may not have completed").
# A 503 ServerBusy was not processed.
MAYBE_APPLIED = frozenset({500, 502, 504})


class _Delete:
    """One try of a delete. The SDK may retry it when it cannot have deleted anything (no connection, 503)
    but never re-sends it after a lost answer (``retry_read=0``), so the settler sees every such try.
    ``maybe_applied``: an earlier attempt inside this try was answered 500/502/504, which the SDK retried."""

    __slots__ = ("queue_client", "message_id", "receipt", "statuses")

    def __init__(self, queue_client: Any, message_id: str, receipt: str) -> None:
        self.queue_client, self.message_id, self.receipt = queue_client, message_id, receipt
        self.statuses: list[int] = []

    def _answered(self, response: Any) -> None:
        self.statuses.append(response.http_response.status_code)

    def __call__(self) -> None:
        self.statuses = []
        self.queue_client.delete_message(self.message_id, self.receipt, retry_read=0, raw_response_hook=self._answered)

    @property
    def maybe_applied(self) -> bool:
        return any(status in MAYBE_APPLIED for status in self.statuses[:-1])


def _not_found(exc: BaseException) -> bool:
    """404 ``MessageNotFound``: no message with that id and receipt (not a missing queue, not a 400 mismatch)."""
    code = str(getattr(exc, "error_code", "") or "")
    return getattr(exc, "status_code", None) == 404 and code != "QueueNotFound"
