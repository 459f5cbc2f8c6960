"""The Functions recipe (site/function_app.py: django.setup(), then azjobs.blueprint()) with the real
azure-functions library: generated handlers invoked with QueueMessages built from Azurite messages."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import uuid
from datetime import timedelta

import pytest
from azure.storage.queue import QueueClient
from django.tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch

import azjobs
from azjobs.model.outcome import Outcome
from azjobs.model.envelope import Envelope, parse_time, utcnow
from azjobs.contrib.django.execution import worker_id
from azjobs.testing import RecordingExecutor
from tests.functions_support import HostAction, fresh_app, host_like_settle, receive_one
from tests.django.support import SITE, envelopes, poison_records


def recipe_app():
    """A fresh import of the project's function_app.py (azure-functions indexes an app only once)."""
    name = f"djsite_function_app_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, SITE / "function_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def deliver(app, connection_string, queue):
    """Receive the next message on ``queue`` and deliver it through ``app`` as the host does."""
    raw = QueueClient.from_connection_string(connection_string, queue)
    message = receive_one(raw)
    assert message is not None, f"no message on {queue}"
    return host_like_settle(app, raw, message)


def test_recipe_generates_a_trigger_for_every_backend_queue(site):
    app = recipe_app()
    triggers = {f.get_trigger().queue_name for f in app.get_functions()
                if f.get_trigger().get_binding_name() == "queueTrigger"}  # beside them: the workflow functions
    assert {site.default, site.emails} <= triggers


def test_functions_handler_runs_sync_and_async_tasks_and_fires_the_signals(site, connection_string):
    from shop import tasks

    app = recipe_app()
    sync = tasks.add.enqueue(2, 3)
    asynchronous = tasks.async_add.enqueue(4, 5)
    assert deliver(app, connection_string, site.default).action is HostAction.DELETED
    assert deliver(app, connection_string, site.default).action is HostAction.DELETED

    finished = {s["id"]: s for s in site.signals() if s["signal"] == "task_finished"}
    assert finished[sync.id]["status"] == "SUCCESSFUL" and finished[sync.id]["return_value"] == 5
    assert finished[asynchronous.id]["status"] == "SUCCESSFUL" and finished[asynchronous.id]["return_value"] == 9
    order = [(s["signal"], s["id"]) for s in site.signals()]
    for result in (sync, asynchronous):
        assert order.index(("task_enqueued", result.id)) < order.index(("task_started", result.id)) \
            < order.index(("task_finished", result.id))
    assert {s["sender"] for s in site.signals()} == {"AzureQueueBackend"}

    # get_result reads the job state store
    for result, value in ((sync, 5), (asynchronous, 9)):
        assert result.status == "READY"
        result.refresh()
        assert result.status == "SUCCESSFUL" and result.return_value == value
        assert result.attempts == 1 and result.worker_ids == [worker_id()] and result.errors == []
        assert result.enqueued_at <= result.started_at <= result.finished_at
        assert result.started_at <= result.last_attempted_at <= result.finished_at
    fetched = tasks.add.get_result(sync.id)
    assert fetched.task.func is tasks.add.func and fetched.args == [2, 3] and fetched.backend == "default"
    assert asyncio.run(tasks.async_add.aget_result(asynchronous.id)).return_value == 9


def test_takes_context_task_sees_the_real_attempt_and_a_retry_is_ready_not_failed(site, connection_string):
    from shop import tasks

    app = recipe_app()
    result = tasks.flaky.enqueue("ctx")
    first = deliver(app, connection_string, site.default)
    assert first.action is HostAction.DELETED  # azjobs wrote the retry copy (attempt 2) first
    [retry] = envelopes(site.queue(site.default))
    assert retry.id == result.id and retry.attempt == 2
    waiting = site.backend.get_result(result.id)
    assert waiting.status == "READY" and waiting.attempts == 1  # RETRYING in the store
    assert [e.exception_class_path for e in waiting.errors] == ["builtins.RuntimeError"]
    assert deliver(app, connection_string, site.default).action is HostAction.DELETED

    finished = [s for s in site.signals() if s["signal"] == "task_finished" and s["id"] == result.id]
    # The failed first attempt will be retried: READY (Django has no "retrying"), with its error.
    assert [(s["status"], s["attempts"]) for s in finished] == [("READY", 1), ("SUCCESSFUL", 2)]
    assert finished[0]["errors"] == ["builtins.RuntimeError"]
    assert finished[1]["return_value"] == {"attempt": 2, "workers": 2, "key": "ctx"}
    done = tasks.flaky.get_result(result.id)
    assert done.status == "SUCCESSFUL" and done.attempts == 2 and len(done.worker_ids) == 2
    assert done.return_value == {"attempt": 2, "workers": 2, "key": "ctx"}
    assert "attempt 1 of ctx fails" in done.errors[0].traceback


