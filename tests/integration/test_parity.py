"""One message, one outcome: the Functions path and the local runner's path agree.

Each scenario sends the same message text to two fresh queues. One copy goes through
the generated Functions handler with host-like settlement; the other through the core's
steps and the worker's own ``Settlement`` (azjobs/settlement.py), with its lease keeper
and settler, exactly as the local runner settles a delivery.
Both must end with the same outcome and the same queue and poison contents, modulo
message ids, times, hosts and tracebacks.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from azure.core.exceptions import ResourceNotFoundError

import azjobs
from azjobs.state.store import store_for
from azjobs.model.outcome import Outcome, Result
from azjobs.execution.executor import Redeliver
from azjobs.runtime.leases import LeaseKeeper
from azjobs.model.envelope import Envelope
from azjobs.model.poison_record import PoisonRecord
from azjobs.model.settings import QueueSettings
from azjobs.runtime.settlement import Delivery, Settlement
from azjobs.runtime.settler import Settler
from tests.conftest import unique_queue
from tests.functions_support import HostAction, RecordingExecutor, fresh_app, host_like_settle, receive_one

SETTINGS = QueueSettings()  # host defaults: maxDequeueCount 5, visibilityTimeout 0, base64


def succeed(n: int) -> int:
    return n * 2


def fail_then_retry(n: int) -> None:
    raise RuntimeError(f"transient {n}")


def fail_for_good(n: int) -> None:
    raise azjobs.Fail(f"permanent {n}")


async def succeed_async(n: int) -> int:
    return n


def _register(reg: azjobs.Registry, queue: str) -> None:
    azjobs.job(queue=queue, registry=reg, name="succeed")(succeed)
    azjobs.job(queue=queue, registry=reg, name="succeed_async")(succeed_async)
    azjobs.job(queue=queue, registry=reg, name="flaky", retry=azjobs.Fixed(0, max_retries=3))(fail_then_retry)
    azjobs.job(queue=queue, registry=reg, name="fatal")(fail_for_good)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _envelope(job: str, *args: Any, **fields: Any) -> str:
    # No queue field: the retry copy goes back to the queue the message came from,
    # so the very same text can be sent to both paths' queues.
    return Envelope.build(job, args, **fields).encode("base64")


SCENARIOS: dict[str, Callable[[], str]] = {
    "succeeds": lambda: _envelope("succeed", 21),
    "async_succeeds": lambda: _envelope("succeed_async", 1),
    "fails_and_retries": lambda: _envelope("flaky", 7),
    "fails_for_good": lambda: _envelope("fatal", 9),
    "bad_arguments": lambda: _envelope("succeed", 1, 2, 3),
    "unknown_job": lambda: _envelope("nobody_registered_this", 1),
    "not_json": lambda: _b64(b"{{ not json"),
    "not_an_envelope": lambda: _b64(b'{"job": "succeed"}'),
    "not_base64": lambda: "@@@ not base64 @@@",
}


@dataclass
class Settled:
    """What one path did with one delivery, and what it left behind."""

    outcome: str  # an Outcome value, or "released" / "host_poisoned"
    queue: list  # normalized messages left on the queue
    poison: list  # normalized poison records


def run_functions_path(client, raw_queue, text: str, suffix: str = "") -> tuple[str, str]:
    """Deliver through the generated function and settle as the Functions host does."""
    q, reg = unique_queue("pfn") + suffix, azjobs.Registry()
    _register(reg, q)
    executor = RecordingExecutor(registry=reg, client=client, settings=SETTINGS)
    app = fresh_app(registry=reg, executor=executor)
    qc = raw_queue(q)
    qc.create_queue()
    qc.send_message(text)
    delivery = host_like_settle(app, qc, receive_one(qc), SETTINGS)
    if delivery.action is HostAction.DELETED:
        (result,) = executor.results
        outcome = result.outcome.value
    elif delivery.action is HostAction.RELEASED:
        outcome = "released"
    else:
        outcome = "host_poisoned" if not delivery.ran else "poisoned_after_redelivery"
    return outcome, q


def run_runner_path(client, raw_queue, text: str, suffix: str = "") -> tuple[str, str]:
    """Deliver as the local runner does: the worker's own lease keeper, core steps and ``Settlement``."""
    q, reg = unique_queue("prun") + suffix, azjobs.Registry()
    _register(reg, q)
    executor = RecordingExecutor(registry=reg, client=client, settings=SETTINGS)
    qc = raw_queue(q)
    qc.create_queue()
    qc.send_message(text)
    message = receive_one(qc)
    keeper, settler = LeaseKeeper(60), Settler(1).start()
    counts: list[str] = []
    settlement = Settlement(executor=executor, keeper=keeper, settler=settler, count=counts.append)
    delivery = Delivery(q, qc, message, keeper.track(q, qc, message.id, message.pop_receipt))
    try:
        outcome = executor.execute(message.content, delivery.info, encoded=True)
    except Redeliver as exc:
        outcome = exc
    settlement.settle(delivery, outcome)
    settler.stop()
    if isinstance(outcome, Result):
        return outcome.outcome.value, q
    return ("poisoned_after_redelivery" if "dead_lettered" in counts else "released"), q


