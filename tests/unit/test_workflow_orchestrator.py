"""The generated workflow functions, replayed as the Durable host replays them.

The orchestrator under test is the one ``azjobs.blueprint()`` generates, taken from the
indexed function app (``get_user_function().orchestrator_function``), and each replay is
``Orchestrator.handle`` over history JSON in the extension's format, as
azure-functions-durable's own tests (tests/orchestrator/, ContextBuilder) do. The
assertions are on the actions the orchestrator emits and on what it waits for next.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage

import azjobs
from azjobs.model.outcome import MessageInfo
from azjobs.model.envelope import Envelope, decode_body
from azjobs.testing import RecordingClient, RecordingExecutor
from azjobs.workflows import replay as h
from azjobs.workflows.driver import waiting_on
from azjobs.workflows.orchestrator import ACTIVITY, ORCHESTRATOR, START, StepFailed
from azjobs.workflows.spec import start_message
from azjobs.workflows.testing import TaskHub
from tests.functions_support import functions_of

REG = azjobs.Registry()
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


@azjobs.job(queue="wfo-fetch", registry=REG, name="wfo.fetch", retry=azjobs.Fixed(2.5, max_retries=3))
def fetch(url: str) -> str:
    return f"<{url}>"


@azjobs.job(queue="wfo-parse", registry=REG, name="wfo.size", retry=azjobs.NoRetry())
def size(text: str) -> int:
    return len(text)


@azjobs.job(queue="wfo-parse", registry=REG, name="wfo.total", retry=azjobs.NoRetry())
def total(values: list) -> int:
    return sum(values)


@azjobs.job(queue="wfo-parse", registry=REG, name="wfo.broken", retry=azjobs.NoRetry())
def broken(text: str) -> None:
    raise ValueError(f"cannot parse {text}")


@azjobs.job(queue="wfo-parse", registry=REG, name="wfo.huge", retry=azjobs.NoRetry())
def huge(n: int) -> str:
    return "x" * n


@azjobs.job(queue="wfo-parse", registry=REG, name="wfo.echo", retry=azjobs.NoRetry())
def echo(value):
    return value


@azjobs.job(queue="wfo-parse", registry=REG, name="wfo.loud", retry=azjobs.NoRetry())
def loud(n: int) -> None:
    raise ValueError("😀" * n)


APP_CLIENT = RecordingClient()  # the client of the module's function app (its payloads hold blobs in memory)


@pytest.fixture(scope="module")
def app():
    application = func.FunctionApp()
    application.register_functions(azjobs.blueprint(registry=REG, executor=RecordingExecutor(registry=REG,
                                                                                              client=APP_CLIENT)))
    return application


def fn(app, name):
    return next(f for f in functions_of(app) if f.get_function_name() == name)


@pytest.fixture(scope="module")
def orchestrator(app):
    return fn(app, ORCHESTRATOR).get_user_function().orchestrator_function


def start(spec, at=T0):
    return [h.orchestrator_started(at), h.execution_started(at, ORCHESTRATOR, spec)]


def then(events, at, *new):
    """Close the episode and open the next one with ``new`` (what the host appends)."""
    return events + [h.orchestrator_completed(at), h.orchestrator_started(at), *new]


def calls(replayed):
    """The activity calls among the emitted actions: (job, args, retry options), compound actions flattened."""
    out = []

    def walk(action):
        if action.get("actionType") == 12:
            for child in action["compoundActions"]:
                walk(child)
        elif action.get("actionType") == 1:
            call = json.loads(action["input"])
            assert action["functionName"] == ACTIVITY
            out.append((call["job"], call["args"], action["retryOptions"]))
    for action in replayed.actions:
        walk(action)
    return out


def test_blueprint_adds_start_trigger_orchestrator_and_activity(app):
    docs = {f.get_function_name(): json.loads(f.get_function_json())["bindings"] for f in functions_of(app)}
    start_bindings = {b["type"]: b for b in docs[START]}
    assert start_bindings["queueTrigger"]["queueName"] == "azjobs-workflows"
    assert start_bindings["queueTrigger"]["connection"] == "AzureWebJobsStorage"
    assert start_bindings["durableClient"]["direction"] == "IN"
    assert [b["type"] for b in docs[ORCHESTRATOR]] == ["orchestrationTrigger"]
    assert [b["type"] for b in docs[ACTIVITY]] == ["activityTrigger"]


def test_workflows_false_adds_none():
    application = func.FunctionApp()
    application.register_functions(azjobs.blueprint(registry=REG, workflows=False))
    names = {f.get_function_name() for f in application.get_functions()}
    assert not names & {START, ORCHESTRATOR, ACTIVITY}


def test_chain_calls_one_step_at_a_time_each_with_the_previous_result(orchestrator):
    spec = azjobs.chain(fetch.s("u"), size.s()).spec("wf-chain")
    events = start(spec)
    first = h.replay(orchestrator, "wf-chain", events)
    assert not first.done
    assert calls(first) == [("wfo.fetch", ["u"], {"firstRetryIntervalInMilliseconds": 2500, "maxNumberOfAttempts": 4})]
    events = then(events + [h.task_scheduled(T0, 0, ACTIVITY, {})], T0, h.task_completed(T0, 0, "<u>"))
    second = h.replay(orchestrator, "wf-chain", events)
    assert calls(second)[-1] == ("wfo.size", ["<u>"], {"firstRetryIntervalInMilliseconds": 1000,
                                                        "maxNumberOfAttempts": 1})
    assert [w.id for w in waiting_on(second, {0}, T0)] == [1]
    events = then(events + [h.task_scheduled(T0, 1, ACTIVITY, {})], T0, h.task_completed(T0, 1, 3))
    done = h.replay(orchestrator, "wf-chain", events)
    assert done.done and done.state["output"] == 3


def test_the_host_history_json_as_sent_replays(orchestrator):
    """A literal history in the host's wire format (the shape ContextBuilder emits)."""
    spec = azjobs.chain(fetch.s("u"), size.s()).spec("wf-literal")
    history = [
        {"EventType": 12, "EventId": -1, "IsPlayed": False, "Timestamp": "2026-03-01T12:00:00.000000Z"},
        {"EventType": 0, "EventId": -1, "IsPlayed": True, "Timestamp": "2026-03-01T12:00:00.000000Z",
         "Name": ORCHESTRATOR, "Version": "", "Input": json.dumps(spec)},
        {"EventType": 4, "EventId": 0, "IsPlayed": False, "Timestamp": "2026-03-01T12:00:01.000000Z",
         "Name": ACTIVITY, "Version": ""},
        {"EventType": 13, "EventId": -1, "IsPlayed": False, "Timestamp": "2026-03-01T12:00:01.000000Z"},
        {"EventType": 12, "EventId": -1, "IsPlayed": False, "Timestamp": "2026-03-01T12:00:02.000000Z"},
        {"EventType": 5, "EventId": -1, "IsPlayed": False, "Timestamp": "2026-03-01T12:00:02.000000Z",
         "TaskScheduledId": 0, "Result": "\"<u>\""},
    ]
    replayed = h.replay(orchestrator, "wf-literal", history)
    assert calls(replayed)[-1][:2] == ("wfo.size", ["<u>"])


