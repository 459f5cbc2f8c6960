"""Deciding an outcome: success, a retry copy, a deferral hop, a skip, a cancel or a poison record.

The ``Executor`` (azjobs/execution/executor.py) decodes, checks and runs; these methods decide
what the run (or the message that could not run) means and have the ``Recorder`` write it,
announcing each decision to the hooks: ``retrying`` after the retry copy is on the queue,
``not_run`` before a poison record (a hook may take the decision over), ``dead_lettered``
after it. Every ``Result`` passes ``_settled`` (a seam for test doubles that record them).
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from ..errors import Fail
from ..model.envelope import format_time, parse_time
from ..model.outcome import JobRun, Outcome, Result
from ..model.poison_record import ErrorInfo
from ..model.retry import RetryDecision
from ..model.secrets import get_logger
from ..storage.delays import MAX_VISIBILITY
from .hooks import Handling, Verdict
from .recorder import DeadLetter

if TYPE_CHECKING:
    from ..model.definition import JobDefinition
    from .executor import Executor, Prepared

log = get_logger("azjobs")


class Decisions:
    """The outcome half of the ``Executor`` (a mixin: ``self`` is the executor)."""

    def _defer_if_early(self: "Executor", h: Handling) -> Result | None:
        envelope, info = h.envelope, h.info
        assert envelope is not None and envelope.due_at is not None
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

    def _throttled(self: "Executor", h: Handling, verdict: "Verdict") -> Result:
        """A limit had no room: the same message again later (a deferral hop), no attempt used."""
        envelope, info = h.envelope, h.info
        assert envelope is not None
        self.recorder.defer(envelope, info, verdict.defer_s)
        log.info("job %s %s throttled for %ss: %s", envelope.job, envelope.id, verdict.defer_s, verdict.why,
                 extra={"action": "job_throttled", "job": envelope.job, "job_id": envelope.id, "queue": info.queue,
                        "delay_s": verdict.defer_s, "dequeue_count": info.dequeue_count})
        return self._settled(Result(Outcome.THROTTLED, envelope, detail=verdict.why, retry_in_s=verdict.defer_s))

    def _succeeded(self: "Executor", step: "Prepared", duration: float) -> Result:
        env, info = step.envelope, step.info
        log.info("job %s %s succeeded in %.3fs (attempt %d, queue %s)", env.job, env.id, duration, env.attempt,
                 info.queue,
                 extra={"action": "job_succeeded", "job": env.job, "job_id": env.id, "queue": info.queue,
                        "attempt": env.attempt, "dequeue_count": info.dequeue_count,
                        "duration_s": round(duration, 6)})
        return self._settled(Result(Outcome.SUCCEEDED, env, duration_s=duration, ran=True,
                                    payload_ref=env.payload_ref))

    def _skipped(self: "Executor", h: Handling, why: str) -> Result:
        env, info = h.envelope, h.info
        assert env is not None
        log.warning("job %s %s skipped: %s", env.job, env.id, why,
                    extra={"action": "duplicate_skipped", "job": env.job, "job_id": env.id, "queue": info.queue,
                           "dequeue_count": info.dequeue_count})
        return self._settled(Result(Outcome.SKIPPED, env, detail=why))

    def _cancelled(self: "Executor", h: Handling, why: str, run: JobRun | None = None) -> Result:
        """A cancelled job: its message is deleted, not retried, not poisoned; a run's result is discarded."""
        env, info = h.envelope, h.info
        assert env is not None
        duration = run.duration_s if run is not None else 0.0
        log.info("job %s %s cancelled: %s", env.job, env.id, why,
                 extra={"action": "job_cancelled", "job": env.job, "job_id": env.id, "queue": info.queue,
                        "attempt": env.attempt, "dequeue_count": info.dequeue_count, "ran": run is not None,
                        "duration_s": round(duration, 6)})
        return self._settled(Result(Outcome.CANCELLED, env, detail=why, duration_s=duration, ran=run is not None,
                                    payload_ref=env.payload_ref))

    def _failed(self: "Executor", step: "Prepared", error: BaseException, duration: float) -> Result:
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
        result = self._settle(step.handling, error, decision,
                              reason="fail" if isinstance(error, Fail) else "job_failed",
                              arguments=(step.args, step.kwargs))
        result.duration_s, result.ran = duration, True
        return result

    def _settle(self: "Executor", h: Handling, error: BaseException, decision: RetryDecision, *, reason: str,
                arguments: tuple[tuple, dict] | None = None) -> Result:
        env, info = h.envelope, h.info
        assert env is not None
        first = env.first_failed_at or format_time(self.clock())
        if decision.should_retry:
            copy, delay = self.recorder.retry(env, info, decision.retry_in, first)
            # After the copy is on the queue; an unknown job's delivery counts as an attempt though nothing ran.
            self.hooks.retrying(h, error, copy.attempt, attempted=reason == "unknown_job")
            log.info("job %s %s retry %d scheduled in %ss: %s: %s", env.job, env.id, copy.attempt, delay,
                     type(error).__name__, error,
                     extra={"action": "job_retry_scheduled", "job": env.job, "job_id": env.id, "queue": info.queue,
                            "attempt": copy.attempt, "delay_s": delay, "reason": reason})
            return self._settled(Result(Outcome.RETRY_SCHEDULED, env, error=error, detail=decision.reason,
                                        retry_in_s=delay))
        return self._dead_letter(
            h, DeadLetter(info, ErrorInfo.from_exception(error, reason=reason), envelope=env, first_failed_at=first,
                          detail=decision.reason, arguments=arguments),
            error=error,
        )

    def _dead_letter(self: "Executor", h: Handling, decision: DeadLetter, *,
                     error: BaseException | None = None) -> Result:
        """Write the poison record, then run the job's on_dead_letter hook; a hook may take the decision over."""
        taken = self.hooks.not_run(h, decision, error)  # a workflow step: reported to its workflow, no record
        if taken is not None:
            self.hooks.dead_lettered(h, decision, None, error)  # after the report
            return self._settled(taken)
        record = self.recorder.dead_letter(decision)
        info, envelope, error_info = decision.info, decision.envelope, decision.error
        self.hooks.dead_lettered(h, decision, record, error)  # after the poison record
        log.error("job %s %s on %s dead-lettered (%s): %s", envelope.job if envelope else "(none)",
                  envelope.id if envelope else f"message {info.message_id}", info.queue, error_info.reason,
                  error_info.message,
                  extra={"action": "job_dead_lettered", "job": envelope.job if envelope else None,
                         "job_id": envelope.id if envelope else None, "message_id": info.message_id,
                         "queue": info.queue, "reason": error_info.reason, "attempt": record.attempts})
        definition = h.definition
        if definition is None and envelope is not None and envelope.job in self.registry:
            definition = self.registry.get(envelope.job)
        if definition is not None and definition.on_dead_letter is not None:
            _run_on_dead_letter(definition, record)
        return self._settled(Result(Outcome.DEAD_LETTERED, envelope, error=error,
                                    detail=decision.detail or error_info.message,
                                    extra={"poison_record": record, "reason": error_info.reason},
                                    payload_ref=envelope.payload_ref if envelope is not None else None))

    def _payload_consumed(self: "Executor", ref: str) -> bool:
        try:
            return self.payloads.was_consumed(ref)
        except Exception as exc:  # unknown: treat the blob as missing (poison, nothing runs)
            log.warning("could not check whether payload %s was consumed: %s", ref, exc,
                        extra={"action": "payload_check_failed"})
            return False

    def _settled(self, result: Result) -> Result:
        """Every Result the core returns passes here (a seam for test doubles that record them)."""
        return result


def _run_on_dead_letter(definition: "JobDefinition", record: Any) -> None:
    try:
        value = definition.on_dead_letter(record)
        if asyncio.iscoroutine(value):
            asyncio.run(value)
    except Exception:
        log.exception("on_dead_letter hook of %s failed", definition.name,
                      extra={"action": "dead_letter_hook_failed", "job": definition.name})


__all__ = ["Decisions"]
