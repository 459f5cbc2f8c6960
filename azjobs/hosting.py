"""Hosting: what every host wires into the execution core.

A host (the worker, the Functions handlers, ``azjobs.testing``) makes its ``Executor`` with the
features' hooks, in this order:

0. limits (``azjobs.limits.hook.LimitsHook``): a slot and a start of each of the job's limits, or
   ``throttle`` — first, so a throttled delivery costs no job state write;
1. job state (``azjobs.state.tracker.StateTracker``): RUNNING or a veto before the run, the
   outcome records after it — before anything else starts;
2. telemetry (``azjobs.telemetry.hook.TelemetryHook``): the delivery's span and metrics;
3. workflow steps (``azjobs.workflows.hook.StepHook``): a step's outcome reported to its workflow.

Each hook costs nothing for messages it has no part in (a job without limits, an untracked job,
no OpenTelemetry, not a workflow step).
"""

from __future__ import annotations

from typing import Any

from .execution.executor import Executor
from .execution.hooks import HookFactory
from .limits.hook import LimitsHook
from .state.tracker import StateTracker
from .telemetry.hook import TelemetryHook
from .workflows.hook import StepHook


def standard_hooks() -> list[HookFactory]:
    """The hooks every host's executor gets, in the order they are announced to."""
    return [LimitsHook, StateTracker, TelemetryHook, StepHook]


def executor(**options: Any) -> Executor:
    """An ``Executor`` with the standard hooks (``hooks=`` in ``options`` replaces them)."""
    options.setdefault("hooks", standard_hooks())
    return Executor(**options)


__all__ = ["executor", "standard_hooks"]