def test_group_runs_in_parallel_and_the_fan_in_step_gets_the_results_in_order(orchestrator):
    spec = azjobs.chain(azjobs.group(size.s("a"), size.s("bbb")), total.s()).spec("wf-fan")
    events = start(spec)
    first = h.replay(orchestrator, "wf-fan", events)
    assert first.actions[0]["actionType"] == 12  # task_all: one WhenAll of both calls
    assert calls(first) == [("wfo.size", ["a"], {"firstRetryIntervalInMilliseconds": 1000, "maxNumberOfAttempts": 1}),
                            ("wfo.size", ["bbb"], {"firstRetryIntervalInMilliseconds": 1000, "maxNumberOfAttempts": 1})]
    assert [w.id for w in waiting_on(first, set(), T0)] == [0, 1]
    events += [h.task_scheduled(T0, 0, ACTIVITY, {}), h.task_scheduled(T0, 1, ACTIVITY, {})]
    events = then(events, T0, h.task_completed(T0, 1, 3))  # out of order
    half = h.replay(orchestrator, "wf-fan", events)
    assert [c[0] for c in calls(half)] == ["wfo.size", "wfo.size"]  # still waiting for the other one
    events = then(events, T0, h.task_completed(T0, 0, 1))
    fan_in = h.replay(orchestrator, "wf-fan", events)
    assert calls(fan_in)[-1][:2] == ("wfo.total", [[1, 3]])


