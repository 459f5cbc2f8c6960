"""A poison queue as azjobs reads it: its records, found by any of a job's ids, replayed and purged.

Used by ``azjobs poison`` and the dashboard. Replaying is safe to repeat: a poison message is
deleted only after its copy is back on the job queue, so a crash in between leaves a
duplicate, never a loss. A poison record is recognised whatever ``messageEncoding`` its
writer used, and only the job inside it is ever sent back. A workflow's records are not
requeued (``RequeueRefused``): the workflow already holds that step's failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from ..errors import AzjobsError, ConfigurationError, QueueNotFoundError
from ..model.envelope import decode_body
from ..model.poison_record import PoisonRecord, find_record, misencoded_envelope, nested_record
from ..model.queue_names import POISON_SUFFIX, poison_queue_name
from ..model.secrets import get_logger
from ..storage.client import Client
from ..storage.errors import storage_error_text
from ..storage.payloads import PayloadError

log = get_logger("azjobs.poison")

PAGE = 32  # the service's receive maximum
LEASE_S = 60  # how long a message being replayed or purged stays hidden from other tooling
MAX_NESTING = 5  # records inside records (each requeued as a job and poisoned again) unwrapped on replay


@dataclass
class PoisonMessage:
    """One message of a poison queue and the record it holds."""

    message_id: str
    inserted_on: Any
    dequeue_count: int
    record: PoisonRecord
    pop_receipt: str | None = None
    content: str = ""
    # The messageEncoding the poison message was written in (an azjobs record is read in either).
    encoding: str = "base64"

    @property
    def ids(self) -> tuple[str, ...]:
        """Every id this job is known by: poison message, record, job, and the message that failed."""
        record = self.record
        return tuple(v for v in (self.message_id, record.id, record.envelope_id, record.message_id)
                     if isinstance(v, str) and v)

    def matches(self, wanted: str) -> bool:
        """Any of its ids, or an 8+ character prefix of one; ``message:<id>`` is how `poison list` names a body
        that has no job id (its poison message id)."""
        wanted = wanted.removeprefix("message:")
        if len(wanted) < 8:
            return wanted in self.ids
        return any(value.startswith(wanted) for value in self.ids)

    def to_dict(self, traceback: bool = True) -> dict[str, Any]:
        data = self.record.to_dict()
        if not traceback:
            data["error"] = {k: v for k, v in data["error"].items() if k != "traceback"}
        data["poison_message_id"] = self.message_id
        data["inserted_on"] = self.inserted_on.isoformat() if hasattr(self.inserted_on, "isoformat") else None
        data["poison_dequeue_count"] = self.dequeue_count
        data["poison_message_encoding"] = self.encoding
        return data


@dataclass
class ReplayReport:
    requeued: list[str]
    failed: list[tuple[str, str]]
    not_found: list[str]
    notes: dict[str, str] = field(default_factory=dict)  # poison message id -> how it was sent back
    refused: list[tuple[str, str]] = field(default_factory=list)  # (poison message id, why): left in poison
    job_ids: dict[str, str] = field(default_factory=dict)  # poison message id -> the job id inside it

    def name(self, message_id: str) -> str:
        """How the report names a poison message: its job's id first (what `azjobs status` takes)."""
        job_id = self.job_ids.get(message_id)
        return f"job {job_id} (poison message {message_id})" if job_id else f"poison message {message_id}"


class RequeueRefused(AzjobsError):
    """Requeueing this record would run a job and resume nothing (a workflow's step or failure record)."""


def workflow_refusal(message: "PoisonMessage", record: PoisonRecord) -> str | None:
    """Why the record of ``message`` is a workflow's and is not requeued; None for an ordinary job's record."""
    envelope = record.envelope
    if envelope is not None and envelope.workflow:
        workflow_id = envelope.workflow.get("id")
        return (f"it is a step of workflow {workflow_id} (job {envelope.job}), which was told the step failed when "
                f"this record was written: a requeued copy would run {envelope.job} again and resume nothing (see "
                f"`azjobs workflow status {workflow_id}`; enqueue the workflow again to run it again)")
    try:
        data = json.loads(decode_body(message.content, message.encoding))
    except Exception:
        return None
    workflow = data.get("workflow") if isinstance(data, dict) else None
    if not isinstance(workflow, dict) or not workflow.get("id"):
        return None
    step = workflow.get("step") if isinstance(workflow.get("step"), dict) else {}
    which = f" (step {step.get('path')}, {step.get('job')})" if step else ""
    return (f"it is the failure record of workflow {workflow['id']}{which}: a failed workflow resumes nothing, and "
            f"there is no job in it to send back (see `azjobs workflow status {workflow['id']}`; enqueue the workflow "
            "again, with a new id, to run it again)")


