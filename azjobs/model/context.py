"""What a running job can know about itself: ``azjobs.current_job()``.

Like Celery's ``self.request`` or Dramatiq's ``CurrentMessage``: the job id, which attempt
this is, the queue, and the delivery facts. Set by the core for sync and async jobs alike.

``cancelled`` says whether the job was cancelled (``azjobs.cancel``) while it runs: an attribute
read in memory, cheap to read as often as a loop likes; job state sets it when it sees the
cancel (azjobs/state/running.py reads the running jobs' records every few seconds).
"""

from __future__ import annotations

import contextvars
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

from ..errors import JobCancelled


class Cancellation:
    """Whether one run was asked to stop; set once, from any thread, and then for good.

    ``on_cancel`` callbacks run once when it is set (at once if it already is): the core cancels
    an async job's task through one.
    """

    __slots__ = ("_event", "_lock", "_callbacks")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when this is set; returns a function that forgets it."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)


@dataclass(frozen=True)
class JobContext:
    job: str
    id: str
    attempt: int
    queue: str
    enqueued_at: str
    message_id: str = ""
    dequeue_count: int = 1
    trace: Mapping[str, str] = field(default_factory=dict)
    # A periodic job's tick, a timezone-aware UTC datetime (the message carries it as ISO 8601 text).
    scheduled_at: datetime | None = None
    past_due: bool = False  # that tick fired late (missed while no worker ran, or the host's IsPastDue)
    # The per-call options the message carries (``Envelope.options``), e.g. a Django task's backend.
    options: Mapping[str, Any] = field(default_factory=dict)
    cancellation: Cancellation = field(default_factory=Cancellation, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.scheduled_at, str):  # the wire form: parsed once, here
            object.__setattr__(self, "scheduled_at", _aware(self.scheduled_at))

    @property
    def is_retry(self) -> bool:
        return self.attempt > 1

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled (``azjobs.cancel``): stop at the next safe point."""
        return self.cancellation.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise ``azjobs.JobCancelled`` if the job was cancelled (its run then ends ``cancelled``)."""
        if self.cancellation.is_set():
            raise JobCancelled(self.id)


def _aware(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("azjobs_current_job", default=None)


def current_job() -> JobContext:
    """The context of the job running in this thread or task; RuntimeError outside a job."""
    context = _current.get()
    if context is None:
        raise RuntimeError("azjobs.current_job() is only available while a job runs")
    return context


@contextmanager
def running(context: JobContext) -> Iterator[JobContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