def test_sleep_creates_a_timer_and_passes_the_value_through(orchestrator):
    spec = azjobs.chain(fetch.s("u"), azjobs.sleep(30), size.s()).spec("wf-sleep")
    t1 = T0 + timedelta(seconds=5)
    events = then(start(spec) + [h.task_scheduled(T0, 0, ACTIVITY, {})], t1, h.task_completed(t1, 0, "<u>"))
    replayed = h.replay(orchestrator, "wf-sleep", events)
    timer = replayed.actions[-1]
    assert timer["actionType"] == 5  # CreateTimer
    assert timer["fireAt"].startswith("2026-03-01T12:00:35")
    [work] = waiting_on(replayed, {0}, t1)
    assert work.id == 1 and work.fire_at == t1 + timedelta(seconds=30)
    fired = T0 + timedelta(seconds=35)
    events = then(events + [h.timer_created(t1, 1, h.stamp(work.fire_at))], fired,
                  h.timer_fired(fired, 1, h.stamp(work.fire_at)))
    after = h.replay(orchestrator, "wf-sleep", events)
    assert calls(after)[-1][:2] == ("wfo.size", ["<u>"])


def test_a_sleep_of_days_is_split_into_the_hosts_long_timer_hops(orchestrator):
    spec = azjobs.chain(fetch.si("u"), azjobs.sleep(timedelta(days=10)), size.s()).spec("wf-long")
    events = then(start(spec) + [h.task_scheduled(T0, 0, ACTIVITY, {})], T0, h.task_completed(T0, 0, "<u>"))
    replayed = h.replay(orchestrator, "wf-long", events)
    [work] = waiting_on(replayed, {0}, T0)
    assert work.fire_at == T0 + timedelta(days=3)  # longRunningTimerIntervalDuration
    hop = T0 + timedelta(days=3)
    events = then(events + [h.timer_created(T0, 1, h.stamp(hop))], hop, h.timer_fired(hop, 1, h.stamp(hop)))
    [next_hop] = waiting_on(h.replay(orchestrator, "wf-long", events), {0, 1}, hop)
    assert next_hop.fire_at == T0 + timedelta(days=6)
    assert not calls(h.replay(orchestrator, "wf-long", events))[1:]  # size waits for the last hop


def test_a_failed_step_is_retried_after_its_retry_interval(orchestrator):
    spec = azjobs.chain(fetch.s("u"), size.s()).spec("wf-retry")
    events = then(start(spec) + [h.task_scheduled(T0, 0, ACTIVITY, {})], T0,
                  h.task_failed(T0, 0, "builtins.OSError: down", "Traceback ..."))
    failed_once = h.replay(orchestrator, "wf-retry", events)
    assert not failed_once.done and not failed_once.failed
    [timer] = waiting_on(failed_once, {0}, T0)
    assert timer.activity is None and timer.fire_at == T0 + timedelta(milliseconds=2500)
    later = T0 + timedelta(seconds=3)
    events = then(events + [h.timer_created(T0, 1, h.stamp(timer.fire_at))], later,
                  h.timer_fired(later, 1, h.stamp(timer.fire_at)))
    [again] = waiting_on(h.replay(orchestrator, "wf-retry", events), {0, 1}, later)
    assert again.id == 2 and again.activity == ACTIVITY and json.loads(again.input)["args"] == ["u"]
    events = then(events + [h.task_scheduled(later, 2, ACTIVITY, json.loads(again.input))], later,
                  h.task_completed(later, 2, "<u>"))
    replayed = h.replay(orchestrator, "wf-retry", events)
    assert calls(replayed)[-1][:2] == ("wfo.size", ["<u>"])
    assert [w.id for w in waiting_on(replayed, {0, 1, 2}, later)] == [3]


