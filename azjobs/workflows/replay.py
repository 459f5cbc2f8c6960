"""History events in the Durable extension's JSON format, and one replay of an orchestrator over them.

``replay(fn, instance_id, events)`` is exactly what the host's call of an orchestrator
does: ``Orchestrator(fn).handle(DurableOrchestrationContext.from_json(body))`` on the
body the host sends (``{"history", "instanceId", "isReplaying", "parentInstanceId",
"input", "upperSchemaVersion", ...}``). It returns the orchestrator state
(``isDone``, ``actions``, ``output``, ``error``) and the context, whose open tasks say
which history ids the orchestrator now waits on (the ids the extension assigns).
Schema V3 with the host's timer limits makes the SDK split long timers as it does on Azure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from .history import (
    EXECUTION_COMPLETED,
    EXECUTION_STARTED,
    ORCHESTRATOR_COMPLETED,
    ORCHESTRATOR_STARTED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_SCHEDULED,
    TIMER_CREATED,
    TIMER_FIRED,
)

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # azure.durable_functions.constants.DATETIME_STRING_FORMAT
SCHEMA_VERSION = 2  # ReplaySchema.V3 (value 2): WhenAll as one compound action, long timers split by the SDK
# The Azure Storage backend's limits, as the host passes them (timers over 6 days are split in 3-day hops).
MAX_SHORT_TIMER = "6.00:00:00"
LONG_TIMER_INTERVAL = "3.00:00:00"
OUT_OF_PROC_MARK = "\n\n$OutOfProcData$:"


def json_text(value: Any) -> str:
    """A value as the JSON text an event carries (``Input``, ``Result``): characters as they are, not
    ``\\u`` escapes, so an emoji costs the history two UTF-16 units rather than twelve."""
    return json.dumps(value, ensure_ascii=False)


def stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(tzinfo=None).strftime(TIME_FORMAT)


def _event(kind: int, moment: datetime, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {"EventType": kind, "EventId": event_id, "IsPlayed": False, "Timestamp": stamp(moment), **fields}


def orchestrator_started(moment: datetime) -> dict[str, Any]:
    return _event(ORCHESTRATOR_STARTED, moment)


def orchestrator_completed(moment: datetime) -> dict[str, Any]:
    return _event(ORCHESTRATOR_COMPLETED, moment)


def execution_started(moment: datetime, name: str, input_: Any) -> dict[str, Any]:
    return _event(EXECUTION_STARTED, moment, Name=name, Version="", Input=json_text(input_))


def execution_completed(moment: datetime, status: str, result: Any = None, reason: str | None = None) -> dict[str, Any]:
    return _event(EXECUTION_COMPLETED, moment, OrchestrationStatus=status, Result=json_text(result), Reason=reason)


def task_scheduled(moment: datetime, task_id: int, name: str, input_: Any) -> dict[str, Any]:
    return _event(TASK_SCHEDULED, moment, task_id, Name=name, Version="", Input=json_text(input_))


def task_completed(moment: datetime, task_id: int, result: Any) -> dict[str, Any]:
    return _event(TASK_COMPLETED, moment, TaskScheduledId=task_id, Result=json_text(result))


def task_failed(moment: datetime, task_id: int, reason: str, details: str = "") -> dict[str, Any]:
    return _event(TASK_FAILED, moment, TaskScheduledId=task_id, Reason=reason, Details=details)


def timer_created(moment: datetime, timer_id: int, fire_at: str) -> dict[str, Any]:
    return _event(TIMER_CREATED, moment, timer_id, FireAt=fire_at)


def timer_fired(moment: datetime, timer_id: int, fire_at: str) -> dict[str, Any]:
    return _event(TIMER_FIRED, moment, TimerId=timer_id, FireAt=fire_at)


def body(instance_id: str, events: list[dict[str, Any]]) -> str:
    """The orchestration trigger's payload as the host sends it (the input is ExecutionStarted's)."""
    started = next((e for e in events if e.get("EventType") == EXECUTION_STARTED), {})
    return json.dumps({"history": events, "instanceId": instance_id, "isReplaying": False, "parentInstanceId": None,
                       "input": started.get("Input"), "upperSchemaVersion": SCHEMA_VERSION,
                       "maximumShortTimerDuration": MAX_SHORT_TIMER,
                       "longRunningTimerIntervalDuration": LONG_TIMER_INTERVAL})


@dataclass
class Replayed:
    state: dict[str, Any]  # isDone, actions, output, error, customStatus
    context: Any  # the DurableOrchestrationContext after the replay (open_tasks)

    @property
    def done(self) -> bool:
        return bool(self.state.get("isDone"))

    @property
    def failed(self) -> bool:
        return self.state.get("error") is not None

    @property
    def actions(self) -> list[dict[str, Any]]:
        return [action for group in self.state.get("actions", []) for action in group]


def replay(fn: Callable[[Any], Any], instance_id: str, events: list[dict[str, Any]]) -> Replayed:
    """Run ``fn`` over ``events`` with the Durable package's replay; a failed orchestration is a state too."""
    from azure.durable_functions.models import DurableOrchestrationContext
    from azure.durable_functions.orchestrator import Orchestrator

    context = DurableOrchestrationContext.from_json(body(instance_id, events))
    try:
        state = json.loads(Orchestrator(fn).handle(context))
    except Exception as exc:  # the orchestrator raised: the state rides in the message, as for the host
        text = str(exc)
        if OUT_OF_PROC_MARK not in text:
            raise
        state = json.loads(text.split(OUT_OF_PROC_MARK, 1)[1])
    return Replayed(state, context)


__all__ = ["Replayed", "body", "execution_completed", "execution_started", "json_text", "orchestrator_completed",
           "orchestrator_started", "replay", "stamp", "task_completed", "task_failed", "task_scheduled",
           "timer_created", "timer_fired"]
