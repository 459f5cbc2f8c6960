"""The execution core: one message in, one outcome out — on Functions and in the local runner.

``Executor.execute`` decodes a message, finds its registered job, runs it and decides the
outcome: success; a retry copy written with the delay as its visibility; a poison record
written to ``<queue>-poison``; or a deferral for a delay longer than one visibility hop.
Writing those is the ``Recorder``'s business (azjobs/recorder.py). When azjobs cannot
durably write what a failure needs, it raises ``Redeliver`` so the host (or the runner)
releases the message instead: a duplicate is preferred to a loss.

A job always reaches an outcome: whatever it raises, ``BaseException`` included
(``sys.exit()``, ``SystemExit``, ``KeyboardInterrupt`` in a thread, ``GeneratorExit``), is a
failure with the error recorded, retried and then poisoned by the job's policy.

The three steps are public so a runner can watch a job between them (the worker's job
timeout): ``begin`` (decode and check; a ``Result`` when nothing is to run), ``run`` (the
job itself; never raises for the job's own errors) and ``finish`` (decide and record).

Arguments claim-checked into Blob Storage (``payload_ref``) are loaded before the run. The
blob outlives the run: ``Result.payload_ref`` names it for removal once the message itself
is gone (the worker deletes it after the message; the Functions handler marks it consumed,
since the host deletes the message only after the function returns). A redelivered message
whose payload was consumed is skipped, not run again. A message only ever names a
registered job.

No Functions package is imported here.
"""

from __future__ import annotations

import asyncio
import enum
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from .. import telemetry
from ..api.jobs import JobDefinition
from ..errors import ArgumentError, EnvelopeError, Fail, UnknownJobError
from ..model.context import JobContext, running
from ..model.envelope import Envelope, decode_body, format_time, parse_time, utcnow
from ..model.poison_record import ErrorInfo
from ..model.registry import Registry
from ..model.registry import registry as default_registry
from ..model.retry import Backoff, RetryDecision, RetryPolicy
from ..model.secrets import get_logger
from ..model.settings import QueueSettings
from ..storage.client import MAX_VISIBILITY, Client, default_client
from ..storage.payloads import PayloadError, PayloadStore
from .recorder import DeadLetter, Recorder, Redeliver

log = get_logger("azjobs")

# A message naming a job this process does not know is retried (a rolling deploy may
# not have it yet), then poisoned.
UNKNOWN_JOB_POLICY = Backoff()


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD_LETTERED = "dead_lettered"
    DEFERRED = "deferred"  # received before its due time and sent on for another hop
    SKIPPED = "skipped"  # a redelivery of a job that already finished: settled without running


@dataclass(frozen=True)
class MessageInfo:
    """What the queue says about one delivery of a message."""

    queue: str
    message_id: str = ""
    dequeue_count: int = 1
    insertion_time: datetime | None = None
    pop_receipt: str | None = None
    # Who runs it, for job state: the Functions invocation id; None means "host:pid".
    worker_id: str | None = None
    # Whether this delivery still holds its message (job state keeps a running job's record lease
    # while it does: azjobs/state/running.py); None: for as long as the run lasts.
    held: Callable[[], bool] | None = field(default=None, compare=False, repr=False)


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
    # A claim-check blob nothing needs once the message is gone (remove it after the delete).
    payload_ref: str | None = None


@dataclass
class Prepared:
    """A decoded, checked message whose job is about to run."""

    envelope: Envelope
    definition: JobDefinition
    args: tuple
    kwargs: dict
    info: MessageInfo
    watch: Any = None  # the delivery's telemetry (azjobs/telemetry), None without OpenTelemetry


@dataclass(frozen=True)
class JobRun:
    """What running the job gave: its value, or what it raised (any BaseException)."""

    value: Any = None
    error: BaseException | None = None
    duration_s: float = 0.0


@dataclass
class _Decoded:
    envelope: Envelope | None
    raw: bytes | str | None = None  # the body, when it is not a usable envelope
    form: str = "decoded"  # "wire" when undoing the message encoding failed
    problem: EnvelopeError | None = None


