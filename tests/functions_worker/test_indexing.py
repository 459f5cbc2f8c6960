"""The function apps index through the real Python language worker (azure-functions-runtime, 3.13).

The worker is driven as the host drives it (tests/functions_worker/host.py): WorkerInitRequest (it
indexes ``function_app.py``), FunctionsMetadataRequest, a FunctionLoadRequest per function. The
assertions are on the ``RpcFunctionMetadata`` it returns, the bindings the host builds its
listeners from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from azjobs.functions.blueprint import function_name_for, timer_function_name_for
from azjobs.workflows.orchestrator import ACTIVITY, ORCHESTRATOR, START
from tests.functions_worker import worker_jobs
from tests.functions_worker.host import LanguageWorker, protos

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).resolve().parent / "app"


@pytest.fixture
def every_kind(monkeypatch):
    monkeypatch.setenv(worker_jobs.QUEUE_SETTING, "lw-index-jobs")
    monkeypatch.setenv(worker_jobs.TICKS_SETTING, "lw-index-ticks")
    with LanguageWorker(APP) as worker:
        yield worker


def _check_common(worker: LanguageWorker) -> None:
    assert worker.init_response.result.status == protos().StatusResult.Success
    assert worker.init_response.worker_metadata.runtime_name == "python"
    for function in worker.functions.values():
        assert function.metadata.language == "python"
        assert function.metadata.properties["worker_indexed"] == "True"
        assert function.metadata.entry_point == function.name


def _check_queue_trigger(function, queue: str, connection: str) -> None:
    trigger = function.binding("queueTrigger")
    assert (trigger["name"], trigger["queueName"], trigger["connection"], trigger["direction"]) == (
        "msg", queue, connection, "IN")
    # The host hands the body over as bytes, exactly as stored (not re-decoded as text).
    assert trigger["dataType"].lower() == "binary"  # the host parses it ignoring case
    assert function.metadata.bindings["msg"].data_type == protos().BindingInfo.DataType.Value("binary")


def _check_workflow_functions(worker: LanguageWorker, connection: str) -> None:
    start = worker.functions[START]
    _check_queue_trigger(start, "azjobs-workflows", connection)
    assert start.binding("durableClient")["name"] == "client"
    assert [b["type"] for b in worker.functions[ORCHESTRATOR].raw_bindings()] == ["orchestrationTrigger"]
    assert worker.functions[ORCHESTRATOR].trigger()["name"] == "context"
    assert [b["type"] for b in worker.functions[ACTIVITY].raw_bindings()] == ["activityTrigger"]
    assert worker.functions[ACTIVITY].trigger()["name"] == "call"


def test_the_repository_function_app_indexes_through_the_language_worker():
    import example_jobs  # noqa: F401  (what function_app.py imports: its jobs decide the queues)

    with LanguageWorker(ROOT) as worker:
        _check_common(worker)
        assert sorted(worker.functions) == sorted(["azjobs_emails", "azjobs_images", START, ORCHESTRATOR, ACTIVITY])
        _check_queue_trigger(worker.functions["azjobs_emails"], "emails", "AzureWebJobsStorage")
        _check_queue_trigger(worker.functions["azjobs_images"], "images", "AzureWebJobsStorage")
        _check_workflow_functions(worker, "AzureWebJobsStorage")


def test_an_app_with_every_kind_of_function_indexes_through_the_language_worker(every_kind):
    worker, connection = every_kind, worker_jobs.CONNECTION
    _check_common(worker)
    jobs, ticks = function_name_for(worker_jobs.QUEUE), function_name_for(worker_jobs.TICKS)
    literal = function_name_for(worker_jobs.LITERAL_QUEUE)
    timer = timer_function_name_for(worker_jobs.tick.name)
    assert sorted(worker.functions) == sorted([jobs, ticks, literal, timer, START, ORCHESTRATOR, ACTIVITY,
                                               "azjobs_dashboard"])
    # An app-setting queue stays an expression: the host resolves it, as azjobs does.
    _check_queue_trigger(worker.functions[jobs], worker_jobs.QUEUE, connection)
    _check_queue_trigger(worker.functions[ticks], worker_jobs.TICKS, connection)
    _check_queue_trigger(worker.functions[literal], worker_jobs.LITERAL_QUEUE, connection)
    # A schedule five minutes apart: the host's monitor on (its default for schedules a minute or more apart).
    assert worker.functions[timer].binding("timerTrigger") == {
        "direction": "IN", "type": "timerTrigger", "name": "timer", "schedule": worker_jobs.TICK_SCHEDULE,
        "useMonitor": True}
    _check_workflow_functions(worker, connection)
    dashboard = worker.functions["azjobs_dashboard"]
    http = dashboard.binding("httpTrigger")
    assert (http["route"], http["authLevel"], sorted(http["methods"])) == ("dashboard/{*path}", "ADMIN",
                                                                          ["GET", "POST"])
    assert dashboard.binding("http") == {"direction": "OUT", "type": "http", "name": "$return"}
