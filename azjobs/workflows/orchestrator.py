"""The one orchestrator: interprets a workflow spec, deterministically, with the Durable API.

The same generator function is the body of the generated orchestration trigger on Azure
Functions and what the off-cloud driver replays (azjobs/workflows/driver.py). It reads
only its input and the context: each step is ``call_activity_with_retry`` of the one
activity (``ACTIVITY``) with the step job's retry policy as ``RetryOptions``; a group is
``task_all`` of its steps; a sleep is ``create_timer`` at ``current_utc_datetime`` plus
the delay (the SDK splits timers longer than the host's maximum itself).

The activity runs any registered job by name through the execution core
(``Executor.begin`` and ``run_async``, as every other path does); its retries are the
orchestrator's (Durable's), so the core does not write retry copies for it. A step that can
never run (its job is not registered, or its arguments no longer fit the job) returns the
``history.cannot_run`` value instead of raising, and the orchestrator fails the workflow at
once: a raise would be retried for every attempt the step has.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any, Generator, Mapping

from ..errors import ArgumentError, PayloadTooLargeError, UnknownJobError
from ..model.envelope import Envelope, to_json_value
from .history import CANNOT_RUN, cannot_run, cannot_run_error, cannot_run_of

ORCHESTRATOR = "azjobs_workflow"
ACTIVITY = "azjobs_workflow_step"
START = "azjobs_workflow_start"
# How much of an error's text and of its traceback a message keeps when the whole does not fit, tried in turn.
TRIMS = ((None, None), (16_000, 16_000), (4_000, 2_000), (500, 0))


def orchestrator(context: Any) -> Generator[Any, Any, Any]:
    """The orchestrator function: run the spec's root node and return its value.

    A step out of attempts, or one that reports it can never run, fails the workflow, after one
    more call of the activity that writes the failure record (step, error, traceback) to the
    workflows queue's poison queue.
    """
    spec = context.get_input()
    if isinstance(spec, str):
        spec = json.loads(spec)
    try:
        value, _ = yield from _run(context, spec["root"], None, False, "0", spec.get("trace"))
    except StepOutOfAttempts as failed:
        yield context.call_activity(ACTIVITY, {"failure": {"workflow": context.instance_id, "step": failed.step,
                                                           "error": failed.error}})
        raise
    return value


class StepOutOfAttempts(Exception):
    """A step (or one of a group's steps) failed its last attempt; ``step`` names it, ``error`` is its error."""

    def __init__(self, step: dict, error: str) -> None:
        super().__init__(error)
        self.step = step
        self.error = error


def _run(context: Any, node: Mapping[str, Any], value: Any, has_value: bool, path: str, trace: Any = None):
    if "step" in node:
        try:
            result = yield _call(context, node, value, has_value, path, trace)
        except Exception as exc:
            raise StepOutOfAttempts({"path": path, "job": node["step"]}, str(exc)) from None
        _fail_if_cannot_run(result, {"path": path, "job": node["step"]})
        return result, True
    if "chain" in node:
        for index, child in enumerate(node["chain"]):
            value, has_value = yield from _run(context, child, value, has_value, f"{path}.{index}", trace)
        return value, has_value
    if "group" in node:
        tasks = [_call(context, child, value, has_value, f"{path}.{index}", trace)
                 for index, child in enumerate(node["group"])]
        try:
            results = yield context.task_all(tasks)
        except Exception as exc:  # the first failure among the group's steps
            raise StepOutOfAttempts({"path": path, "job": [child["step"] for child in node["group"]]},
                                    str(exc)) from None
        for index, (child, result) in enumerate(zip(node["group"], results)):
            _fail_if_cannot_run(result, {"path": f"{path}.{index}", "job": child["step"]})
        return list(results), True
    if "sleep_s" in node:
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=node["sleep_s"]))
        return value, has_value
    raise ValueError(f"unknown workflow node {node!r}")


def _fail_if_cannot_run(result: Any, step: dict) -> None:
    """A step that reported it can never run (``history.cannot_run``) fails its workflow now, not after retries."""
    why = cannot_run_of(result)
    if why is not None:
        raise StepOutOfAttempts(step, cannot_run_error(step, why))


def _call(context: Any, node: Mapping[str, Any], value: Any, has_value: bool, path: str, trace: Any = None):
    from azure.durable_functions import RetryOptions

    args = list(node.get("args", []))
    if has_value and not node.get("ignore_input"):
        args.insert(0, value)
    retry = node["retry"]
    call = {"job": node["step"], "args": args, "kwargs": dict(node.get("kwargs", {})), "queue": node.get("queue"),
            "path": path, "workflow": context.instance_id}
    if trace:  # the enqueuer's trace context (azjobs.telemetry): each step's job span continues it
        call["trace"] = trace
    return context.call_activity_with_retry(ACTIVITY, RetryOptions(retry["first_retry_ms"], retry["attempts"]), call)


class StepFailed(Exception):
    """A workflow step's job raised: the message names its type and text; the traceback follows."""


