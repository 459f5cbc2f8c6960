"""Invocations through the real Python language worker (azure-functions-runtime, 3.13), against Azurite.

Each test starts a worker on tests/functions_worker/app (its queues are app settings, set to
fresh names per test), takes a message that ``job.enqueue`` really sent to Azurite, and hands it
to the worker in the InvocationRequest the host would build (tests/functions_worker/host.py); the
worker converts the binding data and calls the generated function, which runs the job through
the execution core. The host's part after the answer (delete, release, poison) follows the
StatusResult the worker returned.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

import azjobs
import azjobs.storage.client
from azjobs.functions.blueprint import function_name_for, timer_function_name_for
from azjobs.model.envelope import Envelope, format_time
from azjobs.model.poison_record import PoisonRecord
from azjobs.workflows import replay as h
from azjobs.workflows.orchestrator import ACTIVITY, ORCHESTRATOR
from devtools.azurite import ACCOUNT, KEY, free_port
from tests.conftest import unique_queue
from tests.functions_support import receive_one
from tests.functions_worker import worker_jobs
from tests.functions_worker.host import (
    HostAction,
    LanguageWorker,
    activity_inputs,
    deliver_queue_message,
    orchestration_inputs,
    queue_trigger_inputs,
    returned_json,
    status_name,
    timer_inputs,
)

APP = Path(worker_jobs.__file__).resolve().parent / "app"
JOBS_FUNCTION = function_name_for(worker_jobs.QUEUE)


@pytest.fixture
def queues(monkeypatch, connection_string):
    """Fresh queue names for the app's settings, and the app's connection setting pointed at Azurite."""
    names = {"jobs": unique_queue("lwj"), "ticks": unique_queue("lwt")}
    monkeypatch.setenv(worker_jobs.QUEUE_SETTING, names["jobs"])
    monkeypatch.setenv(worker_jobs.TICKS_SETTING, names["ticks"])
    monkeypatch.setenv(worker_jobs.CONNECTION, connection_string)
    worker_jobs.CALLS.clear()
    yield names
    worker_jobs.CALLS.clear()


@pytest.fixture
def worker(queues):
    with LanguageWorker(APP) as started:
        yield started


# -- a real SAS, as tests/integration/test_secrets.py uses it (not imported: its jobs module registers a job in the
# default registry, which the repository's function_app.py would then index)
UNREDACTED_SIG = re.compile(r"(?i)\bsig=(?!\*\*\*)[^&;\s'\"<>)]+")


def account_sas() -> str:
    from azure.storage.queue import AccountSasPermissions, ResourceTypes, generate_account_sas

    return generate_account_sas(
        ACCOUNT, KEY, resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, add=True, update=True, process=True, delete=True, list=True,
                                         create=True, write=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1))


def sas_connection_at_port(token: str, port: int) -> str:
    """A SAS connection string whose queue endpoint is 127.0.0.1:``port`` (nothing listens there)."""
    return f"QueueEndpoint=http://127.0.0.1:{port}/{ACCOUNT};SharedAccessSignature={token}"


def assert_no_secret(text: str, token: str, where: str) -> None:
    (sig,) = [value for name, _, value in (pair.partition("=") for pair in token.split("&")) if name == "sig"]
    for form in {token, sig, unquote(sig), quote(unquote(sig), safe=""), KEY}:
        assert form not in text, f"{where} leaks the SAS secret"
    assert UNREDACTED_SIG.search(text) is None, f"{where} has an unredacted signature"


def _poison(raw_queue, queue: str) -> list[PoisonRecord]:
    return [PoisonRecord.decode(m.content, "base64", queue)
            for m in raw_queue(f"{queue}-poison").peek_messages(max_messages=32)]


def _empty(queue_client) -> bool:
    return queue_client.get_queue_properties().approximate_message_count == 0


# -- queue triggers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("job, expected", [(worker_jobs.succeed, ("succeed", 21)),
                                           (worker_jobs.succeed_async, ("succeed_async", 21))])
def test_a_job_that_succeeds_returns_success_and_the_host_deletes_the_message(job, expected, worker, queues, client,
                                                                              raw_queue):
    job.enqueue(21)
    qc = raw_queue(queues["jobs"])
    delivery = deliver_queue_message(worker, JOBS_FUNCTION, qc, receive_one(qc))
    assert status_name(delivery.response) == "Success", delivery.response.result.exception.message
    assert delivery.action is HostAction.DELETED
    assert worker_jobs.CALLS == [expected]
    assert _empty(qc)


def test_the_worker_turns_the_hosts_trigger_metadata_into_the_queue_message_azjobs_reads(worker, queues, client,
                                                                                         raw_queue):
    """Id and PopReceipt (strings), DequeueCount (a JSON number), the times (JSON strings), and the body as bytes:
    the QueueMessage the worker's converter builds from exactly what the host sends."""
    import azure.functions as func
    from azure_functions_runtime.bindings.meta import from_incoming_proto  # the running worker's own module

    from tests.functions_worker.host import protos

    worker_jobs.succeed.enqueue(5)
    message = receive_one(raw_queue(queues["jobs"]))
    inputs, metadata = queue_trigger_inputs(worker.functions[JOBS_FUNCTION], message)
    ((name, data),) = inputs.items()
    converted = from_incoming_proto("queueTrigger", protos().ParameterBinding(name=name, data=data),
                                    trigger_metadata=metadata, pytype=func.QueueMessage, function_name=JOBS_FUNCTION,
                                    is_deferred_binding=False)
    assert converted.id == message.id and converted.pop_receipt == message.pop_receipt
    assert converted.dequeue_count == 1 and isinstance(converted.dequeue_count, int)
    assert converted.insertion_time == message.inserted_on
    assert converted.expiration_time == message.expires_on
    assert converted.time_next_visible == message.next_visible_on
    assert converted.get_body() == base64.b64decode(message.content)


