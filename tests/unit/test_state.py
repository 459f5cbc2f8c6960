"""Job state logic (azjobs.state) on the in-memory store: transitions, decisions, outages, reading.

Storage behaviour (ETags, queries, blobs) is proven against Azurite in
tests/integration/test_job_state.py; these check the decisions the core takes on what the
store says.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from datetime import datetime, timedelta, timezone

import pytest

import azjobs
from azjobs.state.tracker import StateTracker
from azjobs.hosting import executor as hosted_executor
from azjobs.model.outcome import MessageInfo, Outcome
from azjobs.errors import AzjobsError, ConfigurationError
from azjobs.model.envelope import Envelope
from azjobs.model.registry import Registry
from azjobs.model import tracking as tracker
from azjobs.state import tracker as state_tracker
from azjobs.state.record import JobError, JobRecord, JobStatus
from azjobs.state.entities import RUNNING_LEASE, partition_of
from azjobs.state.store import StateStore
from azjobs.state.testing import MemoryTable, memory_store
from azjobs.testing import RecordingClient

reg = Registry()
calls: list[tuple] = []


@azjobs.job(queue="st-q", registry=reg, name="st.add")
def add(a, b):
    calls.append(("add", a, b))
    return {"sum": a + b}


@azjobs.job(queue="st-q", registry=reg, name="st.flaky", max_retries=2)
def flaky(key):
    calls.append(("flaky", key))
    raise ValueError(f"boom {key}")


@azjobs.job(queue="st-q", registry=reg, name="st.gives_up")
def gives_up():
    calls.append(("gives_up",))
    raise azjobs.Fail("no point retrying")


@azjobs.job(queue="st-q", registry=reg, name="st.tracked", track=True)
def tracked_job():
    calls.append(("tracked",))
    return "ok"


@azjobs.job(queue="st-q", registry=reg, name="st.big")
def big():
    return "x" * 40_000


@azjobs.job(queue="st-q", registry=reg, name="st.opaque")
def opaque():
    return object()


class ResizeImage(azjobs.Job):
    queue = "st-q"
    registry = reg
    name = "st.resize"
    track = True
    unique = True

    def perform(self, image_id):
        calls.append(("resize", image_id))


@pytest.fixture(autouse=True)
def clean():
    calls.clear()
    yield
    tracker._process_state = None


def setup(state: bool | None = True):
    client = RecordingClient("base64")
    client.state = state
    client.state_store = memory_store()
    return client, hosted_executor(registry=reg, client=client, settings=client.settings, host="h")


def enqueue(client, job, *args, **options):
    return job.options(client=client, **options).enqueue(*args)


def delivery(client, index=-1, *, message_id="m-1", dequeue_count=1):
    envelope, _, _ = client.sent[index]
    return envelope.encode(), MessageInfo(queue="st-q", message_id=message_id, dequeue_count=dequeue_count)


def rerun_copy(client, write_index=-1, *, message_id, dequeue_count=1):
    """A message the core wrote back to the queue (a retry copy or deferral), as the next delivery."""
    write = client.writes[write_index]
    return write.text, MessageInfo(queue=write.queue, message_id=message_id, dequeue_count=dequeue_count)


# -- the record ------------------------------------------------------------------------------
def test_status_is_a_str_enum_whose_values_are_the_names():
    assert [s.value for s in JobStatus] == ["READY", "RUNNING", "RETRYING", "SUCCESSFUL", "FAILED", "DEAD_LETTERED",
                                         "CANCELLED"]
    assert JobStatus.SUCCESSFUL == "SUCCESSFUL" and isinstance(JobStatus.FAILED, str)
    assert json.dumps({"s": JobStatus.RUNNING}) == '{"s": "RUNNING"}'


@pytest.mark.parametrize("status,finished", [(JobStatus.READY, False), (JobStatus.RUNNING, False),
                                             (JobStatus.RETRYING, False), (JobStatus.SUCCESSFUL, True),
                                             (JobStatus.FAILED, True), (JobStatus.DEAD_LETTERED, True)])
def test_finished_means_the_job_will_not_run_again(status, finished):
    assert JobRecord(id="1", job="j", queue="q", status=status).finished is finished


def test_record_and_error_are_frozen():
    record = JobRecord(id="1", job="j", queue="q", status=JobStatus.READY)
    with pytest.raises(AttributeError):
        record.status = JobStatus.RUNNING  # type: ignore[misc]
    with pytest.raises(AttributeError):
        JobError("a", "b", "c").message = "x"  # type: ignore[misc]


def test_not_found_is_an_azjobs_lookup_error_naming_the_id():
    error = azjobs.JobNotFoundError("abc-123", "azjobsstate")
    assert isinstance(error, AzjobsError) and isinstance(error, LookupError)
    assert "'abc-123'" in str(error) and "state=True" in str(error)


# -- off by default --------------------------------------------------------------------------
def test_state_is_off_by_default_no_table_call(monkeypatch):
    monkeypatch.delenv(tracker.ENV_FLAG, raising=False)
    client, executor = setup(state=None)
    enqueue(client, add, 1, 2)
    body, info = delivery(client)
    assert executor.execute(body, info).outcome is Outcome.SUCCEEDED
    assert client.state_store.table.calls == {}
    assert "track" not in client.sent[0][0].options


def test_process_flag_and_env_setting_turn_it_on(monkeypatch):
    client, _ = setup(state=None)
    monkeypatch.setenv(tracker.ENV_FLAG, "1")
    assert tracker.enabled()
    enqueue(client, add, 1, 2)
    assert client.sent[-1][0].options["track"] is True
    monkeypatch.delenv(tracker.ENV_FLAG)
    tracker.enable(False)
    enqueue(client, add, 1, 2)
    assert "track" not in client.sent[-1][0].options
    tracker.enable(True)
    enqueue(client, add, 1, 2)
    assert client.sent[-1][0].options["track"] is True


def test_configure_state_true_turns_it_on_for_the_process(connection_string_for_config):
    client = azjobs.configure(connection_string_for_config, state=True)
    try:
        assert client.state is True and tracker.enabled()
    finally:
        client.close()


@pytest.fixture
def connection_string_for_config():
    from azjobs.storage.connection import azurite_connection_string

    return azurite_connection_string()


def test_track_option_on_a_job_or_a_call():
    client, executor = setup(state=False)
    job_id = enqueue(client, tracked_job)
    assert executor.execute(*delivery(client)).outcome is Outcome.SUCCEEDED
    assert client.state_store.get(job_id).status is JobStatus.SUCCESSFUL
    job_id = enqueue(client, add, 1, 1, track=True)
    executor.execute(*delivery(client, message_id="m-2"))
    assert client.state_store.get(job_id).return_value == {"sum": 2}
    job_id = enqueue(client, add, 1, 1)
    assert client.state_store.get(job_id) is None


@pytest.mark.parametrize("options,message", [({"track": "yes"}, "track= takes True or False"),
                                             ({"unique": 1}, "unique= takes True or False"),
                                             ({"unique_key": ""}, "unique_key= takes a non-empty string"),
                                             ({"unique_ttl": -5}, "unique_ttl= takes a positive"),
                                             ({"unique_key": "k", "unique": False}, "not both")])
def test_bad_state_call_options_fail_when_given(options, message):
    with pytest.raises(ConfigurationError, match=message):
        add.options(**options)


def test_bad_track_job_option_fails_at_declaration():
    with pytest.raises(ConfigurationError, match="track= takes True, False or None"):
        azjobs.job(queue="st-q", registry=Registry(), track="on")(add.fn)


# -- the life of a tracked job -------------------------------------------------------------------
def test_success_moves_ready_running_successful_with_value_times_and_worker():
    client, executor = setup()
    job_id = enqueue(client, add, 2, 3)
    ready = client.state_store.get(job_id)
    assert ready.status is JobStatus.READY and (ready.args, ready.kwargs) == ([2, 3], {})
    assert ready.enqueued_at is not None and ready.enqueued_at.tzinfo is not None and ready.started_at is None
    assert client.sent[0][0].options["state_etag"]
    seen = {}
    original = client.state_store.succeeded

    def spy(envelope, value):
        seen["during"] = client.state_store.get(envelope.id).status
        return original(envelope, value)

    client.state_store.succeeded = spy
    assert executor.execute(*delivery(client)).outcome is Outcome.SUCCEEDED
    record = azjobs.result(job_id, client=client)
    assert seen["during"] is JobStatus.RUNNING
    assert record.status is JobStatus.SUCCESSFUL and record.finished and record.return_value == {"sum": 5}
    assert record.attempts == 1 and record.worker_ids == [f"{socket.gethostname()}:{os.getpid()}"]
    assert record.enqueued_at <= record.started_at <= record.finished_at
    assert record.last_attempted_at is not None and record.errors == []


def test_first_start_is_one_write_with_the_etag_from_enqueue():
    client, executor = setup()
    enqueue(client, add, 1, 2)
    table = client.state_store.table
    assert table.calls == {"create_entity": 1}
    executor.execute(*delivery(client))
    # enqueue: READY; start: one conditional update (no read); finish: one upsert
    assert table.calls == {"create_entity": 1, "update_entity": 1, "upsert_entity": 1}


def test_functions_invocation_id_is_the_worker_id():
    client, executor = setup()
    job_id = enqueue(client, add, 1, 2)
    body, info = delivery(client)
    from dataclasses import replace

    executor.execute(body, replace(info, worker_id="0f9c1d7e-invocation"))
    assert client.state_store.get(job_id).worker_ids == ["0f9c1d7e-invocation"]


def test_retries_are_retrying_then_failed_with_every_error():
    client, executor = setup()
    job_id = enqueue(client, flaky, "k")
    result = executor.execute(*delivery(client))
    assert result.outcome is Outcome.RETRY_SCHEDULED
    record = client.state_store.get(job_id)
    assert record.status is JobStatus.RETRYING and not record.finished and record.attempts == 1
    assert [e.exception_class_path for e in record.errors] == ["builtins.ValueError"]
    assert record.errors[0].message == "boom k" and "ValueError: boom k" in record.errors[0].traceback
    for n in (2, 3):
        outcome = executor.execute(*rerun_copy(client, message_id=f"m-{n}")).outcome
    assert outcome is Outcome.DEAD_LETTERED
    record = client.state_store.get(job_id)
    assert record.status is JobStatus.FAILED and record.finished and record.attempts == 3
    assert len(record.errors) == 3 and record.finished_at is not None
    assert len(record.worker_ids) == 3
    with pytest.raises(azjobs.JobFailedError, match=r"FAILED after 3 attempt\(s\): builtins.ValueError: boom k") as exc:
        azjobs.wait(job_id, timeout=1, client=client)
    assert exc.value.record.status is JobStatus.FAILED and isinstance(exc.value, AzjobsError)


def test_fail_is_failed_at_once():
    client, executor = setup()
    job_id = enqueue(client, gives_up)
    assert executor.execute(*delivery(client)).outcome is Outcome.DEAD_LETTERED
    record = client.state_store.get(job_id)
    assert record.status is JobStatus.FAILED
    assert record.errors[-1].exception_class_path == "azjobs.errors.Fail"


def test_dead_lettered_without_the_job_failing_is_dead_lettered():
    client, executor = setup()
    job_id = enqueue(client, add, 1, 2)
    body, _ = delivery(client)
    info = MessageInfo(queue="st-q", message_id="m-1", dequeue_count=client.settings.max_dequeue_count + 1)
    assert executor.execute(body, info).outcome is Outcome.DEAD_LETTERED
    record = client.state_store.get(job_id)
    assert record.status is JobStatus.DEAD_LETTERED and calls == []
    assert record.errors[-1].exception_class_path == "azjobs.MaxDequeueCountExceeded"


def test_error_text_is_redacted():
    from azjobs.model.secrets import remember

    remember(["s3cr3t-key-value"])
    client, executor = setup()

    job_id = enqueue(client, flaky, "s3cr3t-key-value")
    executor.execute(*delivery(client))
    error = client.state_store.get(job_id).errors[0]
    assert "s3cr3t-key-value" not in error.message + error.traceback


# -- duplicates ----------------------------------------------------------------------------------
def test_a_redelivered_message_of_a_successful_job_is_skipped_not_run(caplog):
    client, executor = setup()
    job_id = enqueue(client, add, 1, 2)
    body, info = delivery(client)
    executor.execute(body, info)
    again = MessageInfo(queue="st-q", message_id="m-1", dequeue_count=2)  # its delete failed
    with caplog.at_level(logging.WARNING, logger="azjobs"):
        result = executor.execute(body, again)
    assert result.outcome is Outcome.SKIPPED and not result.ran
    assert calls == [("add", 1, 2)]
    assert [r for r in caplog.records if getattr(r, "action", None) == "duplicate_skipped"]
    assert client.state_store.get(job_id).attempts == 1


def test_a_second_message_with_the_same_job_id_is_skipped_after_success():
    client, executor = setup()
    enqueue(client, add, 1, 2)
    body, info = delivery(client)
    executor.execute(body, info)
    assert executor.execute(body, MessageInfo(queue="st-q", message_id="m-other")).outcome is Outcome.SKIPPED
    assert len(calls) == 1


def test_a_successful_redelivery_past_max_dequeue_is_skipped_not_poisoned():
    client, executor = setup()
    enqueue(client, add, 1, 2)
    body, info = delivery(client)
    executor.execute(body, info)
    late = MessageInfo(queue="st-q", message_id="m-1", dequeue_count=client.settings.max_dequeue_count + 1)
    assert executor.execute(body, late).outcome is Outcome.SKIPPED
    assert client.to("st-q-poison") == []


def test_a_redelivery_superseded_by_its_retry_is_skipped():
    client, executor = setup()
    enqueue(client, flaky, "k")
    body, info = delivery(client)
    executor.execute(body, info)  # attempt 1 fails, retry copy (attempt 2) written
    result = executor.execute(body, MessageInfo(queue="st-q", message_id="m-1", dequeue_count=2))
    assert result.outcome is Outcome.SKIPPED and "superseded" in result.detail
    assert calls == [("flaky", "k")]


def test_a_job_running_under_another_live_lease_is_deferred_not_started():
    client, executor = setup()
    job_id = enqueue(client, add, 1, 2)
    body, info = delivery(client)
    envelope = client.sent[0][0]
    start = client.state_store.start(envelope, message_id="m-1", dequeue_count=1, worker_id="other:1",
                                     etag=envelope.options["state_etag"])
    assert start.action == "run"
    result = executor.execute(body, MessageInfo(queue="st-q", message_id="m-duplicate"))
    assert result.outcome is Outcome.DEFERRED and calls == []
    assert 0 < result.retry_in_s <= RUNNING_LEASE.total_seconds() + 1
    (copy,) = client.to("st-q")
    assert copy.envelope().id == job_id and copy.visibility_timeout == result.retry_in_s


def test_a_redelivery_after_its_worker_stopped_runs_again():
    client, executor = setup()
    job_id = enqueue(client, add, 1, 2)
    body, info = delivery(client)
    envelope = client.sent[0][0]
    client.state_store.start(envelope, message_id="m-1", dequeue_count=1, worker_id="crashed:1",
                             etag=envelope.options["state_etag"])
    # The same message again with a higher dequeue count: the crashed worker's lease ran out.
    result = executor.execute(body, MessageInfo(queue="st-q", message_id="m-1", dequeue_count=2))
    assert result.outcome is Outcome.SUCCEEDED
    record = client.state_store.get(job_id)
    assert record.attempts == 2 and record.worker_ids[0] == "crashed:1"


def test_a_replayed_failed_job_runs_again():
    client, executor = setup()
    job_id = enqueue(client, gives_up)
    body, info = delivery(client)
    executor.execute(body, info)
    assert executor.execute(body, MessageInfo(queue="st-q", message_id="m-1", dequeue_count=2)).outcome \
        is Outcome.SKIPPED  # the same message: its delete failed
    replay = Envelope.decode(body).evolve(attempt=1)
    assert executor.execute(replay.encode(), MessageInfo(queue="st-q", message_id="m-replayed")).outcome \
        is Outcome.DEAD_LETTERED
    assert calls == [("gives_up",), ("gives_up",)]
    assert len(client.state_store.get(job_id).errors) == 2


# -- outages -------------------------------------------------------------------------------------
def test_a_table_outage_runs_the_job_and_the_record_catches_up(caplog):
    client, executor = setup()
    first = enqueue(client, add, 1, 2)
    table = client.state_store.table
    table.down = True
    with caplog.at_level(logging.WARNING, logger="azjobs.state"):
        result = executor.execute(*delivery(client))
    assert result.outcome is Outcome.SUCCEEDED and calls == [("add", 1, 2)]
    assert [r for r in caplog.records if getattr(r, "action", None) == "state_unavailable"]
    assert executor.hook(StateTracker).pending == 1
    table.down = False
    client.state_store._outage_until = 0  # the pause after a failed connect is over
    assert client.state_store.get(first).status is JobStatus.READY  # lagging
    enqueue(client, add, 3, 4)
    executor.execute(*delivery(client, message_id="m-2"))
    assert client.state_store.get(first).status is JobStatus.SUCCESSFUL
    assert client.state_store.get(first).return_value == {"sum": 3}
    assert executor.hook(StateTracker).pending == 0


def test_an_enqueue_during_an_outage_sends_the_message_and_the_worker_creates_the_record():
    client, executor = setup()
    table = client.state_store.table
    table.down = True
    job_id = enqueue(client, add, 1, 2)
    assert "state_etag" not in client.sent[0][0].options and client.sent[0][0].options["track"] is True
    table.down = False
    client.state_store._outage_until = 0
    executor.execute(*delivery(client))
    record = client.state_store.get(job_id)
    assert record.status is JobStatus.SUCCESSFUL and record.job == "st.add" and record.queue == "st-q"


def test_after_a_connect_failure_calls_pause_instead_of_waiting_for_each_timeout():
    store = memory_store()
    store.table.down = True
    with pytest.raises(azjobs.state.StateUnavailable):
        store.get("x")
    store.table.down = False
    with pytest.raises(azjobs.state.StateUnavailable, match="a moment ago"):
        store.get("x")
    assert store.table.calls == {"get_entity": 1}


def test_a_failed_send_removes_the_ready_record():
    client, _ = setup()
    client.fail_with.append(RuntimeError("queue down"))
    with pytest.raises(RuntimeError):
        enqueue(client, add, 1, 2)
    assert client.state_store.table.entities == {}


# -- return values -------------------------------------------------------------------------------
def test_a_return_value_over_a_property_goes_to_blob_storage():
    client, executor = setup()
    job_id = enqueue(client, big)
    executor.execute(*delivery(client))
    entity = client.state_store.table.entities[(partition_of(job_id), job_id)][0]
    assert entity["ReturnValueRef"].endswith(f"results/{job_id}.json") and entity["ReturnValue"] == ""
    assert client.state_store.get(job_id).return_value == "x" * 40_000
    assert client.state_store.prune(timedelta(0)) == 1
    assert client.state_store.payloads.blobs == {}


def test_a_return_value_json_cannot_carry_is_dropped_and_the_job_still_succeeds(caplog):
    client, executor = setup()
    job_id = enqueue(client, opaque)
    with caplog.at_level(logging.WARNING, logger="azjobs.state"):
        assert executor.execute(*delivery(client)).outcome is Outcome.SUCCEEDED
    record = client.state_store.get(job_id)
    assert record.status is JobStatus.SUCCESSFUL and record.return_value is None
    [line] = [r for r in caplog.records if getattr(r, "action", None) == "state_return_value_dropped"]
    # Named as every other job line: the job's name, then its id.
    assert line.getMessage().startswith(f"job st.opaque {job_id} returned a value JSON cannot carry (")
    assert (line.job, line.job_id) == ("st.opaque", job_id)


# -- reading -------------------------------------------------------------------------------------
def test_result_of_an_unknown_id_raises_job_not_found():
    client, _ = setup()
    with pytest.raises(azjobs.JobNotFoundError, match="no record of job 'nope'"):
        azjobs.result("nope", client=client)
    with pytest.raises(ValueError):
        azjobs.result("", client=client)


def test_wait_returns_the_value_once_successful():
    client, executor = setup()
    job_id = enqueue(client, add, 20, 22)
    timer = threading.Timer(0.2, lambda: executor.execute(*delivery(client)))
    timer.start()
    try:
        assert azjobs.wait(job_id, timeout=10, poll_s=0.05, client=client) == {"sum": 42}
    finally:
        timer.join()


def test_wait_times_out_with_timeout_error_naming_the_status():
    client, _ = setup()
    job_id = enqueue(client, add, 1, 2)
    with pytest.raises(TimeoutError, match="still READY after 0.1s"):
        azjobs.wait(job_id, timeout=0.1, poll_s=0.02, client=client)


def test_recent_is_last_changed_first_with_filters():
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]

    def tick():
        now[0] += timedelta(minutes=1)
        return now[0]

    store = memory_store(clock=lambda: now[0])
    envelopes = [Envelope.build("st.add", (n, n), queue="st-q") for n in range(3)]
    store.enqueued(envelopes[0])  # 00:00
    tick()
    store.enqueued(envelopes[1])  # 00:01
    tick()
    store.enqueued(envelopes[2])  # 00:02
    tick()
    store.succeeded(envelopes[0], 0)  # 00:03
    tick()
    store.succeeded(envelopes[2], 2)  # 00:04
    ids = [e.id for e in envelopes]
    assert [r.id for r in store.recent()] == [ids[2], ids[0], ids[1]]
    assert [r.id for r in store.recent(status=JobStatus.SUCCESSFUL)] == [ids[2], ids[0]]
    assert [r.id for r in store.recent(status=JobStatus.READY)] == [ids[1]]
    assert [r.id for r in store.recent(limit=1)] == [ids[2]]
    assert [r.id for r in store.recent(since=datetime(2026, 1, 1, 0, 3, tzinfo=timezone.utc))] == [ids[2], ids[0]]


def test_prune_deletes_what_is_past_its_retention():
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    store = memory_store(retention=timedelta(days=7), clock=lambda: now[0])
    old = Envelope.build("st.add", (1, 1), queue="st-q")
    store.enqueued(old)
    store.succeeded(old, 2)
    now[0] += timedelta(days=6)
    young = Envelope.build("st.add", (2, 2), queue="st-q")
    store.enqueued(young)
    assert store.prune() == 0
    now[0] += timedelta(days=2)
    assert store.prune() == 1
    assert store.get(old.id) is None and store.get(young.id) is not None
    assert store.prune(timedelta(days=1)) == 0 and store.get(young.id) is not None  # READY: unfinished
    assert store.prune(timedelta(days=1), include_unfinished=True) == 1 and store.get(young.id) is None


def test_retention_must_be_positive():
    with pytest.raises(ValueError, match="retention"):
        StateStore(MemoryTable(), retention=timedelta(0))


# -- unique jobs ---------------------------------------------------------------------------------
def test_unique_key_returns_the_unfinished_jobs_id_instead_of_sending():
    client, executor = setup(state=False)
    first = enqueue(client, add, 1, 2, unique_key="order-42")
    second = enqueue(client, add, 5, 6, unique_key="order-42")
    assert second == first and len(client.sent) == 1
    other = enqueue(client, add, 1, 2, unique_key="order-43")
    assert other != first and len(client.sent) == 2
    executor.execute(*delivery(client, 0))
    third = enqueue(client, add, 1, 2, unique_key="order-42")  # the first finished: the key is free
    assert third != first and len(client.sent) == 3


def test_unique_true_means_same_name_and_arguments():
    client, _ = setup(state=False)
    first = ResizeImage.options(client=client).enqueue(7)
    assert ResizeImage.options(client=client).enqueue(7) == first
    assert ResizeImage.options(client=client).enqueue(8) != first
    assert add.options(client=client, unique=True).enqueue(1, 2) != first
    assert len(client.sent) == 3


def test_a_unique_key_expires_after_its_ttl():
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    store = memory_store(clock=lambda: now[0])
    assert store.claim_unique("k", "job-1", timedelta(minutes=5)) is None
    assert store.claim_unique("k", "job-2", timedelta(minutes=5)) == "job-1"
    now[0] += timedelta(minutes=6)
    assert store.claim_unique("k", "job-2", timedelta(minutes=5)) is None
    assert store.claim_unique("k", "job-3", timedelta(minutes=5)) == "job-2"


def test_a_unique_job_whose_send_failed_frees_its_key():
    client, _ = setup()
    client.fail_with.append(RuntimeError("queue down"))
    with pytest.raises(RuntimeError):
        enqueue(client, add, 1, 2, unique_key="k")
    job_id = enqueue(client, add, 1, 2, unique_key="k")
    assert len(client.sent) == 1 and client.sent[0][0].id == job_id


def test_a_delivery_whose_own_running_write_was_applied_but_unanswered_runs():
    # The RUNNING write reached the table but its answer was lost (a timeout after the write):
    # the same delivery, trying again, finds its own message id and dequeue count there.
    client, executor = setup()
    job_id = enqueue(client, add, 1, 2)
    body, info = delivery(client, message_id="m-1", dequeue_count=1)
    envelope = client.sent[0][0]
    first = client.state_store.start(envelope, message_id="m-1", dequeue_count=1, worker_id=state_tracker.worker_id(),
                                     etag=envelope.options["state_etag"])
    assert first.action == "run"
    result = executor.execute(body, info)  # the READY ETag no longer matches: the slow path decides
    assert result.outcome is Outcome.SUCCEEDED and calls == [("add", 1, 2)]
    assert client.state_store.get(job_id).status is JobStatus.SUCCESSFUL
    record = client.state_store.get(job_id)
    assert record.attempts == 1 and record.worker_ids == [state_tracker.worker_id()]  # one start, written once


# -- issue #22: unique keys on bound arguments (10) --------------------------------------------
@azjobs.job(queue="st-q", registry=reg, name="st.sync", unique=True)
def sync(a, b=0):
    calls.append(("sync", a, b))


@azjobs.job(queue="st-q", registry=reg, name="st.spread", unique=True)
def spread(first, *rest, flag=False, **extra):
    calls.append(("spread", first, rest, flag, extra))


class Reindex(azjobs.Job):
    queue = "st-q"
    registry = reg
    name = "st.reindex"
    unique = True

    def perform(self, index, full=False):
        calls.append(("reindex", index, full))


def test_unique_true_keys_on_the_arguments_bound_to_the_signature_with_defaults():
    client, _ = setup(state=False)
    first = sync.options(client=client).enqueue(1, 2)
    assert sync.options(client=client).enqueue(a=1, b=2) == first
    assert sync.options(client=client).enqueue(1, b=2) == first
    five = sync.options(client=client).enqueue(5)
    assert sync.options(client=client).enqueue(5, 0) == five and sync.options(client=client).enqueue(a=5, b=0) == five
    assert five != first and sync.options(client=client).enqueue(5, 1) not in (first, five)
    assert len(client.sent) == 3


def test_unique_true_binds_star_args_and_keywords_and_class_jobs_too():
    client, _ = setup(state=False)
    first = spread.options(client=client).enqueue(1, 2, 3)
    assert spread.options(client=client).enqueue(1, 2, 3, flag=False) == first
    assert spread.options(client=client).enqueue(1, 3, 2) != first  # *rest keeps its order
    keyword = spread.options(client=client).enqueue(1, x=1, y=2)
    assert spread.options(client=client).enqueue(1, y=2, x=1) == keyword
    assert keyword != first
    index = Reindex.options(client=client).enqueue("orders")
    assert Reindex.options(client=client).enqueue(index="orders", full=False) == index
    assert Reindex.options(client=client).enqueue("orders", True) != index
    assert len(client.sent) == 5


# -- issue #22: prune keeps unfinished records and held keys (11) --------------------------------
def test_prune_older_than_keeps_a_delayed_ready_job_and_its_unique_key():
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    client, executor = setup(state=False)
    client.state_store = memory_store(clock=lambda: now[0])
    store = client.state_store
    delayed = sync.options(client=client, delay=timedelta(days=3)).enqueue(9)
    done = enqueue(client, add, 1, 1, track=True)
    store.succeeded(client.sent[-1][0], 2)
    now[0] += timedelta(days=2)  # both older than one day; the delayed job is not due yet
    assert [(item.kind, item.row) for item in store.prunable(timedelta(days=1))] == [("record", done)]
    assert store.prune(timedelta(days=1)) == 1
    assert store.get(delayed).status is JobStatus.READY and store.get(done) is None
    assert sync.options(client=client).enqueue(9) == delayed and len(client.sent) == 2  # still held: not sent
    unfinished = store.prunable(timedelta(days=1), include_unfinished=True)
    assert [(item.kind, item.row) for item in unfinished] == [("record", delayed)]  # the key is not expired
    assert store.prune(timedelta(days=1), include_unfinished=True) == 1 and store.get(delayed) is None


def test_prune_deletes_an_expired_unique_key_only_once_its_job_finished():
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    store = memory_store(clock=lambda: now[0])
    envelope = Envelope.build("st.add", (1, 2), queue="st-q")
    store.enqueued(envelope)
    assert store.claim_unique("k", envelope.id, timedelta(hours=1)) is None
    now[0] += timedelta(hours=2)  # expired, but its job is READY
    assert [item.kind for item in store.prunable(timedelta(minutes=1))] == []
    assert [item.kind for item in store.prunable(timedelta(minutes=1), include_unfinished=True)] == \
        ["record", "unique"]
    store.succeeded(envelope, 3)
    now[0] += timedelta(hours=1)
    assert sorted(item.kind for item in store.prunable(timedelta(minutes=1))) == ["record", "unique"]
    assert store.prune(timedelta(minutes=1)) == 2 and store.table.entities == {}


# -- issue #22: track tri-state, requeue, unknown jobs (14) ----------------------------------------
@azjobs.job(queue="st-q", registry=reg, name="st.untracked", track=False)
def untracked(x):
    calls.append(("untracked", x))
    return x


def test_track_false_on_a_job_is_never_tracked_even_with_state_on_for_the_process():
    client, executor = setup(state=None)
    azjobs.state.enable(True)
    job_id = untracked.options(client=client).enqueue(1)
    assert client.state_store.table.calls == {}  # no READY record
    assert client.sent[-1][0].options.get("track") is False
    assert executor.execute(*delivery(client)).outcome is Outcome.SUCCEEDED
    assert client.state_store.get(job_id) is None and client.state_store.table.calls == {"get_entity": 1}
    tracked_id = untracked.options(client=client, track=True).enqueue(2)  # the call wins
    executor.execute(*delivery(client, message_id="m-2"))
    assert client.state_store.get(tracked_id).status is JobStatus.SUCCESSFUL


def test_track_false_on_a_call_is_not_tracked_by_a_worker_with_state_on():
    client, executor = setup(state=None)
    azjobs.state.enable(True)
    job_id = add.options(client=client, track=False).enqueue(1, 2)
    assert executor.execute(*delivery(client)).outcome is Outcome.SUCCEEDED
    assert calls == [("add", 1, 2)] and client.state_store.table.entities == {}
    assert client.state_store.get(job_id) is None


def plain():
    return None


def test_unique_with_track_false_is_refused():
    with pytest.raises(ConfigurationError, match="unique=True needs job state"):
        azjobs.job(queue="st-q", registry=Registry(), name="st.both", unique=True, track=False)(plain)
    with pytest.raises(ConfigurationError, match="a unique job is tracked"):
        add.options(unique_key="k", track=False)


def test_a_requeued_poison_record_clears_the_old_finish_time():
    client, executor = setup()
    job_id = enqueue(client, flaky, "x")
    body, info = delivery(client)
    for number in range(1, 4):  # three attempts: FAILED
        result = executor.execute(body, info)
        if result.outcome is Outcome.RETRY_SCHEDULED:
            body, info = rerun_copy(client, message_id=f"m-{number + 1}")
    failed = client.state_store.get(job_id)
    assert failed.status is JobStatus.FAILED and failed.finished_at is not None
    replay = Envelope.decode(body).evolve(attempt=1, first_failed_at=None)  # what `azjobs poison requeue` sends
    executor.execute(replay.encode(), MessageInfo(queue="st-q", message_id="m-replayed"))
    retrying = client.state_store.get(job_id)
    assert retrying.status is JobStatus.RETRYING and retrying.finished_at is None
    assert retrying.attempts == 4 and len(retrying.errors) == 4


def test_an_unknown_jobs_retries_update_its_record_with_attempts_and_the_error():
    client, executor = setup()
    envelope = Envelope.build("st.not-deployed-yet", (1,), queue="st-q", options={"track": True})
    client.state_store.enqueued(envelope)
    body, info = envelope.encode(), MessageInfo(queue="st-q", message_id="m-1")
    assert executor.execute(body, info).outcome is Outcome.RETRY_SCHEDULED
    record = client.state_store.get(envelope.id)
    assert record.status is JobStatus.RETRYING and record.attempts == 1
    assert record.errors[-1].exception_class_path == "azjobs.errors.UnknownJobError"
    assert "no job named 'st.not-deployed-yet'" in record.errors[-1].message
    for number in range(2, 20):
        result = executor.execute(*rerun_copy(client, message_id=f"m-{number}"))
        if result.outcome is not Outcome.RETRY_SCHEDULED:
            break
        assert client.state_store.get(envelope.id).attempts == number
    assert result.outcome is Outcome.DEAD_LETTERED
    record = client.state_store.get(envelope.id)
    assert record.status is JobStatus.DEAD_LETTERED and record.attempts == number and record.finished_at


# -- issue #22: ids no key can hold (9) -------------------------------------------------------------
@pytest.mark.parametrize("bad,why", [("a/b", "'/'"), ("a#b", "'#'"), ("a?b", "'?'"), ("a\\b", "'\\\\'"),
                                     ("a\x07b", "U\\+0007"), ("a\x85b", "U\\+0085"),
                                     ("😀" * 257, "514 UTF-16 units")])
def test_an_id_no_key_can_hold_is_not_found_without_a_table_call(bad, why):
    client, _ = setup()
    with pytest.raises(azjobs.JobNotFoundError, match=why):
        azjobs.result(bad, client=client)
    with pytest.raises(azjobs.JobNotFoundError, match="no job can have the id"):
        azjobs.wait(bad, timeout=1, client=client)
    assert client.state_store.get(bad) is None
    assert client.state_store.table.calls == {}


def test_a_message_whose_id_no_key_can_hold_runs_untracked_and_keeps_nothing_pending(caplog):
    client, executor = setup()
    envelope = Envelope.build("st.add", (1, 2), queue="st-q").evolve(id="from/elsewhere")
    with caplog.at_level(logging.WARNING, logger="azjobs.state"):
        result = executor.execute(envelope.encode(), MessageInfo(queue="st-q", message_id="m-1"))
    assert result.outcome is Outcome.SUCCEEDED and calls == [("add", 1, 2)]
    assert executor.hook(StateTracker).pending == 0 and client.state_store.table.calls == {}
    assert any(r.action == "state_rejected" for r in caplog.records)


# -- issue #22: Table limits in UTF-16 units; refusals and the catch-up queue (6) --------------------
@azjobs.job(queue="st-q", registry=reg, name="st.emoji")
def emoji():
    return "😀" * 20_000  # 20,000 characters, 40,000 UTF-16 units


def test_a_return_value_of_20000_emoji_goes_to_blob_storage_and_the_record_is_successful():
    client, executor = setup()
    job_id = enqueue(client, emoji)
    assert executor.execute(*delivery(client)).outcome is Outcome.SUCCEEDED
    record = client.state_store.get(job_id)
    assert record.status is JobStatus.SUCCESSFUL and record.return_value == "😀" * 20_000
    assert executor.hook(StateTracker).pending == 0


def test_arguments_of_20000_emoji_are_not_kept_on_the_ready_record_but_the_record_is_written():
    client, _ = setup()
    job_id = enqueue(client, add, "😀" * 20_000, "x")
    record = client.state_store.get(job_id)
    assert record.status is JobStatus.READY and record.args == []  # over a property in UTF-16: not kept


def test_errors_of_emoji_are_trimmed_in_utf16_units_so_the_table_takes_the_retrying_record():
    store = memory_store()
    envelope = Envelope.build("st.flaky", ("x",), queue="st-q")
    store.enqueued(envelope)
    error = JobError("builtins.ValueError", "😀" * 2_000, "😀" * 6_000)  # 16,000 UTF-16 units, 8,000 characters
    for attempt in range(2, 7):
        store.retrying(envelope, error, attempt)  # 400 PropertyValueTooLarge if counted in characters
    record = store.get(envelope.id)
    assert record.status is JobStatus.RETRYING and record.errors[-1] == error


class RefusingTable(MemoryTable):
    """A table whose writes of some rows fail: ``refuse[row] = status`` (403: not permanent; 400: permanent)."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: dict[str, int] = {}

    def _store(self, entity):
        status = self.refuse.get(entity["RowKey"])
        if status is not None:
            from azjobs.state.testing import _error

            code = "AuthorizationFailure" if status == 403 else "PropertyValueTooLarge"
            raise _error("HttpResponseError", status, f"refused ({code})", code)
        return super()._store(entity)


