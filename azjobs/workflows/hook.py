"""Workflow steps as an executor hook: a step's outcome goes to its workflow (azjobs/execution/hooks.py).

A step message (an envelope with a ``workflow`` reference) is run by the core like any job;
its workflow's orchestrator owns its retries, so this hook takes the outcome over: a run is
reported to the workflows queue (``report_step``), and a step that will not run is reported
instead of being poisoned (``report_not_run``). Other messages pass untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..execution.hooks import Handling, Hook
from .steps import report_not_run, report_step

if TYPE_CHECKING:
    from ..execution.recorder import DeadLetter
    from ..model.outcome import JobRun, Result


def _is_step(handling: Handling) -> bool:
    return handling.envelope is not None and bool(handling.envelope.workflow)


class StepHook(Hook):
    """Reports workflow steps to their workflow instead of retrying or poisoning them."""

    def owns_retries(self, handling: Handling) -> bool:
        return _is_step(handling)

    def settle(self, handling: Handling, run: "JobRun") -> "Result | None":
        if not _is_step(handling):
            return None
        assert handling.envelope is not None
        return report_step(self.executor, handling.envelope, handling.info, run)

    def not_run(self, handling: Handling, decision: "DeadLetter", error: BaseException | None) -> "Result | None":
        if decision.envelope is None or not decision.envelope.workflow:
            return None
        return report_not_run(self.executor, decision, error)


__all__ = ["StepHook"]