def test_a_task_failing_for_good_is_failed_and_lands_in_poison(site, connection_string):
    from shop import tasks

    app = recipe_app()
    result = tasks.always_fails.enqueue("no stock")
    deliver(app, connection_string, site.default)
    deliver(app, connection_string, site.default)
    finished = [s for s in site.signals() if s["signal"] == "task_finished" and s["id"] == result.id]
    assert [(s["status"], s["attempts"]) for s in finished] == [("READY", 1), ("FAILED", 2)]
    [record] = poison_records(site.poison(site.default))
    assert record["job"] == "django:shop.tasks.always_fails" and record["job_id"] == result.id
    assert record["attempts"] == 2 and record["error"]["type"] == "ValueError"
    failed = site.backend.get_result(result.id)
    assert failed.status == "FAILED" and failed.attempts == 2 and failed.finished_at is not None
    assert [e.exception_class_path for e in failed.errors] == ["builtins.ValueError"] * 2
    assert "no stock" in failed.errors[-1].traceback
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value
    with pytest.raises(TaskResultMismatch):
        tasks.add.get_result(result.id)


def test_get_result_of_an_unknown_id_raises_task_result_does_not_exist(site):
    with pytest.raises(TaskResultDoesNotExist):
        site.backend.get_result("no-such-id")
    with pytest.raises(TaskResultDoesNotExist):
        asyncio.run(site.backend.aget_result("no-such-id"))


@pytest.mark.parametrize("path", ["django:extra_tasks.shout", "django:os.system", "django:shop.tasks.nothing"])
def test_a_message_naming_an_undiscovered_path_runs_nothing_and_goes_to_poison_at_once(site, connection_string,
                                                                                          path):
    app = recipe_app()
    before = set(sys.modules)
    envelope = Envelope.build(path, ("echo owned",), queue=site.default)
    site.backend.client.send(envelope)
    assert deliver(app, connection_string, site.default).action is HostAction.DELETED
    assert set(sys.modules) - before == set()  # nothing named in the message was imported
    [record] = poison_records(site.poison(site.default))
    assert record["job"] == path and record["attempts"] == 1  # no retry
    assert record["error"]["reason"] == "unknown_job"
    assert "not one of them" in record["error"]["message"]
    assert [s for s in site.signals() if s["signal"] != "task_enqueued"] == []
    with pytest.raises(TaskResultDoesNotExist):
        site.backend.get_result(envelope.id)  # never a task of this project: its path is not imported


class TimeWarpClient(azjobs.Client):
    """A real client that keeps each send and turns visibilities over a minute into 1 s
    (Azurite cannot fast-forward; the core's clock is moved forward instead)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, int]] = []

    def send_text(self, queue, text, *, visibility_timeout=0, **options):
        self.sent.append((queue, visibility_timeout))
        return super().send_text(queue, text, visibility_timeout=1 if visibility_timeout > 60 else visibility_timeout,
                                 **options)


def test_run_after_ten_days_hops_through_the_due_time_and_runs_then(site, connection_string):
    from shop import tasks

    warp = TimeWarpClient(connection_string)
    site.backend._client = warp
    now = {"t": utcnow()}
    executor = RecordingExecutor(client=warp, clock=lambda: now["t"])
    app = fresh_app(queues=[site.default], executor=executor)
    start = now["t"]
    result = tasks.add.using(run_after=start + timedelta(days=10)).enqueue(20, 22)
    assert warp.sent == [(site.default, 7 * 24 * 3600)]  # one full 7-day hop

    import time

    time.sleep(1.2)
    [envelope] = envelopes(site.queue(site.default))
    assert parse_time(envelope.due_at) >= start + timedelta(days=10)
    now["t"] = start + timedelta(days=7, seconds=1)
    deliver(app, connection_string, site.default)
    assert executor.results[-1].outcome is Outcome.DEFERRED and not executor.results[-1].ran
    assert [s for s in site.signals() if s["signal"] == "task_started"] == []
    hop = warp.sent[-1][1]
    assert 3 * 24 * 3600 - 120 <= hop <= 3 * 24 * 3600 + 1

    time.sleep(1.2)
    now["t"] = start + timedelta(days=10, seconds=5)
    deliver(app, connection_string, site.default)
    assert executor.results[-1].outcome is Outcome.SUCCEEDED
    finished = [s for s in site.signals() if s["signal"] == "task_finished"]
    assert [(s["id"], s["return_value"]) for s in finished] == [(result.id, 42)]
