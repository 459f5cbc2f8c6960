"""The execution core: one message in, one outcome out — on Functions and in the local runner.

``Executor.execute`` decodes a message, finds its registered job, runs it and decides the
outcome: success; a retry copy written with the delay as its visibility; a poison record
written to ``<queue>-poison``; or a deferral for a delay longer than one visibility hop.
Deciding is ``Decisions``' part (azjobs/execution/decisions.py) and writing the
``Recorder``'s (azjobs/execution/recorder.py). When azjobs cannot durably write what a
failure needs, it raises ``Redeliver`` so the host (or the runner) releases the message
instead: a duplicate is preferred to a loss.

A job always reaches an outcome: whatever it raises, ``BaseException`` included
(``sys.exit()``, ``SystemExit``, ``KeyboardInterrupt`` in a thread, ``GeneratorExit``), is a
failure with the error recorded, retried and then poisoned by the job's policy.

The three steps are public so a runner can watch a job between them (the worker's job
timeout): ``begin`` (decode and check; a ``Result`` when nothing is to run), ``run`` (the
job itself; never raises for the job's own errors) and ``finish`` (decide and record).

Features take part through hooks (azjobs/execution/hooks.py): job state, telemetry and
workflow steps are announced each step and may veto a run or take an outcome over; the core
imports none of them. An ``Executor`` made without ``hooks`` runs jobs with none; every host
makes its executor with ``azjobs.hosting.standard_hooks()``.

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
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Sequence

from ..errors import ArgumentError, EnvelopeError, UnknownJobError
from ..model.context import JobContext, running
from ..model.definition import JobDefinition
from ..model.envelope import Envelope, decode_body, utcnow
from ..model.outcome import JobRun, MessageInfo, Outcome, Result
from ..model.poison_record import ErrorInfo
from ..model.registry import Registry
from ..model.registry import registry as default_registry
from ..model.retry import Backoff, RetryPolicy
from ..model.secrets import get_logger
from ..model.settings import QueueSettings
from ..storage.client import Client, default_client
from ..storage.payloads import PayloadError, PayloadStore
from .cancelling import cancellable
from .decisions import Decisions
from .hooks import Handling, HookFactory, Hooks
from .recorder import DeadLetter, Recorder, Redeliver

log = get_logger("azjobs")

# A message naming a job this process does not know is retried (a rolling deploy may
# not have it yet), then poisoned.
UNKNOWN_JOB_POLICY = Backoff()


@dataclass
class Prepared:
    """A decoded, checked message whose job is about to run."""

    envelope: Envelope
    definition: JobDefinition
    args: tuple
    kwargs: dict
    info: MessageInfo
    handling: Handling = field(default=None)  # type: ignore[assignment]  # the delivery, as the hooks see it

    def __post_init__(self) -> None:
        if self.handling is None:
            self.handling = Handling(self.info, self.envelope, self.definition)


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


class Executor(Decisions):
    """Decides and carries out what a message's outcome means. Thread-safe.

    ``hooks`` are factories (usually hook classes) called with the executor: its features, in the
    order they are announced to (``azjobs.hosting.standard_hooks()`` for the standard set).
    """

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
        hooks: Sequence[HookFactory] = (),
    ) -> None:
        self.registry = default_registry if registry is None else registry
        self._client = client
        self._settings = settings
        self.host = host or socket.gethostname()
        self.clock = clock
        self.unknown_job_policy = unknown_job_policy or UNKNOWN_JOB_POLICY
        self._payloads = payloads
        self.recorder = Recorder(self)
        self.hooks = Hooks(self, hooks)

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

    def hook(self, kind: type) -> Any:
        """This executor's hook of class ``kind`` (e.g. ``azjobs.state.tracker.StateTracker``), or None."""
        return self.hooks.of(kind)

    def close(self, deadline: float | None = None) -> None:
        """The host is stopping: let the hooks finish what they kept (until ``deadline``, time.monotonic())."""
        self.hooks.close(deadline)

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
        handling = Handling(info)
        self.hooks.delivered(handling)
        result = self._dead_letter_delivery(handling, ErrorInfo.from_exception(error, reason="max_dequeue_count"),
                                            self._decode(body, encoded), error=error)
        self.hooks.settled(handling, result)
        return result

    def raised(self, step: Prepared, error: BaseException, kind: str) -> None:
        """A host gave up on a run (its watchdog's timeout): the hooks hear it, as for an error the core raises."""
        self.hooks.raised(step.handling, error, kind)

    # -- the three steps -----------------------------------------------------
    def begin(self, body: bytes | str, info: MessageInfo, *, encoded: bool = True) -> Prepared | Result:
        """Decode and check one delivery: the job to run, or the Result of a message that runs nothing."""
        handling = Handling(info)
        self.hooks.delivered(handling)
        try:
            step = self._begin(handling, body, encoded=encoded)
        except BaseException as exc:
            if handling.envelope is None:
                handling.envelope = getattr(exc, "envelope", None)
            self.hooks.raised(handling, exc, "redelivered")
            raise
        if isinstance(step, Result):
            self.hooks.settled(handling, step)
        else:
            self.hooks.started(handling)
        return step

    def _begin(self, h: Handling, body: bytes | str, *, encoded: bool = True) -> Prepared | Result:
        info = h.info
        max_dequeue = self.settings.max_dequeue_count
        decoded = self._decode(body, encoded)
        h.envelope = decoded.envelope
        if info.dequeue_count > max_dequeue:
            # The host's pre-run check: a message that kept crashing or timing out its worker.
            if decoded.envelope is not None and self.hooks.finished_before(h):  # a success whose deletes failed
                return self._skipped(h, "the job already succeeded (its record says so)")
            error = ErrorInfo(
                "azjobs.MaxDequeueCountExceeded",
                f"message was dequeued {info.dequeue_count} times (maxDequeueCount={max_dequeue}) without "
                "finishing: the worker crashed or timed out while running it",
                reason="max_dequeue_count",
            )
            return self._dead_letter_delivery(h, error, decoded)
        if decoded.problem is not None:
            return self._dead_letter(h, DeadLetter(info, ErrorInfo.from_exception(decoded.problem,
                                                                                  reason=decoded.problem.reason),
                                                   raw=decoded.raw, raw_form=decoded.form))
        envelope = decoded.envelope
        assert envelope is not None

        if envelope.due_at is not None:
            deferred = self._defer_if_early(h)
            if deferred is not None:
                return deferred
        try:
            definition = self.registry.get(envelope.job)
        except UnknownJobError as exc:
            if self.hooks.owns_retries(h):  # its feature retries it (a workflow step: its workflow fails now)
                return self._dead_letter(h, DeadLetter(info, ErrorInfo.from_exception(exc, reason="unknown_job"),
                                                       envelope=envelope), error=exc)
            # Nothing is imported or called: only registered jobs run. Retried first, since a
            # rolling deploy may not have the job yet.
            return self._settle(h, exc, self.unknown_job_policy.decide(exc, envelope.attempt), reason="unknown_job")
        h.definition = definition
        args, kwargs = envelope.args, dict(envelope.kwargs)
        if envelope.payload_ref is not None:
            try:
                args, kwargs = self.payloads.load_arguments(envelope.payload_ref)
            except PayloadError as exc:
                if exc.reason == "payload_missing" and self._payload_consumed(envelope.payload_ref):
                    return self._skipped(h, "its claim-checked arguments were consumed by a finished run (a "
                                            "redelivery after the message's delete failed)")
                return self._dead_letter(h, DeadLetter(info, ErrorInfo.from_exception(exc, reason=exc.reason),
                                                       envelope=envelope), error=exc)
            except Exception as exc:
                log.error("could not load the arguments of %s %s from %s: %s", envelope.job, envelope.id,
                          envelope.payload_ref, exc,
                          extra={"action": "payload_load_failed", "job": envelope.job, "job_id": envelope.id,
                                 "queue": info.queue})
                raise Redeliver(f"could not load the arguments from {envelope.payload_ref}: {exc}", envelope) from exc
        try:
            definition.check_arguments(tuple(args), kwargs)
        except ArgumentError as exc:
            return self._dead_letter(h, DeadLetter(info, ErrorInfo.from_exception(exc, reason="bad_arguments"),
                                                   envelope=envelope), error=exc)
        h.arguments = (tuple(args), kwargs)
        verdict = self.hooks.before_run(h)  # limits: a slot and a token; job state: RUNNING, or why not
        if verdict is not None and verdict.action == "skip":
            return self._skipped(h, verdict.why)
        if verdict is not None and verdict.action == "throttle":
            return self._throttled(h, verdict)
        if verdict is not None and verdict.action == "cancel":
            return self._cancelled(h, verdict.why)
        if verdict is not None:
            self.recorder.defer(envelope, info, verdict.defer_s)
            log.info("job %s %s deferred %ss: %s", envelope.job, envelope.id, verdict.defer_s, verdict.why,
                     extra={"action": "job_deferred", "job": envelope.job, "job_id": envelope.id,
                            "queue": info.queue, "delay_s": verdict.defer_s, "reason": "running_elsewhere"})
            return self._settled(Result(Outcome.DEFERRED, envelope, detail=verdict.why, retry_in_s=verdict.defer_s))
        return Prepared(envelope, definition, tuple(args), kwargs, info, h)

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
            with running(context), self.hooks.running(step.handling):
                value = step.definition.run(step.args, step.kwargs)
                if asyncio.iscoroutine(value):
                    job = _within(context, value, self.hooks, step.handling)
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
            with running(_context(step)), self.hooks.running(step.handling):
                if step.definition.is_async:
                    value = await cancellable(_wrapped(step.definition.run(step.args, step.kwargs)),
                                              step.handling.cancellation, step.envelope.id)
                else:
                    value = await asyncio.to_thread(step.definition.run, step.args, step.kwargs)
                    if asyncio.iscoroutine(value):
                        value = await value
        except asyncio.CancelledError as cancelled:
            self.hooks.raised(step.handling, cancelled, "cancelled")
            raise  # the host cancelled the invocation (timeout, shutdown): not the job's outcome
        except _Raised as wrapped:
            return JobRun(error=wrapped.error, duration_s=time.perf_counter() - started)
        except BaseException as error:  # SystemExit & co. must not escape into the host's event loop
            return JobRun(error=error, duration_s=time.perf_counter() - started)
        return JobRun(value=value, duration_s=time.perf_counter() - started)

    def finish(self, step: Prepared, run: JobRun) -> Result:
        """Decide and record the outcome of a run: success, retry copy or poison record."""
        try:
            with self.hooks.running(step.handling):
                result = self._finish(step, run)
        except BaseException as exc:
            self.hooks.raised(step.handling, exc, "redelivered")
            raise
        self.hooks.settled(step.handling, result)
        return result

    def _finish(self, step: Prepared, run: JobRun) -> Result:
        taken = self.hooks.settle(step.handling, run)  # a workflow step: its workflow retries it
        if taken is not None:
            return self._settled(taken)
        if step.handling.cancellation.is_set():  # whatever the run gave: its result is discarded
            self.hooks.cancelled(step.handling)  # before the delete
            return self._cancelled(step.handling, "cancelled while it ran", run)
        if run.error is None:
            self.hooks.succeeded(step.handling, run.value)  # before the delete
            return self._succeeded(step, run.duration_s)
        return self._failed(step, run.error, run.duration_s)

    # -- decoding --------------------------------------------------------------
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

    def _dead_letter_delivery(self, h: Handling, error_info: ErrorInfo, decoded: _Decoded,
                              error: BaseException | None = None) -> Result:
        """Poison a delivery the host gave up on: attempts are the dequeue count when there is no envelope."""
        h.envelope = decoded.envelope
        return self._dead_letter(h, DeadLetter(h.info, error_info, envelope=decoded.envelope, raw=decoded.raw,
                                               raw_form=decoded.form,
                                               attempts=None if decoded.envelope else h.info.dequeue_count),
                                 error=error)

    def _log_start(self, step: Prepared) -> None:
        env, info = step.envelope, step.info
        log.debug("job %s %s started (attempt %d, queue %s)", env.job, env.id, env.attempt, info.queue,
                  extra={"action": "job_started", "job": env.job, "job_id": env.id, "queue": info.queue,
                         "attempt": env.attempt, "dequeue_count": info.dequeue_count})


async def _within(context: JobContext, job: Any, hooks: Hooks, handling: Handling) -> Any:
    """Await ``job`` with ``azjobs.current_job()`` set, whichever loop (and thread) runs it.

    A BaseException other than cancellation is wrapped: raised out of a task it would stop
    the event loop itself (asyncio re-raises SystemExit and KeyboardInterrupt).
    """
    with running(context), hooks.running(handling):
        return await cancellable(_wrapped(job), handling.cancellation, context.id)


async def _wrapped(job: Any) -> Any:
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
                      options=dict(env.options), cancellation=step.handling.cancellation)


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


__all__ = ["Executor", "JobRun", "MessageInfo", "Outcome", "Prepared", "Redeliver", "Result"]