def test_a_kept_write_that_keeps_failing_does_not_block_the_ones_behind_it(caplog):
    client, executor = setup()
    client.state_store = memory_store(table=RefusingTable())
    table = client.state_store.table
    ids = [enqueue(client, add, n, n) for n in range(3)]
    table.down = True
    for index in range(3):
        executor.execute(*delivery(client, index, message_id=f"m-{index}"))
    assert executor.hook(StateTracker).pending == 3
    table.down = False
    client.state_store._outage_until = 0  # the pause after a failed connect is over
    table.refuse[ids[0]] = 403  # the oldest kept write fails on its own while the table answers
    with caplog.at_level(logging.INFO, logger="azjobs.state"):
        assert executor.hook(StateTracker).flush() == 2
        assert [client.state_store.get(i).status for i in ids[1:]] == [JobStatus.SUCCESSFUL] * 2
        assert executor.hook(StateTracker).pending == 1
        for _ in range(10):
            executor.hook(StateTracker).flush()
    assert executor.hook(StateTracker).pending == 0  # given up after MAX_TRIES, logged
    assert [r for r in caplog.records if getattr(r, "action", None) == "state_write_dropped"]


def test_an_outcome_the_table_refuses_for_good_writes_a_fallback_and_is_never_kept(caplog):
    client, executor = setup()
    client.state_store = memory_store(table=RefusingTable())
    job_id = enqueue(client, flaky, "x")
    client.state_store.table.refuse[job_id] = 400
    with caplog.at_level(logging.WARNING, logger="azjobs.state"):
        executor.execute(*delivery(client))  # RUNNING and RETRYING refused: the job runs, nothing is kept
    assert executor.hook(StateTracker).pending == 0
    assert [r for r in caplog.records if getattr(r, "action", None) == "state_rejected"]
    assert not [r for r in caplog.records if getattr(r, "action", None) == "state_unavailable"]
    enqueue(client, add, 1, 2)
    executor.execute(*delivery(client, message_id="m-2"))  # no kept write is tried before this start
    assert client.state_store.table.calls.get("get_entity", 0) >= 1 and executor.hook(StateTracker).pending == 0


