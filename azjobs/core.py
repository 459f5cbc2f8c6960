"""The execution core: one message in, one outcome out — on Functions and in the local runner.

``Executor.execute`` decodes a message, finds its registered job, runs it and settles the
result: success; a retry copy written with the delay as its visibility; a poison record
written to ``<queue>-poison``; or a deferral for a delay longer than one visibility hop.
When azjobs cannot durably write what a failure needs, it raises ``Redeliver`` so the
host (or the runner) releases the message instead: a duplicate is preferred to a loss.

Arguments claim-checked into Blob Storage (``payload_ref``) are loaded before the run;
the blob is deleted after success or once the poison record is written, never after a
retry or deferral (the copy still needs it). A message only ever names a registered job.

No Functions package is imported here.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from .context import JobContext, running
from .client import MAX_VISIBILITY, NEVER_EXPIRE, Client, default_client
from .errors import ArgumentError, EnvelopeError, Fail, PayloadTooLargeError, UnknownJobError
from .job import JobDefinition
from .message import Envelope, decode_body, format_time, parse_time, utcnow
from .payload import POISON_PREFIX, PayloadError, PayloadStore
from .poison import ErrorInfo, PoisonRecord, raw_text
from .queue_names import poison_queue_name
from .registry import Registry, registry as default_registry
from .retry import Backoff, RetryDecision, RetryPolicy
from .settings import QueueSettings

log = logging.getLogger("azjobs")

# A message naming a job this process does not know is retried (a rolling deploy may
# not have it yet), then poisoned.
UNKNOWN_JOB_POLICY = Backoff()


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD_LETTERED = "dead_lettered"
    DEFERRED = "deferred"  # received before its due time and sent on for another hop


@dataclass(frozen=True)
class MessageInfo:
    """What the queue says about one delivery of a message."""

    queue: str
    message_id: str = ""
    dequeue_count: int = 1
    insertion_time: datetime | None = None
    pop_receipt: str | None = None


@dataclass
class Result:
    outcome: Outcome
    envelope: Envelope | None = None
    error: BaseException | None = None
    detail: str = ""
    duration_s: float = 0.0
    retry_in_s: float | None = None
    ran: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Redeliver(Exception):
    """The core could not settle the message durably: release it for redelivery."""

    def __init__(self, message: str, envelope: Envelope | None = None) -> None:
        super().__init__(message)
        self.envelope = envelope


@dataclass
class _Prepared:
    envelope: Envelope
    definition: JobDefinition
    args: tuple
    kwargs: dict


@dataclass
class _Decoded:
    envelope: Envelope | None
    raw: bytes | str | None = None  # the body, when it is not a usable envelope
    form: str = "decoded"  # "wire" when undoing the message encoding failed
    problem: EnvelopeError | None = None


class Executor:
    """Decides and carries out what a message's outcome means. Thread-safe."""

    def __init__(
        self,
        *,
        registry: Registry | None = None,
        client: Client | None = None,
        settings: QueueSettings | None = None,
        host: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        unknown_job_policy: RetryPolicy | None = None,
        payloads: PayloadStore | None = None,
    ) -> None:
        self.registry = default_registry if registry is None else registry
        self._client = client
        self._settings = settings
        self.host = host or socket.gethostname()
        self.clock = clock
        self.unknown_job_policy = unknown_job_policy or UNKNOWN_JOB_POLICY
        self._payloads = payloads

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = default_client()
        return self._client

    @property
    def payloads(self) -> PayloadStore:
        """Where claim-checked arguments and large poison records live (the client's store)."""
        if self._payloads is None:
            self._payloads = self.client.payloads
        return self._payloads

    @property
    def settings(self) -> QueueSettings:
        if self._settings is None:
            self._settings = self.client.settings
        return self._settings

    # -- entry points ------------------------------------------------------
    def execute(self, body: bytes | str, info: MessageInfo, *, encoded: bool = True,
                loop: asyncio.AbstractEventLoop | None = None) -> Result:
        """Work one message in this thread.

        ``encoded`` is True for a body as read from the queue, False for a body the
        Functions host has already decoded. An ``async def`` job runs on ``loop`` (an event
        loop running in another thread, e.g. the worker's) or, without one, on its own loop.
        """
        step = self._prepare(body, info, encoded)
        if isinstance(step, Result):
            return step
        started = time.perf_counter()
        self._log_start(step, info)
        try:
            context = _context(step, info)
            with running(context):
                value = step.definition.run(step.args, step.kwargs)
                if asyncio.iscoroutine(value):
                    job = _within(context, value)
                    value = asyncio.run(job) if loop is None else asyncio.run_coroutine_threadsafe(job, loop).result()
        except Exception as error:
            return self._failed(step, info, error, time.perf_counter() - started)
        return self._succeeded(step, info, time.perf_counter() - started)

    async def execute_async(self, body: bytes | str, info: MessageInfo, *, encoded: bool = True) -> Result:
        """Work one message on the running loop (sync jobs run in a worker thread)."""
        step = await asyncio.to_thread(self._prepare, body, info, encoded)
        if isinstance(step, Result):
            return step
        started = time.perf_counter()
        self._log_start(step, info)
        try:
            with running(_context(step, info)):
                if step.definition.is_async:
                    await step.definition.run(step.args, step.kwargs)
                else:
                    value = await asyncio.to_thread(step.definition.run, step.args, step.kwargs)
                    if asyncio.iscoroutine(value):
                        await value
        except Exception as error:
            return await asyncio.to_thread(self._failed, step, info, error, time.perf_counter() - started)
        return await asyncio.to_thread(self._succeeded, step, info, time.perf_counter() - started)

    def dead_letter_redelivered(self, body: bytes | str, info: MessageInfo, error: BaseException, *, encoded: bool = True) -> Result:
        """Poison a message the host would poison after a failed delivery (dequeueCount ≥ max)."""
        return self._dead_letter_delivery(info, ErrorInfo.from_exception(error, reason="max_dequeue_count"),
                                          self._decode(body, encoded))

    # -- steps ---------------------------------------------------------------
    def _decode(self, body: bytes | str, encoded: bool) -> _Decoded:
        """The envelope, or the body in the form it failed in ("wire": undoing the encoding) and why."""
        try:
            data = decode_body(body, self.settings.message_encoding) if encoded else _as_bytes(body)
        except EnvelopeError as exc:
            return _Decoded(None, body, "wire", exc)
        try:
            return _Decoded(Envelope.from_json(data))
        except EnvelopeError as exc:
            return _Decoded(None, data, "decoded", exc)

    def _dead_letter_delivery(self, info: MessageInfo, error_info: ErrorInfo, decoded: _Decoded) -> Result:
        """Poison a delivery the host gave up on: attempts are the dequeue count when there is no envelope."""
        return self._dead_letter(info, error_info, envelope=decoded.envelope, raw=decoded.raw, raw_form=decoded.form,
                                 attempts=None if decoded.envelope else info.dequeue_count)

    def _prepare(self, body: bytes | str, info: MessageInfo, encoded: bool) -> _Prepared | Result:
        max_dequeue = self.settings.max_dequeue_count
        decoded = self._decode(body, encoded)
        if info.dequeue_count > max_dequeue:
            # The host's pre-run check: a message that kept crashing or timing out its worker.
            error = ErrorInfo(
                "azjobs.MaxDequeueCountExceeded",
                f"message was dequeued {info.dequeue_count} times (maxDequeueCount={max_dequeue}) without "
                "finishing: the worker crashed or timed out while running it",
                reason="max_dequeue_count",
            )
            return self._dead_letter_delivery(info, error, decoded)
        if decoded.problem is not None:
            return self._dead_letter(info, ErrorInfo.from_exception(decoded.problem, reason=decoded.problem.reason),
                                     raw=decoded.raw, raw_form=decoded.form)
        envelope = decoded.envelope

        if envelope.due_at is not None:
            deferred = self._defer_if_early(envelope, info)
            if deferred is not None:
                return deferred
        try:
            definition = self.registry.get(envelope.job)
        except UnknownJobError as exc:
            # Nothing is imported or called: only registered jobs run. Retried first, since a
            # rolling deploy may not have the job yet.
            return self._decide(envelope, info, exc, self.unknown_job_policy, reason="unknown_job")
        args, kwargs = envelope.args, dict(envelope.kwargs)
        if envelope.payload_ref is not None:
            try:
                args, kwargs = self.payloads.load_arguments(envelope.payload_ref)
            except PayloadError as exc:
                return self._dead_letter(info, ErrorInfo.from_exception(exc, reason=exc.reason), envelope=envelope,
                                         definition=definition, error=exc)
            except Exception as exc:
                log.error("could not load the arguments of %s %s from %s: %s", envelope.job, envelope.id,
                          envelope.payload_ref, exc,
                          extra={"action": "payload_load_failed", "job": envelope.job, "job_id": envelope.id,
                                 "queue": info.queue})
                raise Redeliver(f"could not load the arguments from {envelope.payload_ref}: {exc}", envelope) from exc
        try:
            definition.check_arguments(tuple(args), kwargs)
        except ArgumentError as exc:
            return self._dead_letter(info, ErrorInfo.from_exception(exc, reason="bad_arguments"), envelope=envelope,
                                     definition=definition, error=exc)
        return _Prepared(envelope, definition, tuple(args), kwargs)

    def _defer_if_early(self, envelope: Envelope, info: MessageInfo) -> Result | None:
        due = parse_time(envelope.due_at)
        remaining = (due - self.clock()).total_seconds()
        if remaining <= 0:
            return None
        hop = min(math.ceil(remaining), int(MAX_VISIBILITY.total_seconds()))
        # The same message again (same id, same payload reference), never expiring while it waits.
        self._write(info.queue, self._encode_copy(envelope, envelope), hop, NEVER_EXPIRE, envelope, "deferral")
        log.info("job %s %s deferred %ss (due %s)", envelope.job, envelope.id, hop, envelope.due_at,
                 extra={"action": "job_deferred", "job": envelope.job, "job_id": envelope.id,
                        "queue": info.queue, "delay_s": hop})
        return Result(Outcome.DEFERRED, envelope, detail=f"due {envelope.due_at}", retry_in_s=hop)

    def _log_start(self, step: _Prepared, info: MessageInfo) -> None:
        env = step.envelope
        log.info("job %s %s started (attempt %d, queue %s)", env.job, env.id, env.attempt, info.queue,
                 extra={"action": "job_started", "job": env.job, "job_id": env.id, "queue": info.queue,
                        "attempt": env.attempt, "dequeue_count": info.dequeue_count})

    def _succeeded(self, step: _Prepared, info: MessageInfo, duration: float) -> Result:
        env = step.envelope
        log.info("job %s %s succeeded in %.3fs", env.job, env.id, duration,
                 extra={"action": "job_succeeded", "job": env.job, "job_id": env.id, "queue": info.queue,
                        "attempt": env.attempt, "duration_s": round(duration, 6)})
        if env.payload_ref is not None:
            self._forget_payload(env.payload_ref, info)
        return Result(Outcome.SUCCEEDED, env, duration_s=duration, ran=True)

    def _failed(self, step: _Prepared, info: MessageInfo, error: Exception, duration: float) -> Result:
        env = step.envelope
        log.warning("job %s %s failed after %.3fs: %s: %s", env.job, env.id, duration, type(error).__name__, error,
                    extra={"action": "job_failed", "job": env.job, "job_id": env.id, "queue": info.queue,
                           "attempt": env.attempt, "duration_s": round(duration, 6),
                           "error_type": type(error).__name__})
        try:
            policy = step.definition.policy_for(env)
            decision = policy.decide(error, env.attempt)
        except Exception as exc:  # a broken custom policy must not lose the message
            log.exception("retry policy of %s failed; dead-lettering", env.job,
                          extra={"action": "retry_policy_failed", "job": env.job, "job_id": env.id})
            decision = RetryDecision(None, f"the retry policy raised {type(exc).__name__}: {exc}")
        result = self._settle(env, info, error, decision,
                              reason="fail" if isinstance(error, Fail) else "job_failed",
                              definition=step.definition, args=(step.args, step.kwargs))
        result.duration_s, result.ran = duration, True
        return result

    def _decide(self, env: Envelope, info: MessageInfo, error: Exception, policy: RetryPolicy, *,
                reason: str, definition: JobDefinition | None = None) -> Result:
        return self._settle(env, info, error, policy.decide(error, env.attempt), reason=reason, definition=definition)

    def _settle(self, env: Envelope, info: MessageInfo, error: Exception, decision: RetryDecision, *,
                reason: str, definition: JobDefinition | None = None,
                args: tuple[tuple, dict] | None = None) -> Result:
        now = format_time(self.clock())
        first = env.first_failed_at or now
        if decision.should_retry:
            delay = min(max(0, math.ceil(decision.retry_in)), int(MAX_VISIBILITY.total_seconds()))
            retry = env.evolve(attempt=env.attempt + 1, first_failed_at=first)
            self._write(info.queue, self._encode_copy(retry, env), delay, None, env, "retry")
            log.info("job %s %s retry %d scheduled in %ss", env.job, env.id, retry.attempt, delay,
                     extra={"action": "job_retry_scheduled", "job": env.job, "job_id": env.id, "queue": info.queue,
                            "attempt": retry.attempt, "delay_s": delay})
            return Result(Outcome.RETRY_SCHEDULED, env, error=error, detail=decision.reason, retry_in_s=delay)
        return self._dead_letter(
            info, ErrorInfo.from_exception(error, reason=reason), envelope=env,
            first_failed_at=first, detail=decision.reason, definition=definition, error=error, args=args,
        )

    def _dead_letter(self, info: MessageInfo, error_info: ErrorInfo, *, envelope: Envelope | None = None,
                     raw: bytes | str | None = None, raw_form: str = "decoded", attempts: int | None = None,
                     first_failed_at: str | None = None, detail: str = "",
                     definition: JobDefinition | None = None, error: BaseException | None = None,
                     args: tuple[tuple, dict] | None = None) -> Result:
        """Write the poison record, then run the job's on_dead_letter hook.

        The record carries the envelope with its arguments inline (loaded back from Blob
        Storage for a claim-checked message) so it can be replayed; the payload blob is
        deleted only once the record is durable.
        """
        if attempts is None:
            attempts = envelope.attempt if envelope is not None else 1
        if first_failed_at is None and envelope is not None:
            first_failed_at = envelope.first_failed_at
        poison = poison_queue_name(info.queue)
        if poison is None:
            # The host keeps no poison twin for such a queue (already "-poison", or too long).
            raise Redeliver(f"queue {info.queue!r} has no poison queue; leaving the message for redelivery", envelope)
        record_envelope, payload_ref = envelope, None
        if envelope is not None and envelope.payload_ref is not None:
            try:
                if args is not None:
                    record_envelope = envelope.evolve(args=args[0], kwargs=args[1], payload_ref=None)
                else:
                    record_envelope = self.payloads.inline(envelope)
                payload_ref = envelope.payload_ref
            except Exception as exc:  # missing or unreadable: the record keeps the reference
                log.warning("poison record of %s keeps payload reference %s: %s", envelope.id, envelope.payload_ref,
                            exc, extra={"action": "payload_inline_failed", "job_id": envelope.id})
        text, how = raw_text(raw) if raw is not None else (None, "text")
        record = PoisonRecord(
            queue=info.queue, error=error_info, envelope=record_envelope, raw_body=text, raw_body_encoding=how,
            raw_form=raw_form, attempts=attempts, first_failed_at=first_failed_at,
            last_failed_at=format_time(self.clock()), host=self.host, message_id=info.message_id,
            dequeue_count=info.dequeue_count,
        )
        self._write(poison, self._poison_text(record, envelope), 0, None, envelope, "poison record")
        job = envelope.job if envelope else None
        log.error("message %s on %s dead-lettered (%s): %s", info.message_id, info.queue, error_info.reason,
                  error_info.message,
                  extra={"action": "job_dead_lettered", "job": job, "job_id": envelope.id if envelope else None,
                         "queue": info.queue, "reason": error_info.reason, "attempt": attempts})
        if payload_ref is not None:
            self._forget_payload(payload_ref, info)
        if definition is None and envelope is not None and envelope.job in self.registry:
            definition = self.registry.get(envelope.job)
        if definition is not None and definition.on_dead_letter is not None:
            self._run_hook(definition, record)
        return Result(Outcome.DEAD_LETTERED, envelope, error=error, detail=detail or error_info.message,
                      extra={"poison_record": record, "reason": error_info.reason})

    def _encode_copy(self, copy: Envelope, original: Envelope) -> str:
        """Message text for a retry or deferral copy; one over the limit has its arguments claim-checked.

        A copy can outgrow a message that fitted: a retry adds fields, and re-encoding may
        spell the JSON differently from the producer.
        """
        try:
            return copy.encode(self.settings.message_encoding)
        except PayloadTooLargeError:
            if copy.payload_ref is not None:
                raise Redeliver("the copy is over the message limit even without its arguments", original)
        try:
            copy = self.payloads.offload(copy)
        except Exception as exc:
            raise Redeliver(f"could not store the copy's arguments in Blob Storage: {exc}", original) from exc
        return copy.encode(self.settings.message_encoding)

    def _poison_text(self, record: PoisonRecord, envelope: Envelope | None) -> str:
        """The record as message text; too large, it goes whole to Blob Storage behind a stub."""
        encoding = self.settings.message_encoding
        try:
            return record.encode(encoding, trim=False)
        except PayloadTooLargeError:
            pass
        try:
            ref = self.payloads.put(f"{POISON_PREFIX}{record.id}.json", record.to_json().encode("utf-8"))
        except Exception as exc:
            log.error("could not store the large poison record %s: %s", record.id, exc,
                      extra={"action": "settle_failed", "queue": record.queue, "what": "poison record blob"})
            raise Redeliver(f"could not store the poison record in Blob Storage: {exc}", envelope) from exc
        return record.stub(ref).encode(encoding)

    def _run_hook(self, definition: JobDefinition, record: PoisonRecord) -> None:
        try:
            value = definition.on_dead_letter(record)
            if asyncio.iscoroutine(value):
                asyncio.run(value)
        except Exception:
            log.exception("on_dead_letter hook of %s failed", definition.name,
                          extra={"action": "dead_letter_hook_failed", "job": definition.name})

    def _forget_payload(self, ref: str, info: MessageInfo) -> None:
        """Delete a payload blob once nothing needs it; a failure only leaves an orphan blob."""
        try:
            self.payloads.delete(ref)
        except Exception as exc:
            log.warning("could not delete payload blob %s: %s", ref, exc,
                        extra={"action": "payload_delete_failed", "queue": info.queue})

    def _write(self, queue: str, text: str, visibility_s: int, ttl: int | None, envelope: Envelope | None,
               what: str) -> None:
        try:
            self.client.send_text(queue, text, visibility_timeout=visibility_s, time_to_live=ttl)
        except Exception as exc:
            log.error("could not write the %s to %s: %s; releasing the message for redelivery", what, queue, exc,
                      extra={"action": "settle_failed", "queue": queue, "what": what})
            raise Redeliver(f"could not write the {what} to {queue}: {exc}", envelope) from exc


async def _within(context: JobContext, job: Any) -> Any:
    """Await ``job`` with ``azjobs.current_job()`` set, whichever loop (and thread) runs it."""
    with running(context):
        return await job


def _context(step: _Prepared, info: MessageInfo) -> JobContext:
    env = step.envelope
    return JobContext(job=env.job, id=env.id, attempt=env.attempt, queue=info.queue, enqueued_at=env.enqueued_at,
                      message_id=info.message_id, dequeue_count=info.dequeue_count, trace=dict(env.trace))


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)