def test_a_failure_with_retries_left_returns_success_after_the_retry_copy_is_on_the_queue(worker, queues, client,
                                                                                         raw_queue):
    job_id = worker_jobs.flaky.enqueue(7)
    qc = raw_queue(queues["jobs"])
    original = receive_one(qc)
    inputs, metadata = queue_trigger_inputs(worker.functions[JOBS_FUNCTION], original)
    response = worker.invoke(JOBS_FUNCTION, inputs, metadata)
    # Before the host deletes the original (still leased), azjobs' copy is durable and visible.
    copy = receive_one(qc)
    assert copy is not None and copy.id != original.id
    envelope = Envelope.decode(copy.content)
    assert (envelope.id, envelope.job, envelope.attempt, envelope.args) == (job_id, "lw.flaky", 2, (7,))
    assert status_name(response) == "Success"
    assert worker_jobs.CALLS == [("flaky", 7)]


def test_a_failure_for_good_returns_success_after_the_poison_record_is_written(worker, queues, client, raw_queue):
    job_id = worker_jobs.fatal.enqueue(9)
    qc = raw_queue(queues["jobs"])
    message = receive_one(qc)
    inputs, metadata = queue_trigger_inputs(worker.functions[JOBS_FUNCTION], message)
    response = worker.invoke(JOBS_FUNCTION, inputs, metadata)
    (record,) = _poison(raw_queue, queues["jobs"])  # written before the worker answered
    assert record.envelope.id == job_id and record.error.type == "azjobs.errors.Fail" and record.error.message == "permanent 9"
    assert status_name(response) == "Success"
    qc.delete_message(message.id, message.pop_receipt)  # the host's delete after Success
    assert _empty(qc)


