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
    assert text.splitlines()[:4] == [
        "workflow w1: Failed", "created 2026-01-01T00:00:00.000Z, finished 2026-01-01T00:00:00.000Z",
        "steps: 0 done, 0 running, 1 failed (1 attempt(s)); 0 sleep(s), 0 retry wait(s); history 5 events",
        "  0.0      wf.broken                      failed   1 attempt   !! ValueError: broken step got 2"]
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


def test_attempts_are_counted_per_step_and_retry_waits_apart_from_sleeps():
    """#25 item 7: a step retried twice is one step with 3 attempts, its 2 retry waits are not sleeps."""
    from azjobs.workflows.history import COMPLETED
    from azjobs.workflows.replay import timer_created, timer_fired

    later = datetime(2026, 1, 1, 0, 5, tzinfo=timezone.utc)
    flaky = {"job": "wf.flaky", "path": "0.0", "args": [1]}
    after = {"job": "wf.double", "path": "0.2", "args": []}
    events = [task_scheduled(NOW, 0, ACTIVITY, flaky), task_failed(NOW, 0, "ValueError: one"),
              timer_created(NOW, 1, "x"), timer_fired(NOW, 1, "x"),
              task_scheduled(NOW, 2, ACTIVITY, flaky), task_failed(NOW, 2, "ValueError: two"),
              timer_created(NOW, 3, "x"), timer_fired(NOW, 3, "x"),
              task_scheduled(NOW, 4, ACTIVITY, flaky), task_completed(NOW, 4, 7),
              timer_created(NOW, 5, "x"), timer_fired(NOW, 5, "x"),  # azjobs.sleep between the steps
              task_scheduled(NOW, 6, ACTIVITY, after), task_completed(NOW, 6, 14),
              execution_completed(later, COMPLETED, result=14)]
    info = summary(History("w3", [Episode(0, events, [], True, COMPLETED)]))
    assert [(s["step"], s["job"], s["state"], s["attempts"]) for s in info["steps"]] == [
        ("0.0", "wf.flaky", "done", 3), ("0.2", "wf.double", "done", 1)]
    assert (info["done"], info["attempts"], info["sleeps"], info["retry_waits"]) == (2, 4, 1, 2)
    assert (info["created_at"], info["finished_at"]) == ("2026-01-01T00:00:00.000Z", "2026-01-01T00:05:00.000Z")
    text = cli.render(info)
    assert text.splitlines()[1:5] == [
        "created 2026-01-01T00:00:00.000Z, finished 2026-01-01T00:05:00.000Z",
        "steps: 2 done, 0 running, 0 failed (4 attempt(s)); 1 sleep(s), 2 retry wait(s); history 15 events",
        "  0.0      wf.flaky                       done     3 attempts  -> 7",
        "  0.2      wf.double                      done     1 attempt   -> 14"]


def test_a_step_waiting_to_retry_is_retrying_not_failed():
    flaky = {"job": "wf.flaky", "path": "0.0", "args": [1]}
    from azjobs.workflows.replay import timer_created

    events = [task_scheduled(NOW, 0, ACTIVITY, flaky), task_failed(NOW, 0, "ValueError: one"),
              timer_created(NOW, 1, "x")]
    info = summary(History("w4", [Episode(0, events, [], True, "Running")]))
    [entry] = info["steps"]
    assert (entry["state"], entry["attempts"], info["failed"], info["running"]) == ("retrying", 1, 0, 1)
    assert (info["sleeps"], info["retry_waits"]) == (0, 1)