class PoisonQueue:
    """Operations on one job queue's poison twin."""

    def __init__(self, client: Client, queue: str) -> None:
        if queue.endswith(POISON_SUFFIX):
            raise ConfigurationError(f"give the job queue, not its poison queue: `{queue[: -len(POISON_SUFFIX)]}` "
                                     f"(the tooling reads {queue})")
        name = poison_queue_name(queue)
        if name is None:
            raise ConfigurationError(f"queue {queue!r} has no poison queue: its name is too long for a "
                                     f"'{POISON_SUFFIX}' twin")
        self.client = client
        self.queue = queue
        self.name = name
        self._sdk = client.queue(name)
        # Encodings other than the client's that poison messages were found in (a worker set up differently).
        self.foreign_encodings: set[str] = set()

    def _record(self, content: str) -> tuple[PoisonRecord, str]:
        found = find_record(content, self.client.encoding)
        if found is not None:
            return found
        return PoisonRecord.decode(content, self.client.encoding, self.queue), self.client.encoding

    def _message(self, message: Any) -> PoisonMessage:
        record, encoding = self._record(message.content)
        if encoding != self.client.encoding:
            self.foreign_encodings.add(encoding)
        return PoisonMessage(message.id, message.inserted_on, message.dequeue_count or 0, record,
                             getattr(message, "pop_receipt", None), message.content, encoding)

    def full(self, message: PoisonMessage) -> PoisonRecord:
        """The record with its envelope and raw body, loaded from Blob Storage for a stub."""
        return self._full_record(message.record)

    def _full_record(self, record: PoisonRecord) -> PoisonRecord:
        if record.record_ref is None:
            return record
        data = json.loads(self.client.payloads.get(record.record_ref).decode("utf-8"))
        return PoisonRecord.from_dict(data)

    def exists(self) -> bool:
        """True if the poison queue exists (the host and azjobs create it at the first poisoning)."""
        return _queue_exists(self._sdk)

    def job_queue_exists(self) -> bool:
        return _queue_exists(self.client.queue(self.queue))

    def check(self) -> bool:
        """Raise QueueNotFoundError when neither the job queue nor its poison queue exists (a typo
        must not look like an empty poison queue); True if the poison queue exists."""
        if self.exists():
            return True
        if not self.job_queue_exists():
            raise QueueNotFoundError(self.queue)
        return False

    def peek(self, limit: int = PAGE) -> list[PoisonMessage]:
        """The first messages, without touching them (at most 32: the service's peek limit)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return [self._message(m) for m in self._sdk.peek_messages(max_messages=min(max(limit, 1), PAGE))]
        except ResourceNotFoundError:
            return []

    def count(self) -> int:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return int(self._sdk.get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return 0

    def _leased(self, received: list[PoisonMessage]) -> Iterator[PoisonMessage]:
        """Every visible message, each hidden for LEASE_S while the caller handles it.

        Each received page is added to ``received`` as a whole, so a caller that stops
        early can release what it did not handle (``_release_unhandled``).
        """
        from azure.core.exceptions import ResourceNotFoundError

        seen: set[str] = set()
        while True:
            try:
                batch = list(self._sdk.receive_messages(messages_per_page=PAGE, max_messages=PAGE,
                                                        visibility_timeout=LEASE_S))
            except ResourceNotFoundError:
                return
            fresh = [self._message(m) for m in batch if m.id not in seen]
            if not fresh:
                return
            seen.update(m.message_id for m in fresh)
            received.extend(fresh)
            yield from fresh

    def _release_unhandled(self, received: list[PoisonMessage], handled: set[str]) -> None:
        """Make the leased messages that were not deleted visible again (at the end, so no page re-takes them)."""
        for message in received:
            if message.message_id not in handled:
                try:
                    self._sdk.update_message(message.message_id, message.pop_receipt, visibility_timeout=0)
                except Exception as exc:  # it reappears on its own when the lease ends
                    log.debug("could not release poison message %s: %s", message.message_id, exc)

    def scan(self, limit: int) -> list[PoisonMessage]:
        """Up to ``limit`` messages: peeked when 32 suffice, else paged with a lease and released."""
        if limit <= PAGE or self.count() <= PAGE:
            return self.peek(limit)
        received: list[PoisonMessage] = []
        try:
            for _ in self._leased(received):
                if len(received) >= limit:
                    break
        finally:
            self._release_unhandled(received, set())
        return received[:limit]

    def find(self, wanted: str) -> PoisonMessage | None:
        for message in self.peek(PAGE):
            if message.matches(wanted):
                return message
        received: list[PoisonMessage] = []
        try:
            for message in self._leased(received):
                if message.matches(wanted):
                    return message
        finally:
            self._release_unhandled(received, set())
        return None

    def requeue(self, ids: Sequence[str] | None = None) -> ReplayReport:
        """Send records back to the job queue (attempts reset), then delete them from poison.

        ``ids`` None means all. A record whose copy could not be sent stays in poison.
        """
        wanted = list(ids) if ids is not None else None
        report = ReplayReport([], [], [])
        matched: set[str] = set()
        received: list[PoisonMessage] = []
        handled: set[str] = set()
        try:
            for message in self._leased(received):
                hits = [w for w in wanted if message.matches(w)] if wanted is not None else ["*"]
                if not hits:
                    continue
                matched.update(hits)
                if message.record.envelope_id:
                    report.job_ids[message.message_id] = message.record.envelope_id
                try:
                    note = self._replay(message)
                except RequeueRefused as exc:  # stays in poison, released with the unhandled ones
                    report.refused.append((message.message_id, str(exc)))
                    continue
                except Exception as exc:
                    text = str(exc) if isinstance(exc, AzjobsError) else storage_error_text(exc, self.client.connection)
                    report.failed.append((message.message_id, text))
                    log.debug("could not requeue poison message %s: %s", message.message_id, text,
                              extra={"action": "poison_requeue_failed", "queue": self.queue})
                    continue
                handled.add(message.message_id)
                report.requeued.append(message.message_id)
                if note:
                    report.notes[message.message_id] = note
                if wanted is not None and matched >= set(wanted):
                    break
        finally:
            self._release_unhandled(received, handled)
        if wanted is not None:
            report.not_found = [w for w in wanted if w not in matched]
        return report

    def _replay(self, message: PoisonMessage) -> str | None:
        """Send the job of one poison message back to the queue, then delete the message.

        Returns a note when the job was not sent back as it was stored (unwrapped from a
        record that had been requeued as a job, or re-encoded), else None.
        """
        record = self.full(message)
        refusal = workflow_refusal(message, record)
        if refusal is not None:
            raise RequeueRefused(refusal)
        note = self._send_back(record, message.encoding)
        self._delete(message)
        log.info("job %s %s requeued to %s (poison message %s)", record.job or "?", record.envelope_id or "-",
                 self.queue, message.message_id,
                 extra={"action": "poison_requeued", "queue": self.queue,
                        "job": record.job, "job_id": record.envelope_id})
        return note

    def _send_back(self, record: PoisonRecord, encoding: str, depth: int = 0) -> str | None:
        """Send the job ``record`` holds; ``encoding``: the one its raw body was decoded with."""
        envelope = record.replay_envelope()
        if envelope is not None:
            self.client.send(envelope.evolve(queue=self.queue))  # large arguments are claim-checked again
            return "the job inside a poison record that had been sent back as a job" if depth else None
        inner = nested_record(record)
        if inner is not None:
            if depth >= MAX_NESTING:
                raise AzjobsError(f"the record holds poison records {MAX_NESTING} levels deep; not requeued")
            return self._send_back(self._full_record(inner), encoding, depth + 1) or (
                "the job inside a poison record that had been sent back as a job")
        misencoded = misencoded_envelope(record)
        if misencoded is not None:
            envelope = misencoded.evolve(queue=self.queue, attempt=1, first_failed_at=None, due_at=None)
            self.client.send(envelope)
            return (f"re-encoded with messageEncoding={self.client.encoding}: it failed as {record.error.reason}, "
                    "sent with another messageEncoding")
        text = record.replay_text(encoding)
        if text is None:
            raise AzjobsError("the record holds neither an envelope nor a body")
        self.client.send_text(self.queue, text)
        return None

    def _delete(self, message: PoisonMessage) -> None:
        """Delete the poison message, then the blob of a large record."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._sdk.delete_message(message.message_id, message.pop_receipt)
        except ResourceNotFoundError:
            pass
        ref = message.record.record_ref
        if ref:
            try:
                self.client.payloads.delete(ref)
            except (PayloadError, Exception) as exc:
                text = str(exc) if isinstance(exc, AzjobsError) else storage_error_text(exc)
                log.warning("could not delete poison record blob %s: %s", ref, text,
                            extra={"action": "payload_delete_failed", "queue": self.queue})

    def purge(self) -> int:
        """Delete every poison message (and the blobs of large records); returns how many."""
        deleted = 0
        received: list[PoisonMessage] = []
        handled: set[str] = set()
        try:
            for message in self._leased(received):
                self._delete(message)
                handled.add(message.message_id)
                deleted += 1
        finally:
            self._release_unhandled(received, handled)
        log.info("purged %d poison message(s) from %s", deleted, self.name,
                 extra={"action": "poison_purged", "queue": self.queue, "count": deleted})
        return deleted


def _queue_exists(sdk: Any) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        sdk.get_queue_properties()
    except ResourceNotFoundError:
        return False
    return True


# -- the command ---------------------------------------------------------------


__all__ = ["LEASE_S", "PAGE", "PoisonMessage", "PoisonQueue", "ReplayReport", "RequeueRefused", "workflow_refusal"]