def test_a_body_that_is_not_utf8_reaches_azjobs_byte_for_byte(worker, queues, client, raw_queue):
    """The trigger declares dataType binary, so the host passes the stored bytes and azjobs poisons the message at
    once, with a record that keeps them and says why. (For a string the host's strict UTF-8 decoding would fail
    the binding: the function never runs, and after maxDequeueCount deliveries the host poisons the bare body.)"""
    body = b"\xff\xfe\x00 not an azjobs message \x80"
    qc = raw_queue(queues["jobs"])
    qc.create_queue()
    qc.send_message(base64.b64encode(body).decode("ascii"))
    delivery = deliver_queue_message(worker, JOBS_FUNCTION, qc, receive_one(qc))
    assert delivery.response is not None, f"the host could not bind the body: {delivery.action.value}, never run"
    assert status_name(delivery.response) == "Success" and delivery.action is HostAction.DELETED
    (record,) = _poison(raw_queue, queues["jobs"])
    assert record.error.reason == "not_utf8"
    assert record.raw_bytes() == body
    assert worker_jobs.CALLS == []


def test_a_body_that_is_not_base64_never_reaches_the_worker(worker, queues, client, raw_queue):
    qc = raw_queue(queues["jobs"])
    qc.create_queue()
    qc.send_message("%% not base64 %%")
    delivery = deliver_queue_message(worker, JOBS_FUNCTION, qc, receive_one(qc))
    assert delivery.action is HostAction.POISONED and delivery.response is None
    (poisoned,) = raw_queue(f"{queues['jobs']}-poison").peek_messages(max_messages=2)
    assert poisoned.content == "%% not base64 %%"


def test_when_azjobs_wants_redelivery_the_worker_returns_failure_carrying_no_secret(queues, client, raw_queue,
                                                                                   monkeypatch):
    """azjobs' own storage (a SAS connection, its queue endpoint down) cannot take the poison record: the handler
    raises Redeliver, the worker answers Failure with the exception it serialized (message and stack trace,
    the way the host logs them), and the host makes the message visible again."""
    from azure.storage.queue import ExponentialRetry

    monkeypatch.setattr(azjobs.storage.client, "sdk_retry", lambda: ExponentialRetry(retry_total=0))
    sas = account_sas()
    port = free_port()
    monkeypatch.setenv(worker_jobs.CONNECTION, sas_connection_at_port(sas, port))
    worker_jobs.plain_failure.enqueue(3)
    qc = raw_queue(queues["jobs"])
    with LanguageWorker(APP) as worker:
        delivery = deliver_queue_message(worker, JOBS_FUNCTION, qc, receive_one(qc))
    assert status_name(delivery.response) == "Failure" and delivery.action is HostAction.RELEASED
    exception = delivery.response.result.exception
    assert exception.message.startswith("Redeliver: ")
    # The cause as the worker words it, naming the endpoint tried (azjobs' transport never puts a request's
    # URL, with its SAS, in an error's text; a change that did would fail the two checks below).
    assert f"cannot reach the queue service at http://127.0.0.1:{port}/devstoreaccount1" in exception.message, \
        exception.message
    assert_no_secret(exception.message, sas, "the Failure's message")
    assert_no_secret(exception.stack_trace, sas, "the Failure's stack trace")
    assert worker_jobs.CALLS == [("plain_failure", 3)]
    again = receive_one(qc)  # visibilityTimeout 0 in the app's host.json
    assert again is not None and again.dequeue_count == 2


# -- DequeueCount: the same decision as the worker ---------------------------------------------------
def _delivered_at(queue_client, text: str, dequeue_count: int):
    """``text`` on the queue, received ``dequeue_count`` times (each earlier delivery released): the last one."""
    queue_client.create_queue()
    queue_client.send_message(text)
    for _ in range(dequeue_count - 1):
        message = receive_one(queue_client)
        queue_client.update_message(message.id, message.pop_receipt, visibility_timeout=0)
    message = receive_one(queue_client)
    assert message.dequeue_count == dequeue_count
    return message


