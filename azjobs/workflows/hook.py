"""Workflow steps as an executor hook: a step's outcome goes to its workflow (azjobs/execution/hooks.py).

A step message (an envelope with a ``workflow`` reference) is run by the core like any job;
its workflow's orchestrator owns its retries, so this hook takes the outcome over: a run is
reported to the workflows queue (``report_step``), and a step that will not run is reported
instead of being poisoned (``report_not_run``). Other messages pass untouched.

A step the worker sent (its ``workflow`` reference names the workflows queue) checks that its
workflow was not cancelled before it runs (one point read of the ``terminated`` marker) and is
cancelled with it while it runs (``azjobs.workflows.cancel.RunningSteps``): its outcome is then
``cancelled``, and nothing is reported to the workflow, which has ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..execution.hooks import Handling, Hook, Verdict
from ..model.outcome import Outcome, Result
from ..model.secrets import describe, get_logger
from .cancel import RunningSteps
from .history import HistoryStore
from .steps import report_not_run, report_step

if TYPE_CHECKING:
    from ..execution.recorder import DeadLetter
    from ..execution.executor import Executor
    from ..model.outcome import JobRun


log = get_logger("azjobs.workflows")

_KEY = "azjobs.workflows.running_step"


def _is_step(handling: Handling) -> bool:
    return handling.envelope is not None and bool(handling.envelope.workflow)


def _worker_step(handling: Handling) -> str | None:
    """The workflow id of a step the worker's driver sent (Durable's activities run without a message)."""
    reference = handling.envelope.workflow if handling.envelope is not None else None
    if isinstance(reference, dict) and reference.get("queue") and isinstance(reference.get("id"), str):
        return reference["id"]
    return None


class StepHook(Hook):
    """Reports workflow steps to their workflow instead of retrying or poisoning them; stops the steps of a
    cancelled workflow."""

    def __init__(self, executor: "Executor") -> None:
        super().__init__(executor)
        self._history: HistoryStore | None = None
        self.running_steps = RunningSteps(self._store)

    def _store(self) -> HistoryStore | None:
        client = self.executor.client
        if hasattr(client, "workflow_history"):
            return client.workflow_history  # a test double's (azjobs.testing.RecordingClient): None for none
        if self._history is None:
            self._history = HistoryStore.for_client(client)
        return self._history

    def owns_retries(self, handling: Handling) -> bool:
        return _is_step(handling)

    def before_run(self, handling: Handling) -> Verdict | None:
        workflow_id = _worker_step(handling)
        if workflow_id is None:
            return None
        store = self._store()
        if store is None:
            return None
        try:
            terminated = store.terminated(workflow_id)
        except Exception as exc:  # unknown: the step runs (a history outage must not stop workflows)
            log.warning("could not check workflow %s for a cancel before its step runs: %s", workflow_id,
                        describe(exc), extra={"action": "workflow_cancel_check_failed", "workflow_id": workflow_id})
            terminated = False
        if terminated:
            return Verdict("cancel", f"its workflow {workflow_id} was cancelled")
        handling.notes[_KEY] = self.running_steps.add(workflow_id, handling.cancellation)
        return None

    def settle(self, handling: Handling, run: "JobRun") -> "Result | None":
        if _KEY in handling.notes:
            self.running_steps.end(handling.notes.pop(_KEY))
        if not _is_step(handling):
            return None
        assert handling.envelope is not None
        if handling.cancellation.is_set() and self._workflow_ended(handling):
            return Result(Outcome.CANCELLED, handling.envelope, ran=True, duration_s=run.duration_s,
                          detail="its workflow was cancelled", payload_ref=handling.envelope.payload_ref)
        return report_step(self.executor, handling.envelope, handling.info, run)

    def _workflow_ended(self, handling: Handling) -> bool:
        """A cancelled step's workflow was cancelled (a step cancelled alone, as a job, reports as it ran)."""
        workflow_id, store = _worker_step(handling), self._store()
        if workflow_id is None or store is None:
            return False
        try:
            return store.terminated(workflow_id)
        except Exception:  # unknown: reported (a terminated workflow ignores a late report)
            return False

    def raised(self, handling: Handling, error: BaseException, kind: str) -> None:
        if _KEY in handling.notes:
            self.running_steps.end(handling.notes.pop(_KEY))

    def not_run(self, handling: Handling, decision: "DeadLetter", error: BaseException | None) -> "Result | None":
        if decision.envelope is None or not decision.envelope.workflow:
            return None
        return report_not_run(self.executor, decision, error)


__all__ = ["StepHook"]