def test_a_step_out_of_attempts_fails_the_workflow_with_its_error(orchestrator):
    spec = azjobs.chain(size.s("x"), total.s()).spec("wf-fail")
    events = then(start(spec) + [h.task_scheduled(T0, 0, ACTIVITY, {})], T0,
                  h.task_failed(T0, 0, "builtins.ValueError: bad input", "Traceback (most recent call last): ..."))
    [timer] = waiting_on(h.replay(orchestrator, "wf-fail", events), {0}, T0)
    assert timer.fire_at == T0  # no attempt left: the SDK's closing timer fires at once
    events = then(events + [h.timer_created(T0, 1, h.stamp(T0))], T0, h.timer_fired(T0, 1, h.stamp(T0)))
    recording = h.replay(orchestrator, "wf-fail", events)
    assert not recording.failed and not recording.done  # first the failure record, by the activity
    failure = recording.actions[-1]
    assert failure["actionType"] == 0 and failure["functionName"] == ACTIVITY
    record = json.loads(failure["input"])["failure"]
    assert record["workflow"] == "wf-fail" and record["step"] == {"path": "0.0", "job": "wfo.size"}
    assert record["error"].startswith("builtins.ValueError: bad input")
    events = then(events + [h.task_scheduled(T0, 2, ACTIVITY, {"failure": record})], T0, h.task_completed(T0, 2, None))
    failed = h.replay(orchestrator, "wf-fail", events)
    assert failed.failed and not failed.done
    assert "builtins.ValueError: bad input" in failed.state["error"]
    assert not calls(failed)[1:]  # total never called


def test_a_failing_group_step_names_the_group_in_the_failure(orchestrator):
    spec = azjobs.group(size.s("a"), total.s([1])).spec("wf-gfail")
    events = start(spec) + [h.task_scheduled(T0, 0, ACTIVITY, {}), h.task_scheduled(T0, 1, ACTIVITY, {})]
    events = then(events, T0, h.task_failed(T0, 1, "TypeError: nope", "tb"))
    events = then(events + [h.timer_created(T0, 2, h.stamp(T0))], T0, h.timer_fired(T0, 2, h.stamp(T0)))
    failure = h.replay(orchestrator, "wf-gfail", events).actions[-1]
    assert json.loads(failure["input"])["failure"]["step"] == {"path": "0", "job": ["wfo.size", "wfo.total"]}


def queue_message(body: str, dequeue_count: int) -> QueueMessage:
    return QueueMessage(id="m1", body=body.encode("utf-8"), dequeue_count=dequeue_count, pop_receipt="r")


def test_a_redelivered_start_message_starts_one_orchestration(app, monkeypatch):
    hub = TaskHub().install(monkeypatch)
    spec = azjobs.chain(fetch.s("u")).spec("wf-once")
    user = fn(app, START).get_user_function()
    body = start_message(spec)
    asyncio.run(user(msg=queue_message(body, 1), client=hub.binding))
    asyncio.run(user(msg=queue_message(body, 2), client=hub.binding))  # the host delivered it again
    assert hub.starts == [(ORCHESTRATOR, "wf-once", spec)]


def test_a_start_message_whose_spec_waits_in_a_blob_starts_with_that_spec_and_deletes_it(app, monkeypatch):
    hub = TaskHub().install(monkeypatch)
    spec = azjobs.chain(fetch.s("😀" * 20_000)).spec("wf-big-start")
    executor_payloads = APP_CLIENT.payloads
    ref = executor_payloads.put("workflow-specs/s1.json", json.dumps(spec).encode("utf-8"))
    body = start_message(spec, spec_ref=ref)
    assert len(body) < 1_000
    user = fn(app, START).get_user_function()
    asyncio.run(user(msg=queue_message(body, 1), client=hub.binding))
    assert hub.starts == [(ORCHESTRATOR, "wf-big-start", spec)]
    assert not executor_payloads.exists(ref)