class _Raised(Exception):
    """Carries a BaseException out of a job's coroutine without stopping the event loop it runs on."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


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
        self.recorder = Recorder(self)

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
        step = self.begin(body, info, encoded=encoded)
        if isinstance(step, Result):
            return step
        return self.finish(step, self.run(step, loop=loop))

    async def execute_async(self, body: bytes | str, info: MessageInfo, *, encoded: bool = True) -> Result:
        """Work one message on the running loop (sync jobs run in a worker thread)."""
        step = await asyncio.to_thread(self.begin, body, info, encoded=encoded)
        if isinstance(step, Result):
            return step
        run = await self.run_async(step)
        return await asyncio.to_thread(self.finish, step, run)

    def dead_letter_redelivered(self, body: bytes | str, info: MessageInfo, error: BaseException, *,
                                encoded: bool = True) -> Result:
        """Poison a message the host would poison after a failed delivery (dequeueCount ≥ max)."""
        watch = telemetry.delivery(info)
        result = self._dead_letter_delivery(info, ErrorInfo.from_exception(error, reason="max_dequeue_count"),
                                            self._decode(body, encoded), error=error)
        telemetry.settled(watch, result)
        return result

    # -- the three steps -----------------------------------------------------
    def begin(self, body: bytes | str, info: MessageInfo, *, encoded: bool = True) -> Prepared | Result:
        """Decode and check one delivery: the job to run, or the Result of a message that runs nothing."""
        watch = telemetry.delivery(info)
        try:
            step = self._begin(body, info, encoded=encoded)
        except BaseException as exc:
            telemetry.raised(watch, getattr(exc, "envelope", None), exc)
            raise
        if isinstance(step, Result):
            telemetry.settled(watch, step)
        else:
            step.watch = telemetry.started(watch, step)
        return step

    def _begin(self, body: bytes | str, info: MessageInfo, *, encoded: bool = True) -> Prepared | Result:
        max_dequeue = self.settings.max_dequeue_count
        decoded = self._decode(body, encoded)
        if info.dequeue_count > max_dequeue:
            # The host's pre-run check: a message that kept crashing or timing out its worker.
            if self.recorder.state.finished(decoded.envelope):  # job state: a success whose deletes failed
                return self._skipped(decoded.envelope, info, "the job already succeeded (its record says so)")
            error = ErrorInfo(
                "azjobs.MaxDequeueCountExceeded",
                f"message was dequeued {info.dequeue_count} times (maxDequeueCount={max_dequeue}) without "
                "finishing: the worker crashed or timed out while running it",
                reason="max_dequeue_count",
            )
            return self._dead_letter_delivery(info, error, decoded)
        if decoded.problem is not None:
            return self._dead_letter(DeadLetter(info, ErrorInfo.from_exception(decoded.problem,
                                                                               reason=decoded.problem.reason),
                                                raw=decoded.raw, raw_form=decoded.form))
        envelope = decoded.envelope
        assert envelope is not None

        if envelope.due_at is not None:
            deferred = self._defer_if_early(envelope, info)
            if deferred is not None:
                return deferred
        try:
            definition = self.registry.get(envelope.job)
        except UnknownJobError as exc:
            if envelope.workflow:  # a workflow step: no retry copy; its workflow fails at once (see _dead_letter)
                return self._dead_letter(DeadLetter(info, ErrorInfo.from_exception(exc, reason="unknown_job"),
                                                    envelope=envelope), error=exc)
            # Nothing is imported or called: only registered jobs run. Retried first, since a
            # rolling deploy may not have the job yet.
            return self._settle(envelope, info, exc, self.unknown_job_policy.decide(exc, envelope.attempt),
                                reason="unknown_job")
        args, kwargs = envelope.args, dict(envelope.kwargs)
        if envelope.payload_ref is not None:
            try:
                args, kwargs = self.payloads.load_arguments(envelope.payload_ref)
            except PayloadError as exc:
                if exc.reason == "payload_missing" and self._payload_consumed(envelope.payload_ref):
                    return self._skipped(envelope, info, "its claim-checked arguments were consumed by a finished "
                                                         "run (a redelivery after the message's delete failed)")
                return self._dead_letter(DeadLetter(info, ErrorInfo.from_exception(exc, reason=exc.reason),
                                                    envelope=envelope), definition=definition, error=exc)
            except Exception as exc:
                log.error("could not load the arguments of %s %s from %s: %s", envelope.job, envelope.id,
                          envelope.payload_ref, exc,
                          extra={"action": "payload_load_failed", "job": envelope.job, "job_id": envelope.id,
                                 "queue": info.queue})
                raise Redeliver(f"could not load the arguments from {envelope.payload_ref}: {exc}", envelope) from exc
        try:
            definition.check_arguments(tuple(args), kwargs)
        except ArgumentError as exc:
            return self._dead_letter(DeadLetter(info, ErrorInfo.from_exception(exc, reason="bad_arguments"),
                                                envelope=envelope), definition=definition, error=exc)
        start = self.recorder.state.start(envelope, info, definition)  # job state: RUNNING, or why not
        if start.action == "skip":
            return self._skipped(envelope, info, start.why)
        if start.action == "defer":
            self.recorder.defer(envelope, info, start.defer_s)
            log.info("job %s %s deferred %ss: %s", envelope.job, envelope.id, start.defer_s, start.why,
                     extra={"action": "job_deferred", "job": envelope.job, "job_id": envelope.id,
                            "queue": info.queue, "delay_s": start.defer_s, "reason": "running_elsewhere"})
            return self._settled(Result(Outcome.DEFERRED, envelope, detail=start.why, retry_in_s=start.defer_s))
        return Prepared(envelope, definition, tuple(args), kwargs, info)

    def run(self, step: Prepared, *, loop: asyncio.AbstractEventLoop | None = None,
            on_future: Callable[[Any], None] | None = None) -> JobRun:
        """Run the job in this thread; whatever it raises is returned, never raised.

        The coroutine of an ``async def`` job runs on ``loop`` when given (``on_future``
        receives its concurrent future, so a runner can cancel it), else on a new loop.
        """
        started = time.perf_counter()
        self._log_start(step)
        context = _context(step)
        try:
            with running(context), telemetry.active(step.watch):
                value = step.definition.run(step.args, step.kwargs)
                if asyncio.iscoroutine(value):
                    job = _within(context, value, step.watch)
                    if loop is None:
                        value = asyncio.run(job)
                    else:
                        future = asyncio.run_coroutine_threadsafe(job, loop)
                        if on_future is not None:
                            on_future(future)
                        value = future.result()
        except _Raised as wrapped:
            return JobRun(error=wrapped.error, duration_s=time.perf_counter() - started)
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                raise  # Ctrl-C at the console stops the program; the message reappears after its lease
            return JobRun(error=error, duration_s=time.perf_counter() - started)
        return JobRun(value=value, duration_s=time.perf_counter() - started)

    async def run_async(self, step: Prepared) -> JobRun:
        """Run the job on the running loop (a sync job in a worker thread); what it raises is returned."""
        started = time.perf_counter()
        self._log_start(step)
        try:
            with running(_context(step)), telemetry.active(step.watch):
                if step.definition.is_async:
                    value = await step.definition.run(step.args, step.kwargs)
                else:
                    value = await asyncio.to_thread(step.definition.run, step.args, step.kwargs)
                    if asyncio.iscoroutine(value):
                        value = await value
        except asyncio.CancelledError as cancelled:
            telemetry.raised(step.watch, step.envelope, cancelled, "cancelled")
            raise  # the host cancelled the invocation (timeout, shutdown): not the job's outcome
        except BaseException as error:  # SystemExit & co. must not escape into the host's event loop
            return JobRun(error=error, duration_s=time.perf_counter() - started)
        return JobRun(value=value, duration_s=time.perf_counter() - started)

    def finish(self, step: Prepared, run: JobRun) -> Result:
        """Decide and record the outcome of a run: success, retry copy or poison record."""
        try:
            with telemetry.active(step.watch):
                result = self._finish(step, run)
        except BaseException as exc:
            telemetry.raised(step.watch, step.envelope, exc)
            raise
        telemetry.settled(step.watch, result)
        return result

    def _finish(self, step: Prepared, run: JobRun) -> Result:
        if step.envelope.workflow:  # a workflow step: its workflow retries it (azjobs/workflows/steps.py)
            from ..workflows.steps import report_step

            return self._settled(report_step(self, step, run))
        if run.error is None:
            self.recorder.state.succeeded(step.envelope, step.definition, run.value)  # before the delete
            return self._succeeded(step, run.duration_s)
        return self._failed(step, run.error, run.duration_s)

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

    def _dead_letter_delivery(self, info: MessageInfo, error_info: ErrorInfo, decoded: _Decoded,
                              error: BaseException | None = None) -> Result:
        """Poison a delivery the host gave up on: attempts are the dequeue count when there is no envelope."""
        return self._dead_letter(DeadLetter(info, error_info, envelope=decoded.envelope, raw=decoded.raw,
                                            raw_form=decoded.form,
                                            attempts=None if decoded.envelope else info.dequeue_count),
                                 error=error)

    def _defer_if_early(self, envelope: Envelope, info: MessageInfo) -> Result | None:
        due = parse_time(envelope.due_at)
        remaining = (due - self.clock()).total_seconds()
        if remaining <= 0:
            return None
        hop = min(math.ceil(remaining), int(MAX_VISIBILITY.total_seconds()))
        self.recorder.defer(envelope, info, hop)
        log.info("job %s %s deferred %ss (due %s)", envelope.job, envelope.id, hop, envelope.due_at,
                 extra={"action": "job_deferred", "job": envelope.job, "job_id": envelope.id,
                        "queue": info.queue, "delay_s": hop})
        return self._settled(Result(Outcome.DEFERRED, envelope, detail=f"due {envelope.due_at}", retry_in_s=hop))

    def _log_start(self, step: Prepared) -> None:
        env, info = step.envelope, step.info
        log.debug("job %s %s started (attempt %d, queue %s)", env.job, env.id, env.attempt, info.queue,
                  extra={"action": "job_started", "job": env.job, "job_id": env.id, "queue": info.queue,
                         "attempt": env.attempt, "dequeue_count": info.dequeue_count})

    def _succeeded(self, step: Prepared, duration: float) -> Result:
        env, info = step.envelope, step.info
        log.info("job %s %s succeeded in %.3fs (attempt %d, queue %s)", env.job, env.id, duration, env.attempt,
                 info.queue,
                 extra={"action": "job_succeeded", "job": env.job, "job_id": env.id, "queue": info.queue,
                        "attempt": env.attempt, "dequeue_count": info.dequeue_count,
                        "duration_s": round(duration, 6)})
        return self._settled(Result(Outcome.SUCCEEDED, env, duration_s=duration, ran=True,
                                    payload_ref=env.payload_ref))

    def _skipped(self, env: Envelope, info: MessageInfo, why: str) -> Result:
        log.warning("job %s %s skipped: %s", env.job, env.id, why,
                    extra={"action": "duplicate_skipped", "job": env.job, "job_id": env.id, "queue": info.queue,
                           "dequeue_count": info.dequeue_count})
        return self._settled(Result(Outcome.SKIPPED, env, detail=why))

    def _failed(self, step: Prepared, error: BaseException, duration: float) -> Result:
        env, info = step.envelope, step.info
        log.warning("job %s %s failed after %.3fs: %s: %s", env.job, env.id, duration, type(error).__name__, error,
                    exc_info=(type(error), error, error.__traceback__) if log.isEnabledFor(10) else None,
                    extra={"action": "job_failed", "job": env.job, "job_id": env.id, "queue": info.queue,
                           "attempt": env.attempt, "dequeue_count": info.dequeue_count,
                           "duration_s": round(duration, 6),
                           "error_type": type(error).__name__})
        try:
            decision = step.definition.policy_for(env).decide(error, env.attempt)
        except Exception as exc:  # a broken custom policy must not lose the message
            log.exception("retry policy of %s failed; dead-lettering", env.job,
                          extra={"action": "retry_policy_failed", "job": env.job, "job_id": env.id})
            decision = RetryDecision(None, f"the retry policy raised {type(exc).__name__}: {exc}")
        result = self._settle(env, info, error, decision,
                              reason="fail" if isinstance(error, Fail) else "job_failed",
                              definition=step.definition, arguments=(step.args, step.kwargs))
        result.duration_s, result.ran = duration, True
        return result

    def _settle(self, env: Envelope, info: MessageInfo, error: BaseException, decision: RetryDecision, *,
                reason: str, definition: JobDefinition | None = None,
                arguments: tuple[tuple, dict] | None = None) -> Result:
        first = env.first_failed_at or format_time(self.clock())
        if decision.should_retry:
            copy, delay = self.recorder.retry(env, info, decision.retry_in, first)
            # After the copy is on the queue; an unknown job's delivery counts as an attempt though nothing ran.
            self.recorder.state.retrying(env, error, copy.attempt, attempted=reason == "unknown_job")
            log.info("job %s %s retry %d scheduled in %ss: %s: %s", env.job, env.id, copy.attempt, delay,
                     type(error).__name__, error,
                     extra={"action": "job_retry_scheduled", "job": env.job, "job_id": env.id, "queue": info.queue,
                            "attempt": copy.attempt, "delay_s": delay, "reason": reason})
            return self._settled(Result(Outcome.RETRY_SCHEDULED, env, error=error, detail=decision.reason,
                                        retry_in_s=delay))
        return self._dead_letter(
            DeadLetter(info, ErrorInfo.from_exception(error, reason=reason), envelope=env, first_failed_at=first,
                       detail=decision.reason, arguments=arguments),
            definition=definition, error=error,
        )

    def _dead_letter(self, decision: DeadLetter, *, definition: JobDefinition | None = None,
                     error: BaseException | None = None) -> Result:
        """Write the poison record, then run the job's on_dead_letter hook (a workflow step: report to its workflow)."""
        if decision.envelope is not None and decision.envelope.workflow:
            return self._workflow_step_not_run(decision, error)
        record = self.recorder.dead_letter(decision)
        info, envelope, error_info = decision.info, decision.envelope, decision.error
        self.recorder.state.dead_lettered(envelope, info, error_info, error)  # after the poison record
        log.error("job %s %s on %s dead-lettered (%s): %s", envelope.job if envelope else "(none)",
                  envelope.id if envelope else f"message {info.message_id}", info.queue, error_info.reason,
                  error_info.message,
                  extra={"action": "job_dead_lettered", "job": envelope.job if envelope else None,
                         "job_id": envelope.id if envelope else None, "message_id": info.message_id,
                         "queue": info.queue, "reason": error_info.reason, "attempt": record.attempts})
        if definition is None and envelope is not None and envelope.job in self.registry:
            definition = self.registry.get(envelope.job)
        if definition is not None and definition.on_dead_letter is not None:
            self._run_hook(definition, record)
        return self._settled(Result(Outcome.DEAD_LETTERED, envelope, error=error,
                                    detail=decision.detail or error_info.message,
                                    extra={"poison_record": record, "reason": error_info.reason},
                                    payload_ref=envelope.payload_ref if envelope is not None else None))

    def _workflow_step_not_run(self, decision: DeadLetter, error: BaseException | None) -> Result:
        """A workflow step that will not run: its workflow hears it (azjobs/workflows/steps.py), at once and for
        good when it can never run (unknown job, bad arguments). No poison record and no on_dead_letter hook:
        the workflow's own failure record holds a failed step."""
        from ..workflows.steps import report_not_run

        result = report_not_run(self, decision, error)
        self.recorder.state.dead_lettered(decision.envelope, decision.info, decision.error, error)  # after the report
        return self._settled(result)

    def _run_hook(self, definition: JobDefinition, record: Any) -> None:
        try:
            value = definition.on_dead_letter(record)
            if asyncio.iscoroutine(value):
                asyncio.run(value)
        except Exception:
            log.exception("on_dead_letter hook of %s failed", definition.name,
                          extra={"action": "dead_letter_hook_failed", "job": definition.name})

    def _payload_consumed(self, ref: str) -> bool:
        try:
            return self.payloads.was_consumed(ref)
        except Exception as exc:  # unknown: treat the blob as missing (poison, nothing runs)
            log.warning("could not check whether payload %s was consumed: %s", ref, exc,
                        extra={"action": "payload_check_failed"})
            return False

    def _settled(self, result: Result) -> Result:
        """Every Result the core returns passes here (a seam for test doubles that record them)."""
        return result


async def _within(context: JobContext, job: Any, watch: Any = None) -> Any:
    """Await ``job`` with ``azjobs.current_job()`` set, whichever loop (and thread) runs it.

    A BaseException other than cancellation is wrapped: raised out of a task it would stop
    the event loop itself (asyncio re-raises SystemExit and KeyboardInterrupt).
    """
    with running(context), telemetry.active(watch):
        try:
            return await job
        except (Exception, asyncio.CancelledError):
            raise
        except BaseException as error:
            raise _Raised(error) from None


def _context(step: Prepared) -> JobContext:
    env, info = step.envelope, step.info
    return JobContext(job=env.job, id=env.id, attempt=env.attempt, queue=info.queue, enqueued_at=env.enqueued_at,
                      message_id=info.message_id, dequeue_count=info.dequeue_count, trace=dict(env.trace),
                      scheduled_at=env.scheduled_at, past_due=env.past_due,
                      options=dict(env.options))


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


__all__ = ["Executor", "JobRun", "MessageInfo", "Outcome", "Prepared", "Redeliver", "Result"]
