"""Poison records: what azjobs writes to ``<queue>-poison`` — the message plus why it failed.

A record keeps the original envelope (or the raw body when it could not be decoded) and
the error: type, message, traceback, attempts, first and last failure, queue and host.
The Functions host's own poison copies (the bare body, no error) are read too.

A record is itself an azjobs message (a JSON object with an ``azjobs_poison`` version
key) so tooling can list and replay it. A record too large for a queue message is
stored whole in Blob Storage and the poison queue holds a stub naming it
(``record_ref``) with the error but without the envelope or raw body.
"""

from __future__ import annotations

import base64
import json
import traceback as tb
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import EnvelopeError, PayloadTooLargeError
from .envelope import (
    ENCODINGS,
    FORMAT_KEY,
    MAX_MESSAGE_BYTES,
    POISON_RECORD_KEY,
    Envelope,
    decode_body,
    encode_text,
    format_time,
    json_object,
    unbase64,
    utcnow,
)
from .secrets import redact

POISON_KEY = POISON_RECORD_KEY
POISON_VERSION = 1
MAX_TRACEBACK_CHARS = 16_000


@dataclass(frozen=True)
class ErrorInfo:
    type: str
    message: str
    traceback: str = ""
    reason: str = "job_failed"

    @classmethod
    def from_exception(cls, error: BaseException, reason: str = "job_failed") -> "ErrorInfo":
        kind = type(error)
        name = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
        text = "".join(tb.format_exception(kind, error, error.__traceback__))
        # Chained SDK errors carry request URLs (a SAS signature) and connection strings.
        return cls(type=name, message=redact(str(error)), traceback=redact(text), reason=reason)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback, "reason": self.reason}


