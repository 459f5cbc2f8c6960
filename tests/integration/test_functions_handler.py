"""The generated Functions handler against Azurite: real messages, real QueueMessage objects."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

import azjobs
from azjobs.model.outcome import Outcome
from azjobs.execution.executor import Redeliver
from azjobs.model.poison_record import PoisonRecord
from azjobs.model.settings import QueueSettings
from tests.conftest import unique_queue
from tests.functions_support import (
    HostAction,
    RecordingExecutor,
    fresh_app,
    host_like_settle,
    invoke,
    invoke_async,
    job_functions_of,
    queue_message_from,
    receive_one,
)

CALLS: list = []


def record(tag: str, value: int = 0) -> None:
    CALLS.append(("sync", tag, value))


async def record_async(tag: str, value: int = 0) -> None:
    await asyncio.sleep(0.01)
    CALLS.append(("async", tag, value))


def explode(tag: str) -> None:
    CALLS.append(("explode", tag, 0))
    raise RuntimeError(f"boom {tag}")


# A class-style job whose queue is an app setting, resolved per test.
CLASS_REGISTRY = azjobs.Registry()


class Resize(azjobs.Job, registry=CLASS_REGISTRY):
    queue = "%AZJOBS_TEST_RESIZE_QUEUE%"
    max_retries = 0

    def perform(self, blob: str, fail: bool = False) -> None:
        CALLS.append(("class", blob, 0))
        if fail:
            raise ValueError(f"cannot resize {blob}")


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()
    yield
    CALLS.clear()


def _decode(content: str) -> dict:
    return json.loads(base64.b64decode(content))


def _poison_records(raw_queue, queue: str) -> list[PoisonRecord]:
    poison = raw_queue(f"{queue}-poison")
    return [PoisonRecord.decode(m.content, "base64", queue) for m in poison.receive_messages(max_messages=32, messages_per_page=32)]


def _empty(queue_client) -> bool:
    return queue_client.get_queue_properties().approximate_message_count == 0


def test_sync_job_runs_and_the_host_deletes_the_message(client, raw_queue):
    q, reg = unique_queue("fsync"), azjobs.Registry()
    job = azjobs.job(queue=q, registry=reg, name="record")(record)
    job.enqueue("hello", value=3)
    qc = raw_queue(q)
    message = receive_one(qc)
    assert message.dequeue_count == 1
    delivery = host_like_settle(fresh_app(registry=reg), qc, message)
    assert delivery.action is HostAction.DELETED and delivery.ran
    assert CALLS == [("sync", "hello", 3)]
    assert _empty(qc)


def test_async_job_runs_on_the_workers_event_loop(client, raw_queue):
    q, reg = unique_queue("fasync"), azjobs.Registry()
    job = azjobs.job(queue=q, registry=reg, name="record_async")(record_async)
    job.enqueue("a", value=1)
    job.enqueue("b", value=2)
    qc = raw_queue(q)
    app = fresh_app(registry=reg)
    messages = list(qc.receive_messages(max_messages=2, messages_per_page=2, visibility_timeout=60))
    assert len(messages) == 2

    async def host_loop():
        # The worker runs async functions concurrently on one loop.
        return await asyncio.gather(*(invoke_async(app, q, queue_message_from(m)) for m in messages))

    assert asyncio.run(host_loop()) == [None, None]
    assert sorted(CALLS) == [("async", "a", 1), ("async", "b", 2)]


def test_class_job_on_an_app_setting_queue(client, raw_queue, monkeypatch):
    q = unique_queue("fclass")
    monkeypatch.setenv("AZJOBS_TEST_RESIZE_QUEUE", q)
    executor = RecordingExecutor(registry=CLASS_REGISTRY, client=client, settings=QueueSettings())
    app = fresh_app(registry=CLASS_REGISTRY, executor=executor)
    Resize.options(queue=q).enqueue("cat.png")
    Resize.options(queue=q).enqueue("dog.png", fail=True)
    qc = raw_queue(q)
    for _ in range(2):
        assert host_like_settle(app, qc, receive_one(qc)).action is HostAction.DELETED
    assert sorted(CALLS) == [("class", "cat.png", 0), ("class", "dog.png", 0)]
    assert sorted(r.outcome.value for r in executor.results) == ["dead_lettered", "succeeded"]
    # The poison record went to the resolved queue's twin, naming the resolved queue.
    (poisoned,) = _poison_records(raw_queue, q)
    assert poisoned.queue == q
    assert poisoned.envelope.args == ("dog.png",) and poisoned.error.type == "ValueError"
    assert _empty(qc)


def test_failing_job_has_its_retry_copy_on_the_queue_before_the_handler_returns(client, raw_queue):
    q, reg = unique_queue("fretry"), azjobs.Registry()
    job = azjobs.job(queue=q, registry=reg, name="explode", retry=azjobs.Fixed(0, max_retries=3))(explode)
    job_id = job.enqueue("x")
    qc = raw_queue(q)
    original = receive_one(qc)
    assert invoke(fresh_app(registry=reg), q, queue_message_from(original)) is None
    # The original is still leased (not deleted: that is the host's job after the return),
    # and the retry copy is already durable and visible.
    copy = receive_one(qc)
    assert copy is not None and copy.id != original.id
    envelope = _decode(copy.content)
    assert (envelope["id"], envelope["job"], envelope["attempt"], envelope["args"]) == (job_id, "explode", 2, ["x"])
    assert envelope["first_failed_at"]
    assert qc.get_queue_properties().approximate_message_count == 2
    assert CALLS == [("explode", "x", 0)]


def test_malformed_bodies_end_in_the_poison_queue_without_crashing(client, raw_queue):
    q, reg = unique_queue("fbad"), azjobs.Registry()
    azjobs.job(queue=q, registry=reg, name="record")(record)
    app = fresh_app(registry=reg)
    qc = raw_queue(q)
    qc.create_queue()
    bodies = {
        "not_json": base64.b64encode(b"this is { not json").decode(),
        "not_envelope": base64.b64encode(b'{"hello": "world"}').decode(),
        "not_utf8": base64.b64encode(b"\xff\xfe\x00garbage").decode(),
    }
    for body in bodies.values():
        qc.send_message(body)
    for _ in bodies:
        message = receive_one(qc)
        assert invoke(app, q, queue_message_from(message)) is None  # returns: the host deletes it
        qc.delete_message(message.id, message.pop_receipt)
    records = _poison_records(raw_queue, q)
    assert sorted(r.error.reason for r in records) == sorted(bodies)
    assert all(r.queue == q and r.envelope is None and r.raw_body for r in records)
    assert _empty(qc)
    assert CALLS == []


def test_a_body_that_is_not_base64_is_poisoned_by_the_host_without_running(client, raw_queue):
    q, reg = unique_queue("fraw"), azjobs.Registry()
    azjobs.job(queue=q, registry=reg, name="record")(record)
    qc = raw_queue(q)
    qc.create_queue()
    qc.send_message("%% definitely not base64 %%")
    delivery = host_like_settle(fresh_app(registry=reg), qc, receive_one(qc))
    assert delivery.action is HostAction.POISONED and not delivery.ran
    (record_,) = _poison_records(raw_queue, q)
    assert record_.from_host and record_.raw_body == "%% definitely not base64 %%"


def test_when_the_core_cannot_settle_the_handler_raises_and_the_host_redelivers(client, raw_queue):
    # A queue named "...-poison" has no poison twin, so a dead letter cannot be written.
    q, reg = unique_queue("fredeliver") + "-poison", azjobs.Registry()
    job = azjobs.job(queue=q, registry=reg, name="explode", retry=azjobs.NoRetry())(explode)
    job.enqueue("y")
    qc = raw_queue(q)
    app = fresh_app(registry=reg)
    message = receive_one(qc)
    with pytest.raises(Redeliver):
        invoke(app, q, queue_message_from(message))
    # The same delivery through the host: the exception releases it (visibilityTimeout 0).
    delivery = host_like_settle(app, qc, message)
    assert delivery.action is HostAction.RELEASED and isinstance(delivery.error, Redeliver)
    again = receive_one(qc)
    assert again is not None and again.id == message.id
    assert again.dequeue_count == 2 and _decode(again.content)["attempt"] == 1
    assert CALLS == [("explode", "y", 0)] * 2


def test_default_executor_uses_the_named_connection_and_host_json(client, raw_queue, monkeypatch, tmp_path,
                                                                  connection_string, second_connection_string):
    from azure.storage.queue import QueueClient, QueueServiceClient

    q, reg = unique_queue("fconn"), azjobs.Registry()
    azjobs.job(queue=q, registry=reg, name="explode", retry=azjobs.Fixed(0, max_retries=1))(explode)
    # AzureWebJobsStorage (and the default client) is the session account; AzjobsTestStorage another one.
    monkeypatch.setenv("AzjobsTestStorage", second_connection_string)
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"version": "2.0", "extensions": {"queues": {"messageEncoding": "none"}}}))
    app = fresh_app(registry=reg, connection="AzjobsTestStorage", host_json=host_json)
    (binding,) = [json.loads(f.get_function_json())["bindings"][0] for f in job_functions_of(app)]
    assert binding["connection"] == "AzjobsTestStorage"
    qc = QueueClient.from_connection_string(second_connection_string, q)  # where the trigger reads
    assert qc.account_name != raw_queue(q).account_name
    qc.create_queue()
    try:
        sent = azjobs.Envelope.build("explode", ("z",), queue=q)
        qc.send_message(sent.to_json())  # messageEncoding none: plain JSON
        message = receive_one(qc)
        invoke(app, q, queue_message_from(message, encoding="none"))
        qc.delete_message(message.id, message.pop_receipt)
        copy = receive_one(qc)
        # Written by the executor the blueprint built: through AzjobsTestStorage, as plain JSON ...
        assert copy is not None, "no retry copy in the AzjobsTestStorage account"
        assert json.loads(copy.content)["attempt"] == 2 and json.loads(copy.content)["id"] == sent.id
        # ... and nothing through AzureWebJobsStorage: that account does not even have the queue.
        default_account = QueueServiceClient.from_connection_string(connection_string)
        assert [queue.name for queue in default_account.list_queues(name_starts_with=q)] == []
    finally:
        qc.delete_queue()


def test_the_handler_reports_each_outcome_through_the_shared_core(client, raw_queue):
    q, reg = unique_queue("foutcome"), azjobs.Registry()
    ok = azjobs.job(queue=q, registry=reg, name="record")(record)
    bad = azjobs.job(queue=q, registry=reg, name="explode", retry=azjobs.NoRetry())(explode)
    executor = RecordingExecutor(registry=reg, client=client, settings=QueueSettings())
    app = fresh_app(registry=reg, executor=executor)
    ok.enqueue("fine")
    bad.enqueue("broken")
    qc = raw_queue(q)
    for _ in range(2):
        assert host_like_settle(app, qc, receive_one(qc)).action is HostAction.DELETED
    assert sorted(r.outcome.value for r in executor.results) == [Outcome.DEAD_LETTERED.value, Outcome.SUCCEEDED.value]
    (poisoned,) = _poison_records(raw_queue, q)
    assert poisoned.envelope.args == ("broken",) and poisoned.error.message == "boom broken"
    assert _empty(qc)
