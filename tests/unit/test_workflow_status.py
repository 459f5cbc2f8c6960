"""The workflow status summary (``azjobs workflow status``, the dashboard's workflow page) of a failed workflow."""

from __future__ import annotations

from datetime import datetime, timezone

from azjobs.cli import workflow as cli
from azjobs.workflows.history import FAILED, Episode, History, summary
from azjobs.workflows.orchestrator import ACTIVITY
from azjobs.workflows.replay import execution_completed, task_completed, task_failed, task_scheduled

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def failed_history() -> History:
    """A step that failed, then the failure-record activity the orchestrator calls before failing the workflow."""
    step = {"job": "wf.broken", "path": "0.0", "args": [2]}
    failure = {"failure": {"workflow": "w1", "step": {"path": "0.0", "job": "wf.broken"}, "error": "ValueError: x"}}
    events = [task_scheduled(NOW, 0, ACTIVITY, step), task_failed(NOW, 0, "ValueError: broken step got 2", "Traceback"),
              task_scheduled(NOW, 1, ACTIVITY, failure), task_completed(NOW, 1, None),
              execution_completed(NOW, FAILED, reason="ValueError: broken step got 2")]
    return History("w1", [Episode(0, events, [], True, FAILED)])


def test_the_failure_record_activity_is_not_counted_as_a_step():
    info = summary(failed_history())
    assert [(s["job"], s["state"], s["error"]) for s in info["steps"]] == [
        ("wf.broken", "failed", "ValueError: broken step got 2")]
    assert (info["done"], info["running"], info["failed"]) == (0, 0, 1)


def test_the_status_command_renders_a_failed_workflow():
    text = cli.render(summary(failed_history()))
    assert text.splitlines()[:3] == [
        "workflow w1: Failed", "steps: 0 done, 0 running, 1 failed; 0 timer(s); history 5 events",
        "  0.0      wf.broken                      failed   !! ValueError: broken step got 2"]
    assert text.endswith("error: ValueError: broken step got 2")


def test_a_step_that_cannot_run_is_shown_failed_with_why():
    from azjobs.workflows.history import cannot_run

    step = {"job": "wf.gone", "path": "0.0", "args": [2]}
    value = cannot_run("unknown_job", "azjobs.errors.UnknownJobError", "no job named 'wf.gone' is registered")
    history = History("w2", [Episode(0, [task_scheduled(NOW, 0, ACTIVITY, step), task_completed(NOW, 0, value)],
                                     [], True, "Running")])
    [entry] = summary(history)["steps"]
    assert (entry["state"], entry["error"]) == (
        "failed", "azjobs.errors.UnknownJobError: step 0.0 (wf.gone) cannot run: no job named 'wf.gone' is registered")