# -- issue #22: RUNNING leases kept ahead of long runs (5) ---------------------------------------------
def test_a_running_lease_is_extended_only_when_half_gone_and_only_while_the_message_is_held(monkeypatch):
    from azjobs.state import running

    monkeypatch.setattr(running, "CHECK_S", 3600.0)  # the test visits by hand
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    store = memory_store(clock=lambda: now[0])
    envelope = Envelope.build("st.add", (1, 2), queue="st-q")
    etag = store.enqueued(envelope)
    start = store.start(envelope, message_id="m-1", dequeue_count=1, worker_id="w:1", etag=etag)
    holding = [True]
    jobs = running.RunningJobs(lambda: store)
    run = jobs.add(envelope, "m-1", 1, start.etag, start.lease_until, lambda: holding[0])
    key = id(run)
    writes = lambda: sum(store.table.calls.get(m, 0) for m in ("upsert_entity", "update_entity"))  # noqa: E731
    before = writes()
    now[0] += timedelta(minutes=4)
    jobs._visit(key, run)
    assert writes() == before and run.extensions == 0  # more than half the lease left: no call
    now[0] += timedelta(minutes=2)
    jobs._visit(key, run)
    assert writes() == before + 1 and run.extensions == 1
    entity = store.table.entities[(partition_of(envelope.id), envelope.id)][0]
    assert entity["LeaseUntil"] == now[0] + RUNNING_LEASE and entity["Status"] == "RUNNING"
    # A second message for the job, 11 minutes after the start: deferred, not run.
    assert store.start(envelope, message_id="m-2", dequeue_count=1, worker_id="w:2").action == "defer"
    holding[0] = False  # the run's message is gone (its lease closed or lost)
    now[0] += timedelta(minutes=9)
    jobs._visit(key, run)
    assert writes() == before + 1 and len(jobs) == 0


def test_a_running_lease_is_not_extended_once_another_delivery_owns_the_record(monkeypatch):
    from azjobs.state import running

    monkeypatch.setattr(running, "CHECK_S", 3600.0)
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    store = memory_store(clock=lambda: now[0])
    envelope = Envelope.build("st.add", (1, 2), queue="st-q")
    etag = store.enqueued(envelope)
    start = store.start(envelope, message_id="m-1", dequeue_count=1, worker_id="w:1", etag=etag)
    jobs = running.RunningJobs(lambda: store)
    run = jobs.add(envelope, "m-1", 1, start.etag, start.lease_until, lambda: True)
    now[0] += timedelta(minutes=11)  # its lease ran out (say the worker was frozen): another delivery took over
    assert store.start(envelope, message_id="m-2", dequeue_count=1, worker_id="w:2").action == "run"
    jobs._visit(id(run), run)
    assert len(jobs) == 0 and store.get(envelope.id).worker_ids == ["w:1", "w:2"]
    entity = store.table.entities[(partition_of(envelope.id), envelope.id)][0]
    assert entity["MessageId"] == "m-2" and entity["LeaseUntil"] == now[0] + RUNNING_LEASE