def test_the_activity_runs_the_job_by_name_through_the_core(app):
    user = fn(app, ACTIVITY).get_user_function()
    call = {"job": "wfo.size", "args": ["abcd"], "kwargs": {}, "queue": "wfo-parse", "path": "0", "workflow": "w"}
    assert asyncio.run(user(call=json.dumps(call))) == 4
    with pytest.raises(StepFailed) as failed:
        asyncio.run(user(call=json.dumps({**call, "job": "wfo.broken", "args": ["zz"]})))
    assert "ValueError: cannot parse zz" in str(failed.value) and "Traceback" in str(failed.value)
    gone = asyncio.run(user(call=json.dumps({**call, "job": "nope"})))  # before: UnknownJobError, retried by Durable
    assert gone == {"azjobs_step_cannot_run": {"reason": "unknown_job", "type": "azjobs.errors.UnknownJobError",
                                               "message": "no job named 'nope' is registered (only registered jobs "
                                                          "run from a message)"}}
    changed = asyncio.run(user(call=json.dumps({**call, "args": ["abcd", "extra"]})))
    assert changed["azjobs_step_cannot_run"]["reason"] == "bad_arguments"
    assert changed["azjobs_step_cannot_run"]["type"] == "azjobs.errors.ArgumentError"
    with pytest.raises(StepFailed) as reserved:  # a job's own value may not look like one
        asyncio.run(user(call=json.dumps({**call, "job": "wfo.echo", "args": [gone]})))
    assert "reserves for workflow steps that cannot run" in str(reserved.value)


def test_a_step_that_cannot_run_fails_the_workflow_at_once_whatever_attempts_it_has_left(orchestrator):
    spec = azjobs.chain(fetch.s("u"), size.s()).spec("wf-gone")  # fetch: 4 attempts
    value = {"azjobs_step_cannot_run": {"reason": "unknown_job", "type": "azjobs.errors.UnknownJobError",
                                        "message": "no job named 'wfo.fetch' is registered"}}
    events = then(start(spec) + [h.task_scheduled(T0, 0, ACTIVITY, {})], T0, h.task_completed(T0, 0, value))
    recording = h.replay(orchestrator, "wf-gone", events)
    assert not waiting_on(recording, {0}, T0)[1:]  # no retry timer: the failure record's call only
    failure = json.loads(recording.actions[-1]["input"])["failure"]
    assert failure["step"] == {"path": "0.0", "job": "wfo.fetch"}
    assert failure["error"] == ("azjobs.errors.UnknownJobError: step 0.0 (wfo.fetch) cannot run: no job named "
                                "'wfo.fetch' is registered")
    events = then(events + [h.task_scheduled(T0, 1, ACTIVITY, {"failure": failure})], T0, h.task_completed(T0, 1, None))
    failed = h.replay(orchestrator, "wf-gone", events)
    assert failed.failed and failed.state["error"] == failure["error"]
    assert not calls(failed)[1:]  # size never called


def test_a_group_step_that_cannot_run_names_itself_in_the_failure(orchestrator):
    spec = azjobs.group(size.s("a"), total.s([1])).spec("wf-gone-g")
    value = {"azjobs_step_cannot_run": {"reason": "bad_arguments", "type": "azjobs.errors.ArgumentError",
                                        "message": "too many positional arguments"}}
    events = start(spec) + [h.task_scheduled(T0, 0, ACTIVITY, {}), h.task_scheduled(T0, 1, ACTIVITY, {})]
    events = then(events, T0, h.task_completed(T0, 0, 1), h.task_completed(T0, 1, value))
    failure = json.loads(h.replay(orchestrator, "wf-gone-g", events).actions[-1]["input"])["failure"]
    assert failure["step"] == {"path": "0.1", "job": "wfo.total"}
    assert failure["error"].startswith("azjobs.errors.ArgumentError: step 0.1 (wfo.total) cannot run: too many")


