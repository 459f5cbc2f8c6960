"""The envelope's ``trace`` field: W3C trace context, and what it may hold.

The field carries W3C ``traceparent`` / ``tracestate`` (and W3C Baggage only when the process
opts in: baggage may hold anything, a user's e-mail address, and would otherwise sit in the
message, its retry copies and its poison record). ``carried`` is the one rule for what the
field holds, applied when it is written (``azjobs.telemetry.tracing``) and when a message is
decoded (``azjobs.model.envelope``); ``check_given`` refuses an explicit ``trace=`` a worker
would drop. Pure logic: nothing of OpenTelemetry is imported here.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..errors import ArgumentError

# What the envelope's ``trace`` field may hold: these keys only, each an ASCII string within these bounds
# (characters, list-members; 0 is no member bound). traceparent version 00 is 55 characters; tracestate
# has at most 32 list-members and 512 characters is what every vendor must pass on (W3C Trace Context);
# baggage has the limits OpenTelemetry's W3C Baggage propagator applies (8192 bytes, 180 list-members).
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
BAGGAGE = "baggage"
BOUNDS = {TRACEPARENT: (55, 0), TRACESTATE: (512, 32), BAGGAGE: (8192, 180)}
BAGGAGE_SETTING = "AZJOBS_PROPAGATE_BAGGAGE"

_baggage: bool | None = None  # propagate_baggage(); None: the AZJOBS_PROPAGATE_BAGGAGE setting decides


def propagate_baggage(on: bool = True) -> None:
    """Carry W3C Baggage in the messages this process sends, and read it from those it works (off by default).

    Both ends must opt in: a consumer that has not drops a message's baggage when it decodes it.
    """
    global _baggage
    _baggage = bool(on)


def baggage_propagated() -> bool:
    """Whether baggage travels: ``propagate_baggage()``, else the ``AZJOBS_PROPAGATE_BAGGAGE`` setting."""
    if _baggage is not None:
        return _baggage
    return os.environ.get(BAGGAGE_SETTING, "").strip().lower() in ("1", "true", "yes", "on")


def _members(text: str) -> int:
    return sum(1 for member in text.split(",") if member.strip(" \t"))


def _refusal(key: str, value: Any, baggage: bool) -> str:
    """Why ``key: value`` is not carried in a trace field ("" when it is)."""
    if key not in BOUNDS:
        return f"{key!r} is not carried (only {TRACEPARENT}, {TRACESTATE} and, with baggage on, {BAGGAGE})"
    if key == BAGGAGE and not baggage:
        return (f"{BAGGAGE!r} is carried only with baggage propagation on (azjobs.configure(propagate_baggage=True) "
                f"or {BAGGAGE_SETTING}=1, in the producer and the worker)")
    if not isinstance(value, str) or not value or not value.isascii():
        return f"{key!r} must be a non-empty ASCII string, got {type(value).__name__}"
    chars, members = BOUNDS[key]
    if len(value) > chars:
        return f"{key!r} is {len(value):,} characters, over its {chars:,}"
    if members and _members(value) > members:
        return f"{key!r} has {_members(value)} list-members, over its {members}"
    return ""


def carried(trace: Any, baggage: bool | None = None) -> dict[str, str]:
    """The part of a ``trace`` field azjobs carries; the rest is dropped, without a word.

    Each of ``traceparent``, ``tracestate`` (only beside a traceparent) and ``baggage`` (only when
    ``baggage``, by default ``baggage_propagated()``) is kept when it is an ASCII string within its
    ``BOUNDS``; other keys, other types and longer values are dropped, and a field that is not an
    object is no context at all. The field is telemetry: what does not fit costs a message its
    trace, never its run (as a malformed ``scheduled_at`` is dropped). Only the known keys are
    looked up, so a field with thousands of keys costs no more than its JSON.
    """
    if not isinstance(trace, Mapping) or not trace:
        return {}
    on = baggage_propagated() if baggage is None else baggage
    out: dict[str, str] = {}
    for key in BOUNDS:
        value = trace.get(key)
        if value is not None and not _refusal(key, value, on):
            out[key] = value
    if TRACEPARENT not in out:
        out.pop(TRACESTATE, None)
    return out


def check_given(trace: Mapping[str, Any]) -> None:
    """ArgumentError naming the first part of an explicit ``trace=`` that ``carried`` would drop."""
    on = baggage_propagated()
    for key, value in trace.items():
        reason = _refusal(str(key), value, on)
        if reason:
            raise ArgumentError(f"trace={dict(trace)!r:.200}: {reason}")
    if TRACESTATE in trace and TRACEPARENT not in trace:
        raise ArgumentError(f"trace={dict(trace)!r:.200}: a {TRACESTATE!r} is carried only beside a {TRACEPARENT!r}")


__all__ = ["BAGGAGE", "BAGGAGE_SETTING", "BOUNDS", "TRACEPARENT", "TRACESTATE", "baggage_propagated", "carried",
           "check_given", "propagate_baggage"]