def _normalize_envelope(data: dict | None) -> dict | None:
    if data is None:
        return None
    data = dict(data)
    if data.get("first_failed_at"):
        data["first_failed_at"] = "<time>"
    return data


def _normalize_poison(record: PoisonRecord, queue: str) -> dict:
    assert record.queue == queue
    return {
        "envelope": _normalize_envelope(record.envelope.to_dict() if record.envelope else None),
        "raw_body": record.raw_body,
        "raw_body_encoding": record.raw_body_encoding,
        "raw_form": record.raw_form,
        "error_type": record.error.type,
        "error_message": record.error.message.replace(queue, "<queue>"),
        "reason": record.error.reason,
        "attempts": record.attempts,
        "from_host": record.from_host,
    }


def snapshot(raw_queue, queue: str, outcome: str) -> Settled:
    qc, pc = raw_queue(queue), raw_queue(f"{queue}-poison")
    count = qc.get_queue_properties().approximate_message_count
    # Visible messages (retry copies written with no delay) are compared by content;
    # invisible ones (back-off) only by count.
    visible = [_normalize_envelope(Envelope.decode(m.content).to_dict())
               for m in qc.peek_messages(max_messages=32)]
    try:
        poison = [_normalize_poison(PoisonRecord.decode(m.content, "base64", queue), queue)
                  for m in pc.peek_messages(max_messages=32)]
    except ResourceNotFoundError:  # never created: nothing was poisoned
        poison = []
    return Settled(outcome, [count, visible], poison)


EXPECTED = {
    "succeeds": Outcome.SUCCEEDED.value,
    "async_succeeds": Outcome.SUCCEEDED.value,
    "fails_and_retries": Outcome.RETRY_SCHEDULED.value,
    "fails_for_good": Outcome.DEAD_LETTERED.value,
    "bad_arguments": Outcome.DEAD_LETTERED.value,
    "unknown_job": Outcome.RETRY_SCHEDULED.value,
    "not_json": Outcome.DEAD_LETTERED.value,
    "not_an_envelope": Outcome.DEAD_LETTERED.value,
}


@pytest.mark.parametrize("scenario", sorted(set(SCENARIOS) - {"not_base64"}))
def test_same_message_same_outcome(scenario, client, raw_queue):
    text = SCENARIOS[scenario]()
    fn_outcome, fn_queue = run_functions_path(client, raw_queue, text)
    run_outcome, run_queue = run_runner_path(client, raw_queue, text)
    assert fn_outcome == run_outcome == EXPECTED[scenario]
    on_functions = snapshot(raw_queue, fn_queue, fn_outcome)
    on_runner = snapshot(raw_queue, run_queue, run_outcome)
    assert on_functions == on_runner
    if EXPECTED[scenario] == Outcome.DEAD_LETTERED.value:
        assert len(on_functions.poison) == 1 and on_functions.queue == [0, []]
    elif EXPECTED[scenario] == Outcome.RETRY_SCHEDULED.value:
        assert on_functions.queue[0] == 1 and not on_functions.poison
    else:
        assert on_functions == Settled(Outcome.SUCCEEDED.value, [0, []], [])


def test_a_retry_copy_is_the_same_message_one_attempt_on(client, raw_queue):
    text = SCENARIOS["fails_and_retries"]()
    _, fn_queue = run_functions_path(client, raw_queue, text)
    (copy,) = snapshot(raw_queue, fn_queue, "").queue[1]
    sent = Envelope.decode(text).to_dict()
    assert copy == {**sent, "attempt": 2, "first_failed_at": "<time>"}