def _runner_path(client, queue_client, message, registry) -> str:
    """The local worker's own path for the same delivery: the core's steps and its Settlement."""
    from azjobs.execution.executor import Redeliver
    from azjobs.model.outcome import Result
    from azjobs.model.settings import QueueSettings
    from azjobs.runtime.leases import LeaseKeeper
    from azjobs.runtime.settlement import Delivery, Settlement
    from azjobs.runtime.settler import Settler
    from azjobs.testing import RecordingExecutor

    settings = QueueSettings.load(APP / "host.json")
    executor = RecordingExecutor(registry=registry, client=client, settings=settings)
    keeper, settler = LeaseKeeper(60), Settler(1).start()
    counts: list = []
    settlement = Settlement(executor=executor, keeper=keeper, settler=settler, count=counts.append)
    delivery = Delivery(queue_client.queue_name, queue_client, message,
                        keeper.track(queue_client.queue_name, queue_client, message.id, message.pop_receipt))
    try:
        outcome = executor.execute(message.content, delivery.info, encoded=True)
    except Redeliver as exc:
        outcome = exc
    settlement.settle(delivery, outcome)
    settler.stop()
    if isinstance(outcome, Result):
        return "settled"
    return "poisoned" if "dead_lettered" in counts else "released"


def _left(raw_queue, queue: str) -> dict:
    """What a delivery left: the queue's visible messages and the poison queue's contents, normalized."""
    from azure.core.exceptions import ResourceNotFoundError

    visible = []
    for m in raw_queue(queue).peek_messages(max_messages=32):
        data = Envelope.decode(m.content).to_dict()
        data.pop("first_failed_at", None)
        visible.append(data)
    try:
        poison = []
        for m in raw_queue(f"{queue}-poison").peek_messages(max_messages=32):
            record = PoisonRecord.decode(m.content, "base64", queue)
            if record.from_host:  # the host's bare copy of the message
                poison.append({"bare": m.content})
                continue
            poison.append({"reason": record.error.reason, "type": record.error.type, "attempts": record.attempts,
                           "raw": record.raw_body, "job": record.envelope.job if record.envelope else None})
    except ResourceNotFoundError:
        poison = []
    return {"count": raw_queue(queue).get_queue_properties().approximate_message_count, "visible": visible,
            "poison": poison}


PARITY = {
    # scenario: (message text, queue suffix); a "-poison" queue has no poison twin, so nothing can be dead-lettered
    "fails_and_retries": (lambda: Envelope.build("lw.flaky", (7,)).encode("base64"), ""),
    "fails_for_good": (lambda: Envelope.build("lw.fatal", (9,)).encode("base64"), ""),
    "not_json": (lambda: base64.b64encode(b"{{ not json").decode("ascii"), ""),
    "cannot_settle": (lambda: Envelope.build("lw.fatal", (9,)).encode("base64"), "-poison"),
}


CASES = [(scenario, count) for scenario in sorted(PARITY) for count in (1, 5, 6)
         if (scenario, count) != ("cannot_settle", 6)]  # the host's pre-run poisoning without a poison queue: unread


@pytest.mark.parametrize("scenario, dequeue_count", CASES)
def test_the_dequeue_count_the_host_passes_drives_the_same_decision_as_the_worker(scenario, dequeue_count, queues,
                                                                                  client, raw_queue, monkeypatch):
    text_of, suffix = PARITY[scenario]
    text = text_of()
    on_functions, on_worker = unique_queue("lwpf") + suffix, unique_queue("lwpw") + suffix
    monkeypatch.setenv(worker_jobs.QUEUE_SETTING, on_functions)
    fn_qc, run_qc = raw_queue(on_functions), raw_queue(on_worker)
    with LanguageWorker(APP) as worker:
        delivery = deliver_queue_message(worker, JOBS_FUNCTION, fn_qc, _delivered_at(fn_qc, text, dequeue_count))
    run_action = _runner_path(client, run_qc, _delivered_at(run_qc, text, dequeue_count), worker_jobs.REGISTRY)
    fn_left, run_left = _left(raw_queue, on_functions), _left(raw_queue, on_worker)
    if dequeue_count > 5:
        # Past maxDequeueCount (a delivery that kept crashing): the host poisons it without invoking the worker,
        # the worker's core dead-letters it before running anything. Both drop it and keep its text.
        assert delivery.action is HostAction.POISONED and delivery.response is None and run_action == "settled"
        assert fn_left["poison"] == [{"bare": text}] and fn_left["count"] == run_left["count"] == 0
        (record,) = run_left["poison"]
        assert record["reason"] == "max_dequeue_count"
        return
    fn_action = {HostAction.DELETED: "settled", HostAction.RELEASED: "released",
                 HostAction.POISONED: "poisoned"}[delivery.action]
    assert fn_action == run_action
    assert fn_left == run_left
    expected = {"fails_and_retries": ("settled", 1, 0), "fails_for_good": ("settled", 0, 1),
                "not_json": ("settled", 0, 1), "cannot_settle": ("released", 1, 0)}[scenario]
    assert (fn_action, fn_left["count"], len(fn_left["poison"])) == expected


