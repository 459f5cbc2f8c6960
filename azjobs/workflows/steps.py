"""A workflow step run by the worker: the execution core reports its outcome to the workflows queue.

A step message is an ordinary azjobs envelope on its job's queue with a ``workflow``
reference (``{"id", "task", "queue"}``). The core runs it like any job; ``finish`` then
hands the outcome here instead of deciding retries, because the workflow's orchestrator
owns them (``call_activity_with_retry``, as on Durable Functions). The report is a
``TaskCompleted`` (the return value as JSON) or ``TaskFailed`` (error and traceback)
history event sent to the workflows queue before the step message is deleted; a report
that cannot be written releases the message for redelivery, like any failed settlement.
A step the core will not run is reported too (``report_not_run``): no poison record is
written for a workflow step, whose workflow holds its failure.

A return value too large for the report message (48 KiB of JSON with base64) waits in Blob
Storage (``workflow-results/<uuid>.json`` in the payload container) and the report carries
``ResultRef`` instead of ``Result``: the worker that advances the workflow reads it into the
history and deletes the blob. An error too large for the report is trimmed (its traceback
first) so the workflow always hears of it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from ..errors import ArgumentError, PayloadTooLargeError
from ..execution.recorder import Redeliver
from ..model.envelope import Envelope, encode_text, to_json_value
from ..model.outcome import Outcome, Result
from ..model.poison_record import ErrorInfo
from ..model.secrets import describe, get_logger
from .history import CANNOT_RUN_REASONS, TASK_COMPLETED, TASK_FAILED, cannot_run, cannot_run_of
from .orchestrator import TRIMS, reserved_value, trim_head, trim_tail
from .replay import json_text

if TYPE_CHECKING:
    from ..execution.executor import Executor
    from ..execution.recorder import DeadLetter
    from ..model.outcome import JobRun, MessageInfo

log = get_logger("azjobs.workflows")

RESULTS_PREFIX = "workflow-results/"  # step values too large for their report, in the payload container


def report_step(executor: "Executor", env: Envelope, info: "MessageInfo", run: "JobRun") -> Result:
    """A step that ran: its outcome goes to its workflow (which retries it), not to the core's retry policy."""
    error = run.error
    value = None
    if error is None:
        try:
            value = to_json_value(run.value, f"the return value of {env.job}")
        except ArgumentError as exc:
            error = exc
        else:
            if cannot_run_of(value) is not None:
                error = ArgumentError(reserved_value(env.job))
    if error is None:
        text = _completed_text(executor, env, value)
    else:
        text = _failed_text(executor, env, ErrorInfo.from_exception(error))
    _write(executor, env, text)
    outcome = "succeeded" if error is None else "failed"
    log.info("workflow %s step %s %s %s in %.3fs (attempt reported to %s)", env.workflow.get("id"), env.job, env.id,
             outcome, run.duration_s, env.workflow.get("queue"),
             extra={"action": "workflow_step_" + outcome, "job": env.job, "job_id": env.id,
                    "workflow_id": env.workflow.get("id"), "queue": info.queue,
                    "duration_s": round(run.duration_s, 6)})
    return Result(Outcome.SUCCEEDED, env, error=error, duration_s=run.duration_s, ran=True,
                  detail="" if error is None else "step failed; reported to its workflow",
                  payload_ref=env.payload_ref)


def report_not_run(executor: "Executor", decision: "DeadLetter", error: BaseException | None) -> Result:
    """A step message the core will not run; its workflow hears it and no poison record is written.

    One that can never run (``unknown_job``: its job is not registered here; ``bad_arguments``: its
    stored arguments no longer fit the job) reports ``history.cannot_run``, so its workflow fails at
    once instead of retrying it. Any other (a worker that kept crashing on it, claim-checked
    arguments that are gone) fails this attempt, which the workflow's retry policy may repeat: the
    step is sent again from the workflow's history. The workflow's own failure record, on the
    workflows queue's poison queue, holds the failure if the workflow fails.
    """
    env, info = decision.envelope, decision.error
    permanent = info.reason in CANNOT_RUN_REASONS
    if permanent:
        value = cannot_run(info.reason, info.type, info.message)
        text = _encode(executor, env, {"EventType": TASK_COMPLETED, "EventId": -1,
                                       "TaskScheduledId": env.workflow["task"], "Result": json_text(value)})
    else:
        text = _failed_text(executor, env, info)
    _write(executor, env, text)
    what = "can never run; its workflow fails" if permanent else "did not run; reported to its workflow as failed"
    log.warning("workflow %s step %s %s %s (%s): %s", env.workflow.get("id"), env.job, env.id, what, info.reason,
                info.message, extra={"action": "workflow_step_not_run", "job": env.job, "job_id": env.id,
                                     "workflow_id": env.workflow.get("id"), "queue": decision.info.queue,
                                     "reason": info.reason})
    return Result(Outcome.DEAD_LETTERED, env, error=error, detail=f"workflow step {what}: {info.message}",
                  extra={"poison_record": None, "reason": info.reason, "workflow": env.workflow.get("id")},
                  payload_ref=env.payload_ref)


def _completed_text(executor: "Executor", env: Envelope, value: Any) -> str:
    result = json_text(value)
    event = {"EventType": TASK_COMPLETED, "EventId": -1, "TaskScheduledId": env.workflow["task"], "Result": result}
    try:
        return _encode(executor, env, event)
    except PayloadTooLargeError:
        pass
    try:
        ref = executor.payloads.put(f"{RESULTS_PREFIX}{uuid.uuid4()}.json", result.encode("utf-8"))
    except Exception as exc:  # the step's message comes back and the job runs again: nothing is lost
        raise Redeliver(f"could not store the return value of workflow step {env.job} in Blob Storage: "
                        f"{describe(exc)}", env) from exc
    log.info("workflow %s step %s: return value of %s characters kept in blob %s", env.workflow.get("id"), env.job,
             f"{len(result):,}", ref, extra={"action": "workflow_step_value_offloaded", "job": env.job,
                                              "job_id": env.id, "workflow_id": env.workflow.get("id")})
    return _encode(executor, env, {"EventType": TASK_COMPLETED, "EventId": -1, "TaskScheduledId": env.workflow["task"],
                                   "ResultRef": ref})


def _failed_text(executor: "Executor", env: Envelope, error: ErrorInfo) -> str:
    """The TaskFailed report; an error too large for the message is trimmed (traceback first) until it fits."""
    reason, details = f"{error.type}: {error.message}", error.traceback
    for keep_reason, keep_details in TRIMS:
        event = {"EventType": TASK_FAILED, "EventId": -1, "TaskScheduledId": env.workflow["task"],
                 "Reason": trim_head(reason, keep_reason, "the report message"),
                 "Details": trim_tail(details, keep_details, "the report message")}
        try:
            return _encode(executor, env, event)
        except PayloadTooLargeError:
            continue
    # Not reached: 500 characters of error without a traceback always fit.
    raise PayloadTooLargeError(f"the failure report of workflow step {env.job} does not fit a message")


def _encode(executor: "Executor", envelope: Envelope, event: dict[str, Any]) -> str:
    from .driver import event_message

    return encode_text(event_message(envelope.workflow["id"], event), executor.settings.message_encoding)


def _write(executor: "Executor", envelope: Envelope, text: str) -> None:
    executor.recorder.write(envelope.workflow["queue"], text, 0, None, envelope, "workflow step report")


__all__ = ["report_not_run", "report_step"]
