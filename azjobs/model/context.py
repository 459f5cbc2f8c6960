"""What a running job can know about itself: ``azjobs.current_job()``.

Like Celery's ``self.request`` or Dramatiq's ``CurrentMessage``: the job id, which attempt
this is, the queue, and the delivery facts. Set by the core for sync and async jobs alike.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping


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

    def __post_init__(self) -> None:
        if isinstance(self.scheduled_at, str):  # the wire form: parsed once, here
            object.__setattr__(self, "scheduled_at", _aware(self.scheduled_at))

    @property
    def is_retry(self) -> bool:
        return self.attempt > 1


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
