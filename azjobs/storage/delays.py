"""When a message becomes visible: delays and due times, within the service's 7-day visibility.

A delay is the message's initial visibility, rounded up so a job never runs early. Past the
service's 7-day maximum the message carries its due time (``due_at``) and hops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..errors import DelayError
from ..model.envelope import format_time, utcnow

# The service's maximum visibility timeout: a longer delay hops (see the executor's deferral).
MAX_VISIBILITY = timedelta(days=7)
NEVER_EXPIRE = -1


@dataclass(frozen=True)
class Delivery:
    """When a message becomes visible, and the due time it carries when that is beyond one hop."""

    visibility_timeout: int  # seconds
    due_at: str | None = None


def plan_delivery(delay: float | timedelta | None = None, at: datetime | None = None, now: datetime | None = None) -> Delivery:
    """Turn ``delay``/``at`` into an initial visibility; past 7 days the message carries ``due_at``."""
    now = now or utcnow()
    if delay is not None and at is not None:
        raise DelayError("give either a delay or a time, not both")
    if at is not None:
        if not isinstance(at, datetime):
            raise DelayError(f"enqueue_at takes a datetime, got {at!r}")
        if at.tzinfo is None:
            raise DelayError("enqueue_at needs a timezone-aware datetime (e.g. datetime.now(timezone.utc) + ...)")
        seconds = (at - now).total_seconds()
    elif delay is not None:
        if isinstance(delay, timedelta):
            seconds = delay.total_seconds()
        elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
            try:
                seconds = float(delay)
            except OverflowError:  # an int beyond any float
                seconds = math.inf if delay > 0 else -math.inf
        else:
            raise DelayError(f"a delay is seconds (int/float) or a timedelta, got {_shown(delay)}")
        if math.isnan(seconds) or seconds < 0:
            raise DelayError(f"a delay must be zero or more seconds, got {_shown(delay)}")
        if math.isinf(seconds):
            raise DelayError(f"delay {_shown(delay)} is too far in the future: a due time must be before the year 10000")
    else:
        return Delivery(0)
    seconds = max(0.0, seconds)
    visibility = math.ceil(seconds)  # never run early
    if visibility <= MAX_VISIBILITY.total_seconds():
        return Delivery(visibility)
    try:
        due = now + timedelta(seconds=seconds)
        # The wire format keeps milliseconds: round up so a worker never sees the job as due early.
        due += timedelta(microseconds=(1000 - due.microsecond % 1000) % 1000)
        due_text = format_time(due)
    except (OverflowError, ValueError):
        what = f"enqueue_at time {_shown(at)}" if at is not None else f"delay {_shown(delay)}"
        raise DelayError(f"{what} is too far in the future: a due time must be before the year 10000") from None
    return Delivery(int(MAX_VISIBILITY.total_seconds()), due_text)


def _shown(value: Any, width: int = 60) -> str:
    """A short repr for error messages (an integer too long for repr included)."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__} of {value.bit_length() if isinstance(value, int) else '?'} bits>"
    return text if len(text) <= width else text[: width - 1] + "…"


__all__ = ["MAX_VISIBILITY", "NEVER_EXPIRE", "Delivery", "plan_delivery"]