@pytest.mark.parametrize("scenario", ["not_json", "not_an_envelope"])
def test_a_malformed_body_is_kept_identically_in_both_poison_records(scenario, client, raw_queue):
    # The host hands the function the decoded body; the runner has the wire text. Both
    # records must keep the same bytes in the same form, so a replay sends the same message.
    text = SCENARIOS[scenario]()
    _, fn_queue = run_functions_path(client, raw_queue, text)
    _, run_queue = run_runner_path(client, raw_queue, text)

    def record(queue: str) -> PoisonRecord:
        (message,) = raw_queue(f"{queue}-poison").peek_messages(max_messages=1)
        return PoisonRecord.decode(message.content, "base64", queue)

    on_functions, on_runner = record(fn_queue), record(run_queue)
    assert (on_functions.raw_body, on_functions.raw_form) == (on_runner.raw_body, on_runner.raw_form)
    assert on_functions.raw_bytes() == base64.b64decode(text)
    assert on_functions.replay_text("base64") == on_runner.replay_text("base64") == text


def test_a_body_that_is_not_base64_is_dead_lettered_on_both_paths(client, raw_queue):
    # On Functions the host poisons it raw before any code runs (no error information);
    # the runner's core writes a record. Both keep the body and drop the message.
    text = SCENARIOS["not_base64"]()
    fn_outcome, fn_queue = run_functions_path(client, raw_queue, text)
    run_outcome, run_queue = run_runner_path(client, raw_queue, text)
    assert fn_outcome == "host_poisoned" and run_outcome == Outcome.DEAD_LETTERED.value
    on_functions = snapshot(raw_queue, fn_queue, fn_outcome)
    on_runner = snapshot(raw_queue, run_queue, run_outcome)
    assert on_functions.queue == on_runner.queue == [0, []]
    (fn_record,), (run_record,) = on_functions.poison, on_runner.poison
    assert fn_record["from_host"] and not run_record["from_host"]
    for record in (fn_record, run_record):
        assert (record["raw_body"], record["raw_form"], record["reason"]) == (text, "wire", "not_base64")


def test_when_nothing_can_be_written_both_paths_release_the_message(client, raw_queue):
    # A queue named "...-poison" has no poison twin: a dead letter cannot be written, so
    # both paths must leave the message for redelivery instead of losing it.
    text = SCENARIOS["fails_for_good"]()
    fn_outcome, fn_queue = run_functions_path(client, raw_queue, text, suffix="-poison")
    run_outcome, run_queue = run_runner_path(client, raw_queue, text, suffix="-poison")
    assert fn_outcome == run_outcome == "released"
    for queue in (fn_queue, run_queue):
        again = receive_one(raw_queue(queue))
        assert again is not None and again.dequeue_count == 2 and again.content == text


STATE_EXPECTED = {"succeeds": "SUCCESSFUL", "fails_and_retries": "RETRYING", "fails_for_good": "FAILED",
                  "bad_arguments": "DEAD_LETTERED"}


@pytest.mark.parametrize("scenario", sorted(STATE_EXPECTED))
def test_job_state_is_recorded_the_same_on_both_paths(scenario, connection_string, raw_queue):
    """Job state (azjobs.state): the same tracked message leaves the same record on both paths."""
    import uuid

    table = f"par{uuid.uuid4().hex[:16]}"
    state_client = azjobs.Client(connection_string, state_table=table)
    store = store_for(state_client)
    records = {}
    try:
        for path, run in (("functions", run_functions_path), ("runner", run_runner_path)):
            envelope = Envelope.decode(SCENARIOS[scenario]())  # a new job id for each path
            etag = store.enqueued(envelope.evolve(options={"track": True}))
            text = envelope.evolve(options={"track": True, "state_etag": etag}).encode("base64")
            run(state_client, raw_queue, text)
            record = store.get(envelope.id)
            records[path] = {
                "status": record.status.value, "attempts": record.attempts, "workers": len(record.worker_ids),
                "return_value": record.return_value, "finished": record.finished_at is not None,
                "errors": [(e.exception_class_path, e.message) for e in record.errors],
                "job": record.job, "args": record.args,
            }
    finally:
        state_client.connection.table_service().delete_table(table)
        state_client.close()
    assert records["functions"] == records["runner"]
    assert records["runner"]["status"] == STATE_EXPECTED[scenario]
    if scenario == "succeeds":
        assert records["runner"]["return_value"] == 42 and records["runner"]["attempts"] == 1
