"""Writing an outcome durably: retry copies, deferrals and poison records.

The execution core decides what a message's outcome is; the ``Recorder`` writes it. Every
write goes to storage before the caller settles the message (the host's delete, or the
worker's), and a write that fails raises ``Redeliver`` so the message is released instead:
a duplicate is preferred to a loss.

A claim-checked message keeps its payload blob: the blob is removed only once the
message itself is gone (see ``Result.payload_ref``), never here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import PayloadTooLargeError
from ..model.envelope import Envelope, format_time
from ..model.poison_record import ErrorInfo, PoisonRecord, raw_text
from ..model.queue_names import poison_queue_name
from ..model.secrets import describe, get_logger, redact
from ..storage.delays import MAX_VISIBILITY, NEVER_EXPIRE
from ..storage.payloads import POISON_PREFIX

if TYPE_CHECKING:
    from ..model.outcome import MessageInfo
    from .executor import Executor

log = get_logger("azjobs")


class Redeliver(Exception):
    """The core could not settle the message durably: release it for redelivery."""

    def __init__(self, message: str, envelope: Envelope | None = None) -> None:
        super().__init__(redact(message))
        self.envelope = envelope


@dataclass(frozen=True)
class DeadLetter:
    """The decision to poison one delivery, with everything its record needs."""

    info: "MessageInfo"
    error: ErrorInfo
    envelope: Envelope | None = None
    raw: bytes | str | None = None  # the body, when it is not a usable envelope
    raw_form: str = "decoded"  # "wire" when undoing the message encoding failed
    attempts: int | None = None  # default: the envelope's attempt (1 without one)
    first_failed_at: str | None = None  # default: the envelope's
    detail: str = ""
    arguments: tuple[tuple, dict] | None = None  # a claim-checked envelope's arguments, already loaded


class Recorder:
    """Writes what the core decided, through the executor's client and payload store."""

    def __init__(self, owner: "Executor") -> None:
        self._owner = owner

    # -- retries and deferrals ---------------------------------------------
    def retry(self, envelope: Envelope, info: "MessageInfo", retry_in: float, first_failed_at: str) -> tuple[Envelope, int]:
        """Write the next attempt, visible in ``retry_in`` seconds; returns it and the delay used."""
        delay = min(max(0, math.ceil(retry_in)), int(MAX_VISIBILITY.total_seconds()))
        copy = envelope.evolve(attempt=envelope.attempt + 1, first_failed_at=first_failed_at)
        self.write(info.queue, self._copy_text(copy, envelope), delay, None, envelope, "retry")
        return copy, delay

    def defer(self, envelope: Envelope, info: "MessageInfo", hop_s: int) -> None:
        """The same message again (same id and payload reference), never expiring while it waits."""
        self.write(info.queue, self._copy_text(envelope, envelope), hop_s, NEVER_EXPIRE, envelope, "deferral")

    # -- poison --------------------------------------------------------------
    def dead_letter(self, decision: DeadLetter) -> PoisonRecord:
        """Write the poison record to ``<queue>-poison`` (created if missing, as the host does).

        The record carries the envelope with its arguments inline (loaded back from Blob
        Storage for a claim-checked message) so it can be replayed.
        """
        info, envelope = decision.info, decision.envelope
        poison = poison_queue_name(info.queue)
        if poison is None:
            # The host keeps no poison twin for such a queue (already "-poison", or too long).
            raise Redeliver(f"queue {info.queue!r} has no poison queue; leaving the message for redelivery", envelope)
        attempts = decision.attempts
        if attempts is None:
            attempts = envelope.attempt if envelope is not None else 1
        first_failed_at = decision.first_failed_at
        if first_failed_at is None and envelope is not None:
            first_failed_at = envelope.first_failed_at
        record_envelope = envelope
        if envelope is not None and envelope.payload_ref is not None:
            try:
                if decision.arguments is not None:
                    record_envelope = envelope.evolve(args=decision.arguments[0], kwargs=decision.arguments[1],
                                                      payload_ref=None)
                else:
                    record_envelope = self._owner.payloads.inline(envelope)
            except Exception as exc:  # missing or unreadable: the record keeps the reference
                log.warning("poison record of %s keeps payload reference %s: %s", envelope.id, envelope.payload_ref,
                            exc, extra={"action": "payload_inline_failed", "job_id": envelope.id})
        text, how = raw_text(decision.raw) if decision.raw is not None else (None, "text")
        record = PoisonRecord(
            queue=info.queue, error=decision.error, envelope=record_envelope, raw_body=text, raw_body_encoding=how,
            raw_form=decision.raw_form, attempts=attempts, first_failed_at=first_failed_at,
            last_failed_at=format_time(self._owner.clock()), host=self._owner.host, message_id=info.message_id,
            dequeue_count=info.dequeue_count,
        )
        self.write(poison, self._poison_text(record, envelope), 0, None, envelope, "poison record", create=True)
        return record

    # -- writing -------------------------------------------------------------
    def write(self, queue: str, text: str, visibility_s: int, ttl: int | None, envelope: Envelope | None,
              what: str, *, create: bool | None = None) -> None:
        try:
            self._owner.client.send_text(queue, text, visibility_timeout=visibility_s, time_to_live=ttl,
                                         create=create)
        except Exception as exc:
            job = f"job {envelope.job} {envelope.id}: " if envelope is not None else ""
            log.error("%scould not write the %s to %s: %s; releasing the message for redelivery", job, what, queue,
                      exc, extra={"action": "settle_failed", "queue": queue, "what": what,
                                  "job": envelope.job if envelope is not None else None,
                                  "job_id": envelope.id if envelope is not None else None})
            raise Redeliver(f"could not write the {what} to {queue}: {exc}", envelope) from exc

    def _copy_text(self, copy: Envelope, original: Envelope) -> str:
        """Message text for a retry or deferral copy; one over the limit has its arguments claim-checked.

        A copy can outgrow a message that fitted: a retry adds fields, and re-encoding may
        spell the JSON differently from the producer.
        """
        encoding = self._owner.settings.message_encoding
        try:
            return copy.encode(encoding)
        except PayloadTooLargeError:
            if copy.payload_ref is not None:
                raise Redeliver("the copy is over the message limit even without its arguments", original)
        try:
            copy = self._owner.payloads.offload(copy)
        except Exception as exc:
            raise Redeliver(f"could not store the copy's arguments in Blob Storage: {exc}", original) from exc
        return copy.encode(encoding)

    def _poison_text(self, record: PoisonRecord, envelope: Envelope | None) -> str:
        """The record as message text; too large, it goes whole to Blob Storage behind a stub."""
        encoding = self._owner.settings.message_encoding
        try:
            return record.encode(encoding, trim=False)
        except PayloadTooLargeError:
            pass
        try:
            ref = self._owner.payloads.put(f"{POISON_PREFIX}{record.id}.json", record.to_json().encode("utf-8"))
        except Exception as exc:
            log.error("job %s %s: could not store the large poison record %s: %s", record.job or "?",
                      record.envelope_id or "-", record.id, exc,
                      extra={"action": "settle_failed", "queue": record.queue, "what": "poison record blob",
                             "job": record.job, "job_id": record.envelope_id})
            raise Redeliver(f"could not store the poison record in Blob Storage: {exc}", envelope) from exc
        return record.stub(ref).encode(encoding)


__all__ = ["DeadLetter", "Recorder", "Redeliver", "describe"]
