"""The execution core: one message in, one outcome out — on Functions and in the local runner.

``Executor.execute`` decodes a message, finds its registered job, runs it and settles the
result: success; a retry copy written with the delay as its visibility; a poison record
written to ``<queue>-poison``; or a deferral for a delay longer than one visibility hop.
When azjobs cannot durably write what a failure needs, it raises ``Redeliver`` so the
host (or the runner) releases the message instead: a duplicate is preferred to a loss.

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
from datetime import datetime, timedelta
from typing import Any, Callable

from .client import MAX_VISIBILITY, NEVER_EXPIRE, Client, default_client
from .errors import ArgumentError, EnvelopeError, Fail, UnknownJobError
from .job import JobDefinition
from .message import Envelope, decode_body, format_time, parse_time, utcnow
from .poison import ErrorInfo, PoisonRecord, raw_text
from .queue_names import poison_queue_name
from .registry import Registry, registry as default_registry
from .retry import Backoff, RetryPolicy
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
    ) -> None:
        self.registry = registry or default_registry
        self._client = client
        self._settings = settings
        self.host = host or socket.gethostname()
        self.clock = clock

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = default_client()
        return self._client

    @property
    def settings(self) -> QueueSettings:
        if self._settings is None:
            self._settings = self.client.settings
        return self._settings

    # -- entry points ------------------------------------------------------
    def execute(self, body: bytes | str, info: MessageInfo, *, encoded: bool = True) -> Result:
        """Work one message in this thread (``async def`` jobs get their own event loop).

        ``encoded`` is True for a body as read from the queue, False for a body the
        Functions host has already decoded.
        """
        step = self._prepare(body, info, encoded)
        if isinstance(step, Result):
            return step
        started = time.perf_counter()
        self._log_start(step, info)
        try:
            value = step.definition.run(step.args, step.kwargs)
            if asyncio.iscoroutine(value):
                value = asyncio.run(value)
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
        envelope = self._try_decode(body, encoded)
        return self._dead_letter(
            info, ErrorInfo.from_exception(error, reason="max_dequeue_count"), envelope=envelope,
            raw=None if envelope else body, attempts=envelope.attempt if envelope else info.dequeue_count,
        )

    # -- steps ---------------------------------------------------------------
    def _try_decode(self, body: bytes | str, encoded: bool) -> Envelope | None:
        try:
            return Envelope.from_json(decode_body(body, self.settings.message_encoding) if encoded else body)
        except EnvelopeError:
            return None

    def _prepare(self, body: bytes | str, info: MessageInfo, encoded: bool) -> _Prepared | Result:
        max_dequeue = self.settings.max_dequeue_count
        if info.dequeue_count > max_dequeue:
            # The host's pre-run check: a message that kept crashing or timing out its worker.
            envelope = self._try_decode(body, encoded)
            error = ErrorInfo(
                "azjobs.MaxDequeueCountExceeded",
                f"message was dequeued {info.dequeue_count} times (maxDequeueCount={max_dequeue}) without "
                "finishing: the worker crashed or timed out while running it",
                reason="max_dequeue_count",
            )
            return self._dead_letter(info, error, envelope=envelope, raw=None if envelope else body,
                                     attempts=envelope.attempt if envelope else info.dequeue_count)
        try:
            envelope = Envelope.from_json(decode_body(body, self.settings.message_encoding) if encoded else body)
        except EnvelopeError as exc:
            return self._dead_letter(info, ErrorInfo.from_exception(exc, reason=exc.reason), raw=body)

        if envelope.due_at is not None:
            deferred = self._defer_if_early(envelope, info)
            if deferred is not None:
                return deferred
        try:
            definition = self.registry.get(envelope.job)
        except UnknownJobError as exc:
            return self._decide(envelope, info, exc, UNKNOWN_JOB_POLICY, reason="unknown_job")
        args, kwargs = list(envelope.args), dict(envelope.kwargs)
        try:
            definition.check_arguments(tuple(args), kwargs)
        except ArgumentError as exc:
            return self._dead_letter(info, ErrorInfo.from_exception(exc, reason="bad_arguments"), envelope=envelope)
        return _Prepared(envelope, definition, tuple(args), kwargs)

    def _defer_if_early(self, envelope: Envelope, info: MessageInfo) -> Result | None:
        due = parse_time(envelope.due_at)
        remaining = (due - self.clock()).total_seconds()
        if remaining <= 0:
            return None
        hop = min(math.ceil(remaining), int(MAX_VISIBILITY.total_seconds()))
        self._write(envelope.queue or info.queue, envelope.encode(self.settings.message_encoding), hop,
                    NEVER_EXPIRE, envelope, "deferral")
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
        return Result(Outcome.SUCCEEDED, env, duration_s=duration, ran=True)

    def _failed(self, step: _Prepared, info: MessageInfo, error: Exception, duration: float) -> Result:
        env = step.envelope
        log.warning("job %s %s failed after %.3fs: %s: %s", env.job, env.id, duration, type(error).__name__, error,
                    extra={"action": "job_failed", "job": env.job, "job_id": env.id, "queue": info.queue,
                           "attempt": env.attempt, "duration_s": round(duration, 6),
                           "error_type": type(error).__name__})
        result = self._decide(env, info, error, step.definition.policy_for(env),
                              reason="fail" if isinstance(error, Fail) else "job_failed",
                              definition=step.definition)
        result.duration_s, result.ran = duration, True
        return result

    def _decide(self, env: Envelope, info: MessageInfo, error: Exception, policy: RetryPolicy, *,
                reason: str, definition: JobDefinition | None = None) -> Result:
        decision = policy.decide(error, env.attempt)
        now = format_time(self.clock())
        first = env.first_failed_at or now
        if decision.should_retry:
            delay = max(0, math.ceil(decision.retry_in))
            retry = env.evolve(attempt=env.attempt + 1, first_failed_at=first)
            self._write(env.queue or info.queue, retry.encode(self.settings.message_encoding), delay, None, env, "retry")
            log.info("job %s %s retry %d scheduled in %ss", env.job, env.id, retry.attempt, delay,
                     extra={"action": "job_retry_scheduled", "job": env.job, "job_id": env.id, "queue": info.queue,
                            "attempt": retry.attempt, "delay_s": delay})
            return Result(Outcome.RETRY_SCHEDULED, env, error=error, detail=decision.reason, retry_in_s=delay)
        return self._dead_letter(
            info, ErrorInfo.from_exception(error, reason=reason), envelope=env, attempts=env.attempt,
            first_failed_at=first, detail=decision.reason, definition=definition, error=error,
        )

    def _dead_letter(self, info: MessageInfo, error_info: ErrorInfo, *, envelope: Envelope | None = None,
                     raw: bytes | str | None = None, attempts: int = 1, first_failed_at: str | None = None,
                     detail: str = "", definition: JobDefinition | None = None,
                     error: BaseException | None = None) -> Result:
        text, how = raw_text(raw) if raw is not None else (None, "text")
        record = PoisonRecord(
            queue=info.queue, error=error_info, envelope=envelope, raw_body=text, raw_body_encoding=how,
            attempts=attempts, first_failed_at=first_failed_at, host=self.host, message_id=info.message_id,
            dequeue_count=info.dequeue_count,
        )
        poison = poison_queue_name(info.queue)
        if poison is None:
            # The host keeps no poison twin for such a queue (already "-poison", or too long).
            raise Redeliver(f"queue {info.queue!r} has no poison queue; leaving the message for redelivery", envelope)
        self._write(poison, record.encode(self.settings.message_encoding), 0, None, envelope, "poison record")
        job = envelope.job if envelope else None
        log.error("message %s on %s dead-lettered (%s): %s", info.message_id, info.queue, error_info.reason,
                  error_info.message,
                  extra={"action": "job_dead_lettered", "job": job, "job_id": envelope.id if envelope else None,
                         "queue": info.queue, "reason": error_info.reason, "attempt": attempts})
        if definition is not None and definition.on_dead_letter is not None:
            try:
                definition.on_dead_letter(record)
            except Exception:
                log.exception("on_dead_letter hook of %s failed", definition.name,
                              extra={"action": "dead_letter_hook_failed", "job": definition.name})
        return Result(Outcome.DEAD_LETTERED, envelope, error=error, detail=detail or error_info.message,
                      extra={"poison_record": record, "reason": error_info.reason})

    def _write(self, queue: str, text: str, visibility_s: int, ttl: int | None, envelope: Envelope | None,
               what: str) -> None:
        try:
            self.client.send_text(queue, text, visibility_timeout=visibility_s, time_to_live=ttl)
        except Exception as exc:
            log.error("could not write the %s to %s: %s; releasing the message for redelivery", what, queue, exc,
                      extra={"action": "settle_failed", "queue": queue, "what": what})
            raise Redeliver(f"could not write the {what} to {queue}: {exc}", envelope) from exc
