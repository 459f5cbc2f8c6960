"""Cancelling a workflow on the worker, against Azurite: steps in flight are stopped, steps not started never run,
the workflow ends Terminated and ``handle.result()`` raises ``WorkflowCancelled``."""

from __future__ import annotations

import io
import threading
import time
from datetime import timedelta

import pytest

import azjobs
from azjobs import QueueSettings
from azjobs.runtime.worker import Worker
from azjobs.workflows import cancel as cancel_module
from azjobs.workflows import WorkflowHandle
from tests.integration.worker_support import Background, until

FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.5))
QUEUE = "workflow-cancel-tests"

started: list[str] = []
stopped: list[str] = []
lock = threading.Lock()


@azjobs.job(queue=QUEUE, name="wfc.hold", retry=azjobs.NoRetry())
def hold(key: str) -> str:
    """A long step that stops at a safe point once cancelled (60 s at most)."""
    with lock:
        started.append(key)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if azjobs.current_job().cancelled:
            with lock:
                stopped.append(key)
            azjobs.current_job().raise_if_cancelled()
        time.sleep(0.02)
    return key


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch):
    monkeypatch.setattr(cancel_module, "CANCEL_CHECK_S", 0.2)
    started.clear()
    stopped.clear()


def _until(condition, timeout_s: float = 60.0):
    return until(condition, timeout_s)


@pytest.mark.parametrize("how", ["handle", "command"])
def test_a_cancelled_workflow_stops_its_running_step_never_starts_the_others_and_ends_terminated(
        how, client, flows, monkeypatch, connection_string):
    steps, queue = flows
    group = azjobs.group(*(hold.options(queue=steps).s(f"s{n}") for n in range(3)))
    handle = azjobs.chain(group, hold.options(queue=steps).s()).enqueue(queue=queue)
    background = Background(Worker([steps], client=client, settings=FAST, lease=30, workflows=queue,
                                   concurrency=1, fetch=1)).start()
    try:
        _until(lambda: len(started) == 1)  # one step runs; two wait on the queue (one thread)
        if how == "handle":
            assert handle.cancel() == "Terminated"
        else:
            from azjobs import cli

            monkeypatch.setenv("AzureWebJobsStorage", connection_string)
            out, err = io.StringIO(), io.StringIO()
            assert cli.main(["cancel", handle.id], stdout=out, stderr=err) == 0, err.getvalue()
            assert out.getvalue() == f"workflow {handle.id} cancelled: Terminated\n"
        _until(lambda: stopped == started and client.queue(steps).peek_messages() == [])
        time.sleep(1.0)  # the worker had time to start anything left: nothing more starts
    finally:
        stats = background.stop()
    assert len(started) == 1 and stopped == started
    assert stats.cancelled == 3  # the running step, and the two that never started
    with pytest.raises(azjobs.WorkflowCancelled):
        handle.result(timeout=5)
    status = WorkflowHandle(handle.id).status()
    assert status["status"] == "Terminated" and status["done"] == 0
    assert handle.cancel() == "Terminated"  # again: nothing changes


def test_cancelling_a_workflow_before_a_worker_starts_it_means_no_step_ever_runs(client, flows):
    steps, queue = flows
    handle = azjobs.chain(hold.options(queue=steps).s("never")).enqueue(queue=queue)
    assert handle.status()["status"] == "Pending"
    assert handle.cancel() == "Terminated"
    background = Background(Worker([steps], client=client, settings=FAST, lease=30, workflows=queue)).start()
    try:
        _until(lambda: client.queue(queue).peek_messages() == [])  # the start message was taken and dropped
        time.sleep(1.0)
    finally:
        background.stop()
    assert started == [] and client.queue(steps).peek_messages() == []
    assert WorkflowHandle(handle.id).status()["status"] == "Terminated"


def test_cancel_async_terminates_a_durable_orchestration_through_its_client():
    import asyncio

    calls = []

    class DurableClient:  # the two calls azjobs makes of a DurableOrchestrationClient
        async def terminate(self, instance_id, reason):
            calls.append((instance_id, reason))

    handle = WorkflowHandle("wf-durable-1", durable_client=DurableClient())
    assert asyncio.run(handle.cancel_async()) == "Terminated"
    assert calls == [("wf-durable-1", cancel_module.REASON)]


def test_a_step_cancelled_alone_as_a_job_reports_to_its_workflow_which_goes_on(client, flows, connection_string,
                                                                              monkeypatch):
    """Only the workflow's cancel drops a step's report: a step cancelled as a job (state on) fails that attempt,
    and its workflow hears it (here: no retry left, so the workflow fails, saying why)."""
    import uuid

    from azjobs.model import tracking
    from azjobs.state import running as running_module
    from azjobs.workflows.driver import step_job_id

    monkeypatch.setattr(running_module, "CANCEL_CHECK_S", 0.2)
    table = f"wfst{uuid.uuid4().hex[:12]}"
    tracked = azjobs.configure(connection_string, state=True, state_table=table)
    steps, queue = flows
    try:
        handle = azjobs.chain(hold.options(queue=steps).s("alone")).enqueue(queue=queue)
        background = Background(Worker([steps], client=tracked, settings=FAST, lease=30, workflows=queue)).start()
        try:
            _until(lambda: started == ["alone"])
            (step,) = handle.status()["steps"]
            record = azjobs.cancel(step_job_id(handle.id, step["task"]))
            assert record.cancel_requested
            with pytest.raises(azjobs.WorkflowFailed, match="JobCancelled"):
                handle.result(timeout=60)
        finally:
            background.stop()
        assert stopped == ["alone"]
    finally:
        tracked.connection.table_service().delete_table(table)
        tracked.close()
        tracking._process_state = None