def step_envelope(call: Mapping[str, Any]) -> Envelope:
    """The envelope one step call runs as (its queue is the step job's queue)."""
    trace = call.get("trace")
    return Envelope.build(call["job"], tuple(call.get("args", [])), call.get("kwargs") or {},
                          queue=call.get("queue"), trace=dict(trace) if isinstance(trace, dict) else {})


async def run_activity(executor: Any, call: Mapping[str, Any] | str, workflows: str) -> Any:
    """Run one step (the activity's body): the job's value, or StepFailed with its error and traceback."""
    from ..model.outcome import MessageInfo, Result
    from ..model.poison_record import ErrorInfo

    if isinstance(call, str):
        call = json.loads(call)
    if "failure" in call:
        await asyncio.to_thread(write_failure_record, executor.client, workflows, call["failure"])
        return None
    try:
        definition = executor.registry.get(call["job"])
    except UnknownJobError as exc:  # it can never run here: the workflow fails at once (Durable would retry a raise)
        return cannot_run("unknown_job", _type_name(exc), str(exc))
    envelope = step_envelope(call)
    try:
        definition.check_arguments(envelope.args, envelope.kwargs)
    except ArgumentError as exc:  # its stored arguments no longer fit the job: the same
        return cannot_run("bad_arguments", _type_name(exc), str(exc))
    info = MessageInfo(queue=envelope.queue or definition.queue, message_id=f"{call.get('workflow')}:{call.get('path')}")
    step = await asyncio.to_thread(executor.begin, envelope.to_json(), info, encoded=False)
    if isinstance(step, Result):  # pragma: no cover - begin only settles unknown jobs and bad arguments, checked above
        raise StepFailed(f"step {call['job']} did not run: {step.outcome.value} {step.detail}")
    run = await executor.run_async(step)
    if run.error is not None:
        error = ErrorInfo.from_exception(run.error)
        raise StepFailed(f"{error.type}: {error.message}\n{error.traceback}")
    try:
        value = to_json_value(run.value, f"the return value of {call['job']}")
    except ArgumentError as exc:
        raise StepFailed(f"{type(exc).__name__}: {exc}") from None
    if cannot_run_of(value) is not None:
        raise StepFailed(f"ArgumentError: {reserved_value(call['job'])}")
    return value


def reserved_value(job: str) -> str:
    return (f"the return value of {job} is an object whose only key is {CANNOT_RUN!r}, which azjobs reserves for "
            "workflow steps that cannot run")


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def write_failure_record(client: Any, workflows: str, failure: Mapping[str, Any]) -> None:
    """The failed workflow's poison record on ``<workflows>-poison``: which step, its error and traceback."""
    from ..model.envelope import encode_text, format_time, utcnow
    from ..model.poison_record import ErrorInfo, PoisonRecord
    from ..model.queue_names import poison_queue_name

    text = failure.get("error") or "the workflow failed"
    reason, _, details = text.partition(" \n ")  # the SDK's "{Reason} \n {Details}" of a failed task
    first = reason.splitlines()[0] if reason else "workflow failed"
    kind, _, message = first.partition(": ")
    error = ErrorInfo(type=kind if message else "WorkflowFailed", message=message or first,
                      traceback=(details or reason).strip(), reason="workflow_failed")
    step = failure.get("step") or {}
    job = step.get("job") if isinstance(step.get("job"), str) else None
    record = PoisonRecord(queue=workflows, error=error, attempts=1, last_failed_at=format_time(utcnow()),
                          message_id=failure.get("workflow"), job_name=job)
    # An error too large for the poison message is trimmed, traceback first: the record is always written.
    for keep_message, keep_traceback in TRIMS:
        trimmed = replace(error, message=trim_head(error.message, keep_message, "the poison message"),
                          traceback=trim_tail(error.traceback, keep_traceback, "the poison message"))
        data = replace(record, error=trimmed).to_dict()
        data["workflow"] = {"id": failure.get("workflow"), "step": failure.get("step")}
        try:
            text = encode_text(json.dumps(data, ensure_ascii=False), client.encoding)
        except PayloadTooLargeError:
            continue
        client.send_text(poison_queue_name(workflows), text, create=True)
        return
    raise PayloadTooLargeError(f"the failure record of workflow {failure.get('workflow')} does not fit a message")


def trim_head(text: str, keep: int | None, where: str) -> str:
    """The first ``keep`` characters of ``text``, marked as trimmed (``keep`` None: all of it)."""
    return text if keep is None or len(text) <= keep else f"{text[:keep]} … (trimmed to fit {where})"


def trim_tail(text: str, keep: int | None, where: str) -> str:
    """The last ``keep`` characters of ``text`` (a traceback ends with the error), marked as trimmed."""
    if keep is None or len(text) <= keep:
        return text
    return f"… (trimmed to fit {where})\n{text[-keep:]}" if keep else f"(trimmed to fit {where})"


__all__ = ["ACTIVITY", "ORCHESTRATOR", "START", "TRIMS", "StepFailed", "StepOutOfAttempts", "orchestrator",
           "reserved_value", "run_activity", "step_envelope", "trim_head", "trim_tail", "write_failure_record"]
