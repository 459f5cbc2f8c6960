"""Fetching for the local runner: receivers per queue, the start-up check, and saying storage problems once.

One receiver per queue polls with the host's back-off (azjobs/runtime/polling.py) while the
queue is idle; while receives come back full, up to ``RECEIVERS - 1`` helpers receive too, so
a backlog keeps several receives in flight. Every receive reserves its batch first under the
host's per-queue batch rules (azjobs/runtime/inflight.py). A storage problem is logged in full
once per episode, then in a short line per retry; rejected credentials stop a burst.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import CredentialsRejected, QueueNotFoundError, StorageUnreachable
from ..model.secrets import get_logger
from ..storage.diagnosis import (AUTH, NOT_FOUND, auth_problem, short_reason, storage_error_kind,
                                 unreachable_problem)
from .polling import PollingBackoff
from .settlement import Delivery

log = get_logger("azjobs.worker")


class Fetching:
    """The fetching half of ``Worker`` (a mixin: ``self`` is the worker)."""

    # -- start and stop ----------------------------------------------------
    def _check_queues(self) -> None:
        """Fail fast on a missing queue or rejected credentials; wait out an unreachable storage account.

        Rejected credentials raise ``CredentialsRejected`` (one line saying which setting to fix).
        Unreachable storage is said once in plain words, then in a short line per retry; in burst mode
        the worker gives up after ``burst_timeout`` seconds (``StorageUnreachable``).
        """
        for name, queue_client in self._queue_clients.items():
            backoff = PollingBackoff(self.settings.max_polling_interval)
            since: float | None = None
            while not self._stopping.is_set():
                called = time.monotonic()
                try:
                    queue_client.get_queue_properties()
                except Exception as exc:
                    kind = storage_error_kind(exc)
                    if kind == NOT_FOUND:
                        self._start_failed = True
                        raise QueueNotFoundError(name) from None
                    if kind == AUTH:
                        self._start_failed = True
                        raise CredentialsRejected(auth_problem(exc, self.target, f"checking queue {name}")) from None
                    now = time.monotonic()
                    since = called if since is None else since
                    delay = backoff.next_delay(False)
                    if self.burst and self.burst_timeout is not None:
                        left = self.burst_timeout - (now - since)
                        if left <= 0:
                            self._start_failed = True
                            raise StorageUnreachable(
                                f"{self.target.where} did not answer for {now - since:.0f}s "
                                f"({short_reason(exc)}); --burst gives up after {self.burst_timeout:g}s "
                                "(--burst-timeout)") from None
                        delay = min(delay, left)
                    self._storage_failed(name, exc, delay, "storage_unavailable")
                    self._stopping.wait(delay)
                    continue
                if since is not None:
                    self._storage_back(name)
                break

    def _storage_failed(self, name: str, exc: BaseException, delay: float, action: str) -> None:
        """Log a failed storage call that is retried: in full once per episode, then one short line per retry."""
        with self._stats_lock:
            first = "unreachable" not in self._reported
            self._reported.add("unreachable")
        fields = {"action": action, "queue": name, "delay_s": round(delay, 3), "endpoint": self.target.endpoint,
                  "reason": short_reason(exc)}
        if first:
            kind = storage_error_kind(exc)
            if kind == "unreachable":
                text = unreachable_problem(exc, self.target, f"for queue {name}")
            elif kind == NOT_FOUND:
                text = f"queue {name} does not exist at {self.target.where} ({short_reason(exc)})"
            else:
                text = f"{self.target.where} answered {short_reason(exc)} for queue {name}"
            until = (f"for up to {self.burst_timeout:g}s (--burst-timeout)"
                     if self.burst and self.burst_timeout is not None else "until it answers")
            log.warning("%s. Retrying %s.", text, until, extra=fields)
        else:
            log.warning("storage at %s still failing for queue %s (%s); retrying in %.1fs", self.target.endpoint,
                        name, short_reason(exc), delay, extra=fields)

    def _credentials_failed(self, name: str, exc: BaseException) -> None:
        """Rejected credentials while running: an error once (with the setting to fix), then quiet retries."""
        with self._stats_lock:
            first = "auth" not in self._reported
            self._reported.add("auth")
            self.stats.credentials_rejected = True
        fields = {"action": "storage_auth_failed", "queue": name, "endpoint": self.target.endpoint,
                  "reason": short_reason(exc)}
        if first:
            then = ("--burst stops (exit status 2)" if self.burst else
                    "the worker keeps retrying quietly until storage accepts them")
            log.error("%s; %s", auth_problem(exc, self.target, f"receiving from queue {name}"), then, extra=fields)
        else:
            log.debug("storage still rejects the credentials for queue %s (%s)", name, short_reason(exc),
                      extra=fields)

    def _credentials_back(self, name: str) -> None:
        with self._stats_lock:
            self._reported.discard("auth")
        log.info("storage accepts the credentials again (queue %s)", name,
                 extra={"action": "storage_auth_recovered", "queue": name})

    def _storage_back(self, name: str) -> None:
        with self._stats_lock:
            self._reported.discard("unreachable")
        log.info("queue %s is reachable again", name, extra={"action": "storage_recovered", "queue": name})

    # -- fetching ----------------------------------------------------------
    def _help_fetch(self, name: str, busy: threading.Event, lead: threading.Thread) -> None:
        """An extra receiver for ``name``: receives only while the queue has a backlog (``busy``)."""
        queue_client = self._queue_clients[name]
        try:
            while not self._stopping.is_set() and lead.is_alive():
                if not busy.wait(0.5):
                    continue
                wanted = self.inflight.reserve(name, timeout=0.5)
                if wanted == 0:
                    continue
                if not busy.is_set() or self._stopping.is_set():
                    self.inflight.unreserve(name, wanted)
                    continue
                self._count("receives")
                received_at = time.monotonic()
                try:
                    messages = self._receive(queue_client, wanted)
                except Exception:
                    self.inflight.unreserve(name, wanted)
                    self._count("receive_errors")
                    busy.clear()  # the lead receiver backs off and reports it
                    continue
                self.inflight.unreserve(name, wanted - len(messages))
                if len(messages) < wanted:
                    busy.clear()
                if messages:
                    self._dispatch(name, queue_client, messages, received_at)
        except Exception:  # a bug here must not leave the worker hanging
            log.exception("receiver for %s crashed", name, extra={"action": "fetch_loop_crashed", "queue": name})

    def _fetch_loop(self, name: str, busy: threading.Event | None = None) -> None:
        queue_client = self._queue_clients[name]
        backoff = PollingBackoff(self.settings.max_polling_interval)
        busy = busy or threading.Event()
        last_call = 0.0
        failing: str | None = None  # "auth" or "other" while receives fail
        failing_since = 0.0
        try:
            while not self._stopping.is_set():
                wanted = self.inflight.reserve(name)
                if wanted == 0:
                    break
                wait = self.interval - (time.monotonic() - last_call)
                if wait > 0 and self._stopping.wait(wait):
                    self.inflight.unreserve(name, wanted)
                    break
                last_call = time.monotonic()
                self._count("receives")
                try:
                    messages = self._receive(queue_client, wanted)
                except Exception as exc:
                    self.inflight.unreserve(name, wanted)
                    self._count("receive_errors")
                    delay = backoff.next_delay(False)
                    now = time.monotonic()
                    if failing is None:
                        failing_since = last_call
                    if storage_error_kind(exc) == AUTH:
                        failing = "auth"
                        self._credentials_failed(name, exc)
                        if self.burst:
                            break  # permanent: a burst cannot finish
                    else:
                        failing = "other"
                        if self.burst and self.burst_timeout is not None:
                            left = self.burst_timeout - (now - failing_since)
                            if left <= 0:
                                with self._stats_lock:
                                    self.stats.storage_gave_up = True
                                log.error("%s did not answer for %.0fs (%s); --burst gives up on queue %s after %gs "
                                          "(--burst-timeout)", self.target.where, now - failing_since,
                                          short_reason(exc), name, self.burst_timeout,
                                          extra={"action": "storage_gave_up", "queue": name,
                                                 "endpoint": self.target.endpoint})
                                break
                            delay = min(delay, left)
                        self._storage_failed(name, exc, delay, "receive_failed")
                    self._stopping.wait(delay)
                    continue
                if failing is not None:
                    if failing == "auth":
                        self._credentials_back(name)
                    else:
                        self._storage_back(name)
                    failing = None
                self.inflight.unreserve(name, wanted - len(messages))
                if len(messages) == wanted and not self.interval:
                    busy.set()  # a full batch: more are likely waiting, let the other receivers help
                elif len(messages) < wanted:
                    busy.clear()
                if messages:
                    backoff.reset()
                    self._dispatch(name, queue_client, messages, last_call)
                    continue
                if self.burst:
                    if self._wait_queue_idle(name):
                        break  # empty, and nothing of this queue in flight could put work back
                    continue
                self._stopping.wait(backoff.next_delay(False))
        except Exception:  # a bug here must not leave the worker hanging
            log.exception("fetch loop for %s crashed", name, extra={"action": "fetch_loop_crashed", "queue": name})
        finally:
            with self._cond:
                self._cond.notify_all()

    def _receive(self, queue_client: Any, count: int) -> list[Any]:
        pages = queue_client.receive_messages(messages_per_page=count, max_messages=count,
                                              visibility_timeout=self.lease_s).by_page()
        try:
            return list(next(pages))
        except StopIteration:
            return []

    def _wait_queue_idle(self, name: str) -> bool:
        """Burst mode: after an empty receive, True if nothing of ``name`` is in flight (else wait, False)."""
        if self.inflight.count(name) == 0:
            return True
        while not self._stopping.is_set() and not self.inflight.wait_idle(name, timeout=0.5):
            pass
        return False

    def _dispatch(self, name: str, queue_client: Any, messages: list[Any], received_at: float) -> None:
        with self._stats_lock:
            self.stats.fetched += len(messages)
            self.stats.per_queue[name] += len(messages)
        for message in messages:
            if self.keeper.orphans() and self.keeper.adopt(name, message.id, message.pop_receipt, received_at):
                # Our own message whose receipt was lost: its running job keeps it, or its waiting
                # settlement used the new receipt. It does not run again.
                self._count("recovered")
                self.inflight.done(name)
                continue
            if (getattr(message, "dequeue_count", None) or 1) > 1:
                self._count("redeliveries")  # back after a crash, a lost lease or a release
            lease = self.keeper.track(name, queue_client, message.id, message.pop_receipt, received_at)
            self._ready.put(Delivery(name, queue_client, message, lease))
        if self._stopping.is_set():
            with self._cond:
                self._cond.notify_all()  # the main thread releases them


__all__ = ["Fetching"]
