"""Workflows of registered jobs: chains, groups (fan-out/fan-in) and sleeps.

On Azure Functions they run on Durable Functions (``azjobs.blueprint()`` generates the
start trigger, one orchestrator and one activity); off-cloud the ``azjobs`` worker drives
that same orchestrator function with the Durable package's own replay over a history
kept in Table Storage. See azjobs/workflows/driver.py.
"""

from .handle import WorkflowCancelled, WorkflowFailed, WorkflowHandle, WorkflowNotFoundError, WorkflowTimeout
from .spec import DEFAULT_QUEUE, Chain, Flow, Group, Sleep, Step, chain, group, sleep, workflows_queue

__all__ = ["DEFAULT_QUEUE", "Chain", "Flow", "Group", "Sleep", "Step", "WorkflowCancelled", "WorkflowFailed", "WorkflowHandle",
           "WorkflowNotFoundError", "WorkflowTimeout", "chain", "group", "sleep", "workflows_queue"]
