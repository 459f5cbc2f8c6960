"""The wire format: one versioned JSON envelope per queue message.

A message body is the envelope's UTF-8 JSON, base64-encoded by default (what the
Functions host expects) or plain with ``messageEncoding: none``. Nothing in a
message is ever unpickled or imported: it can only name a registered job.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Mapping

from ..errors import ArgumentError, EnvelopeError, PayloadTooLargeError
from .trace_context import carried

FORMAT_VERSION = 1
FORMAT_KEY = "azjobs"
POISON_RECORD_KEY = "azjobs_poison"  # the version key of a poison record (azjobs.model.poison_record)
ENCODINGS = ("base64", "none")
# The service's limit on a message as sent (after encoding).
MAX_MESSAGE_BYTES = 64 * 1024


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    """UTC ISO 8601 with a Z, milliseconds; naive datetimes are refused."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: give a timezone-aware datetime (e.g. tzinfo=timezone.utc)")
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no timezone")
    return moment.astimezone(timezone.utc)


# How deep arguments may nest: far more than real data needs, and shallow enough that every
# reader's JSON parser (and the worker's recursion limit) copes; a cycle is caught here too.
MAX_NESTING = 100


def to_json_value(value: Any, where: str, _depth: int = 0, _root: str | None = None) -> Any:
    """Normalize ``value`` to plain JSON types, or raise ArgumentError naming ``where``.

    Tuples become lists; dict keys must be strings; floats must be finite; strings must be
    encodable as UTF-8 (no lone surrogates); integers must fit Python's integer-to-text limit;
    nesting is limited to MAX_NESTING levels. Anything else (objects, sets, bytes, datetimes)
    is refused so it fails in the caller, before any network call.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        _check_text(value, where)
        return value
    if isinstance(value, int):
        return _check_int(int(value), where)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ArgumentError(f"{where} is {value!r}, which JSON cannot carry")
        return float(value)
    root = where if _root is None else _root
    if isinstance(value, (list, tuple, dict)) and _depth >= MAX_NESTING:
        raise ArgumentError(
            f"{root} is nested more than {MAX_NESTING} levels deep (or contains itself); "
            "pass flatter data or a reference"
        )
    if isinstance(value, (list, tuple)):
        return [to_json_value(item, f"{where}[{i}]", _depth + 1, root) for i, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ArgumentError(f"{where} has key {key!r} of type {type(key).__name__}; JSON keys must be strings")
            _check_text(key, f"{where} key {key!r}")
            out[key] = to_json_value(item, f"{where}[{key!r}]", _depth + 1, root)
        return out
    raise ArgumentError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which is not JSON-serializable; "
        "pass plain data (str, int, float, bool, None, list, dict) such as an id, and load the object in the job"
    )


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ArgumentError(
            f"{where} contains {text[exc.start]!r} at position {exc.start}, a lone surrogate that UTF-8 cannot "
            "encode; pass valid text (decode bytes with errors='replace', or send them as base64)"
        ) from None


def _check_int(number: int, where: str) -> int:
    # Python refuses to turn very long integers into text (sys.set_int_max_str_digits), so
    # neither json.dumps here nor json.loads in the worker could handle them.
    if number.bit_length() > 1000:
        try:
            int.__repr__(number)
        except ValueError:
            limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
            raise ArgumentError(
                f"{where} is an integer with more than {limit:,} digits, over Python's limit for converting "
                "integers to text, so JSON cannot carry it; pass it as a string"
            ) from None
    return number


@dataclass(frozen=True)
class Envelope:
    """One job invocation as it travels on a queue."""

    job: str
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempt: int = 1
    enqueued_at: str = field(default_factory=lambda: format_time(utcnow()))
    queue: str | None = None
    # When the job may run, for delays longer than one message's visibility (7 days).
    due_at: str | None = None
    # Per-call overrides of job options that must travel (e.g. max_retries).
    options: Mapping[str, Any] = field(default_factory=dict)
    # Trace context: W3C traceparent/tracestate (and baggage when opted in), as azjobs.model.trace_context.carried
    # reads it: what does not fit is dropped on decode.
    trace: Mapping[str, str] = field(default_factory=dict)
    # Time of the first failed attempt, kept across retries for the poison record.
    first_failed_at: str | None = None
    # Claim check: where the arguments live when they were too large for a message.
    payload_ref: str | None = None
    # Periodic jobs: the schedule tick this run is for, and whether it fired late (a tick missed while
    # no worker ran, or the host's IsPastDue).
    scheduled_at: str | None = None
    past_due: bool = False
    # A workflow step: {"id": workflow id, "task": history id, "queue": workflows queue}; the core
    # reports the step's outcome there instead of retrying it (azjobs/workflows/steps.py).
    workflow: Mapping[str, Any] | None = None

    @classmethod
    def build(cls, job: str, args: tuple = (), kwargs: Mapping[str, Any] | None = None, **fields: Any) -> "Envelope":
        """Build an envelope, validating the arguments as JSON (errors name the argument)."""
        norm_args = tuple(to_json_value(a, f"args[{i}]") for i, a in enumerate(args))
        norm_kwargs = {}
        for key, value in (kwargs or {}).items():
            norm_kwargs[key] = to_json_value(value, f"kwargs[{key!r}]")
        return cls(job=job, args=norm_args, kwargs=norm_kwargs, **fields)

    def evolve(self, **changes: Any) -> "Envelope":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            FORMAT_KEY: FORMAT_VERSION,
            "id": self.id,
            "job": self.job,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "attempt": self.attempt,
            "enqueued_at": self.enqueued_at,
        }
        for name in ("queue", "due_at", "first_failed_at", "payload_ref"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.options:
            data["options"] = dict(self.options)
        if self.trace:
            data["trace"] = dict(self.trace)
        if self.scheduled_at is not None:
            data["scheduled_at"] = self.scheduled_at
        if self.past_due:
            data["past_due"] = True
        if self.workflow:
            data["workflow"] = dict(self.workflow)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def encode(self, encoding: str = "base64") -> str:
        """The message text to send, checked against the service's size limit."""
        return encode_text(self.to_json(), encoding)

    @classmethod
    def from_dict(cls, data: Any) -> "Envelope":
        if isinstance(data, dict) and FORMAT_KEY not in data and POISON_RECORD_KEY in data:
            raise EnvelopeError("the body is an azjobs poison record, not a job message (it was sent to a job "
                                "queue as it was); `azjobs poison requeue` sends back the job inside it", "not_envelope")
        if not isinstance(data, dict) or FORMAT_KEY not in data:
            raise EnvelopeError("JSON is not an azjobs envelope (no format version)", "not_envelope")
        version = data[FORMAT_KEY]
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise EnvelopeError(
                f"envelope format version {version!r} is not supported (this azjobs reads {FORMAT_VERSION})",
                "unknown_version",
            )
        job = _field(data, "job", str)
        if not job:
            raise EnvelopeError("envelope field 'job' is empty", "not_envelope")
        attempt = _field(data, "attempt", int, default=1)
        if isinstance(attempt, bool) or attempt < 1:
            raise EnvelopeError(f"envelope field 'attempt' must be a positive integer, got {attempt!r}", "not_envelope")
        for name in ("enqueued_at", "due_at", "first_failed_at"):
            text = data.get(name)
            if text is not None:
                try:
                    parse_time(_field(data, name, str))
                except ValueError as exc:
                    raise EnvelopeError(f"envelope field {name!r}: {exc}", "not_envelope") from None
        return cls(
            job=job,
            args=tuple(_field(data, "args", list, default=[])),
            kwargs=_field(data, "kwargs", dict, default={}),
            id=_field(data, "id", str),
            attempt=attempt,
            enqueued_at=_field(data, "enqueued_at", str),
            queue=_field(data, "queue", str, default=None),
            due_at=_field(data, "due_at", str, default=None),
            options=_field(data, "options", dict, default={}),
            trace=carried(data.get("trace")),  # telemetry: dropped, not refused, when it does not fit
            first_failed_at=_field(data, "first_failed_at", str, default=None),
            payload_ref=_field(data, "payload_ref", str, default=None),
            **_schedule_fields(data),
            workflow=_field(data, "workflow", dict, default=None),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> "Envelope":
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EnvelopeError(f"message body is not UTF-8: {exc}", "not_utf8") from None
        try:
            # NaN, Infinity and overflowing numbers are not JSON: an envelope must re-encode as it came.
            data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        except (ValueError, RecursionError) as exc:
            hint = ""
            if json_object(unbase64(text)) is not None:
                hint = "; the body is base64-encoded JSON: " + encoding_hint("base64", "none")
            raise EnvelopeError(f"message body is not JSON: {_first_line(exc)}{hint}", "not_json") from None
        return cls.from_dict(data)

    @classmethod
    def decode(cls, body: str | bytes, encoding: str = "base64") -> "Envelope":
        """Decode a message body as received from the queue (still encoded)."""
        return cls.from_json(decode_body(body, encoding))


_MISSING = object()


def _schedule_fields(data: dict) -> dict[str, Any]:
    """``scheduled_at`` and ``past_due``, read tolerantly: they describe a run, so a malformed one is dropped
    rather than costing the job its run."""
    out: dict[str, Any] = {}
    text = data.get("scheduled_at")
    if isinstance(text, str):
        try:
            parse_time(text)
            out["scheduled_at"] = text
        except ValueError:
            pass
    if data.get("past_due") is True:
        out["past_due"] = True
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _field(data: dict, name: str, kind: type, default: Any = _MISSING) -> Any:
    if name not in data or data[name] is None:
        if default is _MISSING:
            raise EnvelopeError(f"envelope has no {name!r} field", "not_envelope")
        return default
    value = data[name]
    if not isinstance(value, kind):
        raise EnvelopeError(
            f"envelope field {name!r} must be {kind.__name__}, got {type(value).__name__}", "not_envelope"
        )
    return value


def check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise ValueError(f"messageEncoding must be one of {ENCODINGS}, got {encoding!r}")
    return encoding


def encode_text(text: str, encoding: str = "base64") -> str:
    """Encode message text for the wire and enforce the 64 KiB limit before any network call."""
    check_encoding(encoding)
    raw = text.encode("utf-8")
    wire = base64.b64encode(raw).decode("ascii") if encoding == "base64" else text
    size = len(wire.encode("utf-8"))
    if size > MAX_MESSAGE_BYTES:
        limit = "48 KiB (49,152 bytes) of JSON with base64" if encoding == "base64" else "64 KiB"
        raise PayloadTooLargeError(
            f"message is {size:,} bytes encoded ({len(raw):,} bytes of JSON); a queue message holds at most "
            f"{MAX_MESSAGE_BYTES:,} bytes, i.e. {limit}. Pass a reference (a blob name, a row id) instead"
        )
    return wire


def decode_body(body: str | bytes, encoding: str = "base64") -> bytes:
    """Undo the wire encoding; raise EnvelopeError(reason='not_base64') on bad base64."""
    check_encoding(encoding)
    if encoding == "none":
        return body.encode("utf-8") if isinstance(body, str) else body
    try:
        data = body.encode("ascii") if isinstance(body, str) else body
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        hint = ""
        if json_object(body) is not None:
            hint = "; the body is plain JSON: " + encoding_hint("none", "base64")
        raise EnvelopeError(f"message body is not valid base64: {exc}{hint}", "not_base64") from None


def encoding_hint(sent_with: str, read_with: str) -> str:
    """What to tell a user whose producer and worker disagree on the message encoding."""
    return (f"this looks like a message sent with messageEncoding={sent_with}, read with messageEncoding={read_with}; "
            "producers and workers must agree (host.json extensions.queues.messageEncoding, "
            "azjobs.configure(message_encoding=...))")


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def unbase64(body: str | bytes) -> bytes | None:
    """``body`` with one base64 layer undone, or None if it is not base64."""
    try:
        data = body.encode("ascii") if isinstance(body, str) else bytes(body)
        data = data.strip()
        return base64.b64decode(data, validate=True) if data else None
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def json_object(body: str | bytes | None) -> dict | None:
    """``body`` parsed as a JSON object, or None (used for hints and recognising records)."""
    if body is None:
        return None
    try:
        text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
        if not text.lstrip().startswith("{"):
            return None
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