def test_the_activity_writes_a_failed_workflows_record_to_the_workflows_poison_queue():
    client = RecordingClient()
    application = func.FunctionApp()
    application.register_functions(azjobs.blueprint(registry=REG, executor=RecordingExecutor(registry=REG,
                                                                                              client=client)))
    user = fn(application, ACTIVITY).get_user_function()
    failure = {"workflow": "wf-9", "step": {"path": "0.1", "job": "wfo.size"},
               "error": "ValueError: bad \n Traceback (most recent call last):\n  ..."}
    assert asyncio.run(user(call=json.dumps({"failure": failure}))) is None
    [write] = client.writes
    assert write.queue == "azjobs-workflows-poison"
    data = json.loads(decode_body(write.text, "base64"))
    assert data["workflow"] == {"id": "wf-9", "step": {"path": "0.1", "job": "wfo.size"}}
    assert data["error"]["type"] == "ValueError" and data["error"]["message"] == "bad"
    assert data["error"]["traceback"].startswith("Traceback")


def test_a_failure_record_whose_error_is_over_a_message_is_trimmed_and_written():
    from azjobs.workflows.orchestrator import write_failure_record

    client = RecordingClient()
    error = "ValueError: " + "😀" * 6_000 + " \n Traceback (most recent call last):\n" + "  😀\n" * 6_000
    write_failure_record(client, "azjobs-workflows", {"workflow": "wf-t", "step": {"path": "0", "job": "j"},
                                                      "error": error})
    [write] = client.writes  # before: PayloadTooLargeError, the workflow left Running
    data = json.loads(decode_body(write.text, "base64"))
    assert data["workflow"]["id"] == "wf-t" and data["error"]["type"] == "ValueError"
    assert data["error"]["message"].startswith("😀😀")
    assert "trimmed to fit the poison message" in data["error"]["message"]
    assert data["error"]["traceback"].startswith("… (trimmed to fit the poison message)")


def test_a_worker_step_reports_to_its_workflow_instead_of_retrying():
    client = RecordingClient()
    executor = RecordingExecutor(registry=REG, client=client)
    ref = {"id": "wf-x", "task": 7, "queue": "azjobs-workflows"}
    good = Envelope.build("wfo.size", ("abc",), queue="wfo-parse", workflow=ref)
    bad = Envelope.build("wfo.broken", ("abc",), queue="wfo-parse", workflow=ref)
    for envelope in (good, bad):
        executor.execute(envelope.encode(), MessageInfo(queue="wfo-parse", message_id=envelope.id))
    reports = [json.loads(decode_body(w.text, "base64")) for w in client.writes]
    assert [w.queue for w in client.writes] == ["azjobs-workflows", "azjobs-workflows"]  # no retry copy, no poison
    assert reports[0]["event"] == {"EventType": 5, "EventId": -1, "TaskScheduledId": 7, "Result": "3"}
    assert reports[1]["event"]["EventType"] == 6 and reports[1]["event"]["TaskScheduledId"] == 7
    assert reports[1]["event"]["Reason"] == "ValueError: cannot parse abc"
    assert "Traceback" in reports[1]["event"]["Details"]


@pytest.mark.parametrize("why, envelope", [
    ("unknown_job", Envelope.build("wfo.gone", (1,), queue="wfo-parse")),
    ("bad_arguments", Envelope.build("wfo.size", ("abc", "extra"), queue="wfo-parse")),
])
def test_a_worker_step_that_can_never_run_tells_its_workflow_at_once_and_writes_no_poison_record(why, envelope):
    client = RecordingClient()
    executor = RecordingExecutor(registry=REG, client=client)
    envelope = envelope.evolve(workflow={"id": "wf-y", "task": 2, "queue": "azjobs-workflows"})
    executor.execute(envelope.encode(), MessageInfo(queue="wfo-parse", message_id=envelope.id))
    [write] = client.writes  # before: a retry copy (unknown job), or a poison record then the report (bad arguments)
    assert write.queue == "azjobs-workflows"
    event = json.loads(decode_body(write.text, "base64"))["event"]
    assert event["EventType"] == 5 and event["TaskScheduledId"] == 2
    assert json.loads(event["Result"])["azjobs_step_cannot_run"]["reason"] == why
    [result] = executor.results
    assert result.outcome.value == "dead_lettered" and result.extra["poison_record"] is None