# -- timers and workflows ----------------------------------------------------------------------------
def test_a_timer_invocation_enqueues_the_ticks_job(worker, queues, client, raw_queue):
    timer = timer_function_name_for(worker_jobs.tick.name)
    tick = datetime(2026, 3, 1, 12, 5, tzinfo=timezone.utc)
    status = {"Last": "2026-03-01T12:00:00+00:00", "Next": "2026-03-01T12:05:00+00:00",
              "LastUpdated": "2026-03-01T12:00:00.0123456+00:00"}
    response = worker.invoke(timer, *timer_inputs(worker.functions[timer], past_due=True, schedule_status=status))
    assert status_name(response) == "Success", response.result.exception.message
    # Without the monitor the host sends no schedule status (null): the tick is the occurrence nearest now.
    before = datetime.now(timezone.utc)
    response = worker.invoke(timer, *timer_inputs(worker.functions[timer]))
    after = datetime.now(timezone.utc)
    assert status_name(response) == "Success", response.result.exception.message
    sent = [Envelope.decode(m.content) for m in raw_queue(queues["ticks"]).peek_messages(max_messages=32)]
    assert [(e.job, e.args) for e in sent] == [("lw.tick", ())] * 2
    assert sent[0].scheduled_at == format_time(tick) and sent[0].past_due
    nearest = datetime.fromisoformat(sent[1].scheduled_at.replace("Z", "+00:00"))
    assert _five_minutes_floor(before) <= nearest <= _five_minutes_floor(after + timedelta(seconds=1))
    assert not sent[1].past_due


def _activity_calls(actions: list) -> list:
    """The activity calls among an orchestrator's actions, compound actions (a group) flattened."""
    out = []
    for action in actions:
        out.extend(_activity_calls(action["compoundActions"]) if "compoundActions" in action else [action])
    return out


def _five_minutes_floor(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


def test_an_orchestration_invocation_schedules_a_step_and_the_activity_invocation_runs_it(worker, queues, client):
    workflow_id = unique_queue("wf")
    spec = azjobs.chain(worker_jobs.shout.s("héllo 😀")).spec(workflow_id)
    started = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    payload = h.body(workflow_id, [h.orchestrator_started(started), h.execution_started(started, ORCHESTRATOR, spec)])
    response = worker.invoke(ORCHESTRATOR, *orchestration_inputs(worker.functions[ORCHESTRATOR], payload))
    assert status_name(response) == "Success", response.result.exception.message
    state = returned_json(response)
    (action,) = _activity_calls([a for group in state["actions"] for a in group])
    assert action["functionName"] == ACTIVITY
    response = worker.invoke(ACTIVITY, *activity_inputs(worker.functions[ACTIVITY], action["input"], workflow_id))
    assert status_name(response) == "Success", response.result.exception.message
    assert returned_json(response) == "HÉLLO 😀"
    assert worker_jobs.CALLS == [("shout", "héllo 😀")]
