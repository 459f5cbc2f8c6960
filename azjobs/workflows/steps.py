"""A workflow step run by the worker: the execution core reports its outcome to the workflows queue.

A step message is an ordinary azjobs envelope on its job's queue with a ``workflow``
reference (``{"id", "task", "queue"}``). The core runs it like any job; ``finish`` then
hands the outcome here instead of deciding retries, because the workflow's orchestrator
owns them (``call_activity_with_retry``, as on Durable Functions). The report is a
``TaskCompleted`` (the return value as JSON) or ``TaskFailed`` (error and traceback)
history event sent to the workflows queue before the step message is deleted; a report
that cannot be written releases the message for redelivery, like any failed settlement.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import ArgumentError, PayloadTooLargeError
from ..message import Envelope, encode_text, to_json_value
from ..poison import ErrorInfo
from ..secrets import get_logger
from .history import TASK_COMPLETED, TASK_FAILED

if TYPE_CHECKING:
    from ..core import Executor, JobRun, Prepared, Result

log = get_logger("azjobs.workflows")


def report_step(executor: "Executor", step: "Prepared", run: "JobRun") -> "Result":
    from ..core import Outcome, Result

    env = step.envelope
    error = run.error
    value = None
    if error is None:
        try:
            value = to_json_value(run.value, f"the return value of {env.job}")
        except ArgumentError as exc:
            error = exc
    text = None
    if error is None:
        event = {"EventType": TASK_COMPLETED, "EventId": -1, "TaskScheduledId": env.workflow["task"],
                 "Result": json.dumps(value)}
        try:
            text = _encode(executor, env, event)
        except PayloadTooLargeError as exc:  # the value cannot travel back: the step fails, and says why
            error = PayloadTooLargeError(f"the return value of workflow step {env.job} is too large for its report "
                                         f"message ({exc}); return a reference (a blob name, a row id) instead")
    if error is not None:
        info = ErrorInfo.from_exception(error)
        event = {"EventType": TASK_FAILED, "EventId": -1, "TaskScheduledId": env.workflow["task"],
                 "Reason": f"{info.type}: {info.message}", "Details": info.traceback}
        text = _encode(executor, env, event)
    _write(executor, env, text)
    outcome = "succeeded" if error is None else "failed"
    log.info("workflow %s step %s %s %s in %.3fs (attempt reported to %s)", env.workflow.get("id"), env.job, env.id,
             outcome, run.duration_s, env.workflow.get("queue"),
             extra={"action": "workflow_step_" + outcome, "job": env.job, "job_id": env.id,
                    "workflow_id": env.workflow.get("id"), "queue": step.info.queue,
                    "duration_s": round(run.duration_s, 6)})
    return Result(Outcome.SUCCEEDED, env, error=error, duration_s=run.duration_s, ran=True,
                  detail="" if error is None else "step failed; reported to its workflow",
                  payload_ref=env.payload_ref)


def report_dead_letter(executor: "Executor", envelope: Envelope, error: ErrorInfo) -> None:
    """A step message the core dead-lettered without running it (unknown job, bad arguments)."""
    _send(executor, envelope, {"EventType": TASK_FAILED, "EventId": -1, "TaskScheduledId": envelope.workflow["task"],
                               "Reason": f"{error.type}: {error.message}", "Details": error.traceback})


def _encode(executor: "Executor", envelope: Envelope, event: dict[str, Any]) -> str:
    from .driver import event_message

    return encode_text(event_message(envelope.workflow["id"], event), executor.settings.message_encoding)


def _send(executor: "Executor", envelope: Envelope, event: dict[str, Any]) -> None:
    _write(executor, envelope, _encode(executor, envelope, event))


def _write(executor: "Executor", envelope: Envelope, text: str) -> None:
    executor.recorder.write(envelope.workflow["queue"], text, 0, None, envelope, "workflow step report")


__all__ = ["report_dead_letter", "report_step"]