def test_a_worker_step_that_kept_crashing_its_worker_fails_that_attempt_without_a_poison_record():
    client = RecordingClient()
    executor = RecordingExecutor(registry=REG, client=client)
    envelope = Envelope.build("wfo.size", ("abc",), queue="wfo-parse",
                              workflow={"id": "wf-z", "task": 5, "queue": "azjobs-workflows"})
    executor.execute(envelope.encode(), MessageInfo(queue="wfo-parse", message_id=envelope.id, dequeue_count=6))
    [write] = client.writes
    event = json.loads(decode_body(write.text, "base64"))["event"]
    assert write.queue == "azjobs-workflows" and event["EventType"] == 6  # retried by its workflow's policy
    assert event["Reason"].startswith("azjobs.MaxDequeueCountExceeded: message was dequeued 6 times")


def test_a_worker_step_returning_the_reserved_shape_fails_that_attempt():
    client = RecordingClient()
    executor = RecordingExecutor(registry=REG, client=client)
    forged = {"azjobs_step_cannot_run": {"reason": "unknown_job", "type": "x", "message": "y"}}
    envelope = Envelope.build("wfo.echo", (forged,), queue="wfo-parse",
                              workflow={"id": "wf-f", "task": 1, "queue": "azjobs-workflows"})
    executor.execute(envelope.encode(), MessageInfo(queue="wfo-parse", message_id=envelope.id))
    event = json.loads(decode_body(client.writes[0].text, "base64"))["event"]
    assert event["EventType"] == 6 and "reserves for workflow steps that cannot run" in event["Reason"]


def test_inside_a_function_app_status_comes_from_the_durable_client(monkeypatch):
    from azure.durable_functions import DurableOrchestrationClient

    hub = TaskHub().install(monkeypatch)
    hub.instances["wf-s"] = {"name": ORCHESTRATOR, "instanceId": "wf-s", "runtimeStatus": "Completed", "output": 6,
                             "createdTime": "2026-03-01T12:00:00Z", "lastUpdatedTime": "2026-03-01T12:00:05Z"}
    handle = azjobs.WorkflowHandle("wf-s", durable_client=DurableOrchestrationClient(hub.binding))
    info = asyncio.run(handle.status_async())
    assert info["status"] == "Completed" and info["output"] == 6 and info["source"] == "durable"
    assert info["updated"].startswith("2026-03-01T12:00:05")


def test_a_step_value_too_large_for_its_report_goes_to_a_blob_the_report_names():
    client = RecordingClient()
    executor = RecordingExecutor(registry=REG, client=client)
    envelope = Envelope.build("wfo.huge", (60_000,), queue="wfo-parse",
                              workflow={"id": "wf-big", "task": 3, "queue": "azjobs-workflows"})
    executor.execute(envelope.encode(), MessageInfo(queue="wfo-parse", message_id=envelope.id))
    [write] = client.writes
    event = json.loads(decode_body(write.text, "base64"))["event"]
    assert event["EventType"] == 5 and event["TaskScheduledId"] == 3 and "Result" not in event
    assert event["ResultRef"].startswith("azjobs-payloads/workflow-results/")
    assert json.loads(client.payloads.get(event["ResultRef"])) == "x" * 60_000


def test_a_step_error_too_large_for_its_report_is_trimmed_so_the_workflow_hears_of_it():
    client = RecordingClient()
    executor = RecordingExecutor(registry=REG, client=client)
    envelope = Envelope.build("wfo.loud", (20_000,), queue="wfo-parse",
                              workflow={"id": "wf-loud", "task": 4, "queue": "azjobs-workflows"})
    executor.execute(envelope.encode(), MessageInfo(queue="wfo-parse", message_id=envelope.id))
    [write] = client.writes  # before: PayloadTooLargeError out of the core, the message redelivered for ever
    event = json.loads(decode_body(write.text, "base64"))["event"]
    assert event["EventType"] == 6 and event["TaskScheduledId"] == 4
    assert event["Reason"].startswith("ValueError: 😀😀")
    assert event["Reason"].endswith("(trimmed to fit the report message)")
    assert event["Details"].startswith("… (trimmed to fit the report message)\n")
    assert event["Details"].rstrip().endswith("😀")  # the traceback's last line: the error itself