@dataclass(frozen=True)
class PoisonRecord:
    """One dead-lettered message, as stored in the poison queue."""

    queue: str
    error: ErrorInfo
    envelope: Envelope | None = None
    raw_body: str | None = None  # the body, when it was not a usable envelope
    raw_body_encoding: str = "text"  # "text" or "base64" (bytes that were not UTF-8)
    # "decoded": the body after the queue's message encoding was undone;
    # "wire": the message text exactly as it was on the queue (it was not valid base64).
    raw_form: str = "decoded"
    attempts: int = 1
    first_failed_at: str | None = None
    last_failed_at: str = field(default_factory=lambda: format_time(utcnow()))
    host: str = ""
    message_id: str | None = None
    dequeue_count: int | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # True for a bare body the Functions host poisoned (no error information from azjobs).
    from_host: bool = False
    # Set on a stub whose full record lives in Blob Storage (see azjobs.storage.payloads).
    record_ref: str | None = None
    # The job name and id, kept on a stub that has no envelope.
    job_name: str | None = None
    job_id: str | None = None

    @property
    def job(self) -> str | None:
        return self.envelope.job if self.envelope else self.job_name

    @property
    def envelope_id(self) -> str | None:
        return self.envelope.id if self.envelope else self.job_id

    def stub(self, record_ref: str) -> "PoisonRecord":
        """This record without its envelope and raw body, pointing at the full copy in Blob Storage."""
        return replace(self, envelope=None, raw_body=None, record_ref=record_ref, job_name=self.job,
                       job_id=self.envelope_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            POISON_KEY: POISON_VERSION,
            "id": self.id,
            "queue": self.queue,
            "envelope": self.envelope.to_dict() if self.envelope else None,
            "raw_body": self.raw_body,
            "raw_body_encoding": self.raw_body_encoding,
            "raw_form": self.raw_form,
            "job": self.job,
            "job_id": self.envelope_id,
            "record_ref": self.record_ref,
            "from_host": self.from_host,
            "error": self.error.to_dict(),
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at or self.last_failed_at,
            "last_failed_at": self.last_failed_at,
            "host": self.host,
            "message_id": self.message_id,
            "dequeue_count": self.dequeue_count,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    def encode(self, encoding: str = "base64", *, trim: bool = True) -> str:
        """Wire text for the poison queue.

        The traceback is kept to its last MAX_TRACEBACK_CHARS; with ``trim`` it is cut
        further if the record is still over the message limit. Raises
        PayloadTooLargeError if it cannot fit (store it in Blob Storage and send a stub).
        """
        record = self
        for limit in (MAX_TRACEBACK_CHARS, 4_000, 500, 0) if trim else (MAX_TRACEBACK_CHARS,):
            text = record.error.traceback
            if len(text) > limit:
                trimmed = ("… (trimmed)\n" + text[-limit:]) if limit else "(trimmed to fit the message limit)"
                record = replace(record, error=replace(record.error, traceback=trimmed))
            try:
                return encode_text(record.to_json(), encoding)
            except PayloadTooLargeError:
                continue
        raise PayloadTooLargeError("poison record is over the message limit" + (" even without its traceback" if trim else ""))

    def replay_envelope(self) -> Envelope | None:
        """The envelope to send back to its queue: attempts reset, failure and due times cleared."""
        if self.envelope is None:
            return None
        return self.envelope.evolve(attempt=1, first_failed_at=None, due_at=None)

    def replay_text(self, encoding: str = "base64") -> str | None:
        """For a record without an envelope: the message text to send back, the body as it was."""
        if self.raw_body is None:
            return None
        if self.raw_form == "wire":
            return self.raw_body
        raw = self.raw_bytes() or b""
        if encoding == "base64":
            text = base64.b64encode(raw).decode("ascii")
            if len(text) > MAX_MESSAGE_BYTES:
                raise PayloadTooLargeError("the raw body is over the message limit")
            return text
        return encode_text(raw.decode("utf-8"), encoding)

    def raw_bytes(self) -> bytes | None:
        if self.raw_body is None:
            return None
        if self.raw_body_encoding == "base64":
            return base64.b64decode(self.raw_body)
        return self.raw_body.encode("utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PoisonRecord":
        error = data.get("error") or {}
        envelope = Envelope.from_dict(data["envelope"]) if data.get("envelope") else None
        return cls(
            queue=data.get("queue", ""),
            error=ErrorInfo(
                type=str(error.get("type", "")), message=str(error.get("message", "")),
                traceback=str(error.get("traceback", "")), reason=str(error.get("reason", "")),
            ),
            envelope=envelope,
            raw_body=data.get("raw_body"),
            raw_body_encoding=data.get("raw_body_encoding") or "text",
            raw_form=data.get("raw_form") or "decoded",
            record_ref=data.get("record_ref"),
            job_name=data.get("job") if envelope is None and isinstance(data.get("job"), str) else None,
            job_id=data.get("job_id") if envelope is None and isinstance(data.get("job_id"), str) else None,
            from_host=bool(data.get("from_host", False)),
            attempts=int(data.get("attempts") or 1),
            first_failed_at=data.get("first_failed_at"),
            last_failed_at=data.get("last_failed_at") or "",
            host=data.get("host") or "",
            message_id=data.get("message_id"),
            dequeue_count=data.get("dequeue_count"),
            id=data.get("id") or str(uuid.uuid4()),
        )

    @classmethod
    def decode(cls, body: str, encoding: str = "base64", queue: str = "") -> "PoisonRecord":
        """Read a poison-queue message: an azjobs record, a host-poisoned envelope, or anything else.

        An azjobs record is recognised in either message encoding (a worker configured with
        another ``messageEncoding`` than ``encoding`` wrote it); ``find_record`` tells which.
        """
        found = find_record(body, encoding)
        if found is not None:
            return found[0]
        try:
            raw = decode_body(body, encoding)
        except EnvelopeError as exc:
            # The host poisons a body that is not base64 as it was: keep it verbatim.
            return cls(queue=queue, raw_body=body, raw_form="wire", from_host=True,
                       error=ErrorInfo("EnvelopeError", str(exc), reason=exc.reason))
        try:
            envelope = Envelope.from_json(raw)
            return cls(queue=queue, envelope=envelope, attempts=envelope.attempt, from_host=True,
                       error=ErrorInfo("", "poisoned by the Functions host (no error recorded)", reason="host_poison"))
        except EnvelopeError as exc:
            text, how = raw_text(raw)
            return cls(queue=queue, raw_body=text, raw_body_encoding=how, from_host=True,
                       error=ErrorInfo("EnvelopeError", str(exc), reason=exc.reason))


def _record_from(data: dict | None) -> "PoisonRecord | None":
    if not isinstance(data, dict) or data.get(POISON_KEY) != POISON_VERSION or isinstance(data.get(POISON_KEY), bool):
        return None
    try:
        return PoisonRecord.from_dict(data)
    except (EnvelopeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def find_record(body: str, encoding: str = "base64") -> tuple[PoisonRecord, str] | None:
    """The azjobs poison record in a poison-queue message and the encoding it was written in.

    ``encoding`` is tried first, then the other one: a record is never mistaken for a job's
    body because the worker that wrote it used another ``messageEncoding`` than the reader.
    """
    for candidate in (encoding, *(e for e in ENCODINGS if e != encoding)):
        try:
            raw = decode_body(body, candidate)
        except (EnvelopeError, ValueError):
            continue
        record = _record_from(json_object(raw))
        if record is not None:
            return record, candidate
    return None


def _text_body(record: PoisonRecord) -> str | None:
    """The raw body of ``record`` when it is text (bytes that were not UTF-8 cannot hold JSON)."""
    return record.raw_body if record.raw_body_encoding == "text" else None


def _layers(text: str | None) -> list[bytes]:
    """A raw body as it is, and with one base64 layer undone (when it is base64)."""
    if text is None:
        return []
    found = [text.encode("utf-8")]
    unwrapped = unbase64(text)
    if unwrapped is not None:
        found.append(unwrapped)
    return found


def nested_record(record: PoisonRecord) -> PoisonRecord | None:
    """A poison record held as the raw body of ``record`` (a record that was sent back to its
    queue as if it were a job, and poisoned again)."""
    if record.envelope is not None or record.raw_body is None:
        return None
    for layer in _layers(_text_body(record)):
        inner = _record_from(json_object(layer))
        if inner is not None:
            return inner
    return None


def misencoded_envelope(record: PoisonRecord) -> Envelope | None:
    """The azjobs envelope in the raw body of ``record`` when it failed only because of its message
    encoding (plain JSON read as base64, or base64 read as plain JSON); None otherwise."""
    if record.envelope is not None or record.raw_body is None:
        return None
    if record.error.reason not in ("not_base64", "not_json"):
        return None
    for layer in _layers(_text_body(record)):
        data = json_object(layer)
        if data is not None and FORMAT_KEY in data:
            try:
                return Envelope.from_dict(data)
            except EnvelopeError:
                return None
    return None


def raw_text(body: bytes | str) -> tuple[str, str]:
    """A raw body as JSON-safe text: UTF-8 as is, anything else base64."""
    if isinstance(body, str):
        return body, "text"
    try:
        return body.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"
