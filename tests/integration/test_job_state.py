"""Job state in Table Storage, against Azurite: both paths, reading, unique jobs, a Table outage, the CLI.

Each test has its own table (``state_table``) and queue; nothing here depends on another test's records.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from datetime import timedelta

import pytest

import azjobs
from azjobs.state.store import store_for
from azjobs.state.tracker import StateTracker
from azjobs.storage.client import Client
from azjobs.hosting import executor as hosted_executor
from azjobs.model.outcome import Outcome
from azjobs.model.envelope import Envelope
from azjobs.model.settings import QueueSettings
from azjobs.model import tracking as tracker
from azjobs.state import tracker as state_tracker
from azjobs.state.errors import StateUnavailable
from azjobs.state.record import JobStatus
from azjobs.state.entities import partition_of
from devtools.proxy import FaultProxy
from tests.functions_support import (HostAction, InvocationContext, RecordingExecutor, fresh_app, host_like_settle,
                                     receive_one)
from tests.integration.worker_support import until

SETTINGS = QueueSettings(max_dequeue_count=5, visibility_timeout=timedelta(0))
release = threading.Event()
runs: dict[str, int] = {}
runs_lock = threading.Lock()


def _ran(key: str) -> None:
    with runs_lock:
        runs[key] = runs.get(key, 0) + 1


def blocking(key: str) -> dict:
    """Runs until the test lets it finish, so the test can see it RUNNING."""
    _ran(key)
    assert release.wait(30), "the test never released the job"
    return {"key": key, "done": True}


def quick(key: str, seconds: float = 0.0) -> str:
    _ran(key)
    if seconds:
        time.sleep(seconds)
    return key.upper()


def broken(key: str) -> None:
    _ran(key)
    raise KeyError(f"no such thing: {key}")


EMOJI = "😀" * 20_000  # 20,000 characters, 40,000 UTF-16 units: over a Table string property


def emoji(key: str) -> str:
    _ran(key)
    return EMOJI


def registry_for(queue: str) -> azjobs.Registry:
    reg = azjobs.Registry()
    azjobs.job(queue=queue, registry=reg, name="state.emoji")(emoji)
    azjobs.job(queue=queue, registry=reg, name="state.blocking")(blocking)
    azjobs.job(queue=queue, registry=reg, name="state.quick")(quick)
    azjobs.job(queue=queue, registry=reg, name="state.broken", max_retries=1, retry=azjobs.Fixed(0, max_retries=1))(
        broken)
    return reg


@pytest.fixture(autouse=True)
def reset():
    release.clear()
    runs.clear()
    yield
    release.set()
    tracker._process_state = None


@pytest.fixture
def state_table():
    return f"st{uuid.uuid4().hex[:16]}"


@pytest.fixture
def state_client(connection_string, state_table):
    """The process default client, with job state on and a table of this test's own."""
    client = azjobs.configure(connection_string, state=True, state_table=state_table)
    yield client
    try:
        client.connection.table_service().delete_table(state_table)
    except Exception:
        pass
    client.close()


def _until(condition, timeout_s: float = 20.0):
    return until(condition, timeout_s)


def _status(job_id: str) -> JobStatus:
    return azjobs.result(job_id).status


# -- both paths ------------------------------------------------------------------------------
def test_worker_path_moves_ready_running_successful(state_client, queue_name):
    from azjobs.runtime.worker import drain

    reg = registry_for(queue_name)
    job_id = reg.get("state.blocking").options(queue=queue_name).enqueue("w1")
    ready = azjobs.result(job_id)
    assert ready.status is JobStatus.READY and ready.args == ["w1"] and ready.queue == queue_name
    executor = hosted_executor(registry=reg, client=state_client, settings=SETTINGS)
    worker = threading.Thread(target=drain, args=(state_client, [queue_name]),
                              kwargs={"executor": executor, "fetch": 4, "lease_s": 30})
    worker.start()
    try:
        running = _until(lambda: (r := azjobs.result(job_id)).status is JobStatus.RUNNING and r)
        assert running.started_at is not None and running.finished_at is None and running.attempts == 1
    finally:
        release.set()
        worker.join(30)
    record = azjobs.result(job_id)
    assert record.status is JobStatus.SUCCESSFUL and record.return_value == {"key": "w1", "done": True}
    assert record.worker_ids == [state_tracker.worker_id()] and record.attempts == 1
    assert record.enqueued_at <= record.started_at <= record.finished_at
    assert azjobs.wait(job_id, timeout=5) == {"key": "w1", "done": True}


def test_functions_path_moves_ready_running_successful_with_the_invocation_id(state_client, queue_name, raw_queue):
    reg = registry_for(queue_name)
    job_id = reg.get("state.blocking").options(queue=queue_name).enqueue("f1")
    executor = RecordingExecutor(registry=reg, client=state_client, settings=SETTINGS)
    app = fresh_app([queue_name], registry=reg, executor=executor)
    queue = raw_queue(queue_name)
    message = receive_one(queue)
    outcome: list = []
    host = threading.Thread(target=lambda: outcome.append(
        host_like_settle(app, queue, message, SETTINGS, InvocationContext("inv-5f0c2a"))))
    host.start()
    try:
        _until(lambda: _status(job_id) is JobStatus.RUNNING)
    finally:
        release.set()
        host.join(30)
    assert outcome[0].action is HostAction.DELETED
    record = azjobs.result(job_id)
    assert record.status is JobStatus.SUCCESSFUL and record.return_value == {"key": "f1", "done": True}
    assert record.worker_ids == ["inv-5f0c2a"]


@pytest.mark.parametrize("path", ["runner", "functions"])
def test_a_failed_job_records_its_errors_and_wait_raises_them(path, state_client, queue_name, raw_queue):
    from tests.integration.drivers import DRIVERS

    reg = registry_for(queue_name)
    job_id = reg.get("state.broken").options(queue=queue_name).enqueue("nope")
    driver = DRIVERS[path](state_client, queue_name, reg)
    driver.run_until(lambda: any(r.outcome is Outcome.DEAD_LETTERED for r in driver.results))
    record = azjobs.result(job_id)
    assert record.status is JobStatus.FAILED and record.attempts == 2 and runs == {"nope": 2}
    assert [e.exception_class_path for e in record.errors] == ["builtins.KeyError", "builtins.KeyError"]
    assert "no such thing: nope" in record.errors[-1].message
    assert 'raise KeyError(f"no such thing: {key}")' in record.errors[-1].traceback
    with pytest.raises(azjobs.JobFailedError, match="builtins.KeyError") as raised:
        azjobs.wait(job_id, timeout=5)
    assert raised.value.record.status is JobStatus.FAILED


@pytest.mark.parametrize("path", ["runner", "functions"])
def test_a_redelivered_message_of_a_successful_job_is_deleted_without_running(path, state_client, queue_name,
                                                                               raw_queue):
    """The parity check: the same duplicate (a copy of a finished job's message) ends the same on both paths."""
    from tests.integration.drivers import DRIVERS

    reg = registry_for(queue_name)
    job_id = reg.get("state.quick").options(queue=queue_name).enqueue("dup")
    queue = raw_queue(queue_name)
    (sent,) = queue.peek_messages(max_messages=1)
    driver = DRIVERS[path](state_client, queue_name, reg)
    driver.run_until(lambda: runs.get("dup") == 1)
    queue.send_message(sent.content)  # what a failed delete leaves: the same message again
    driver.run_until(lambda: len(driver.results) == 2)
    assert [r.outcome for r in driver.results] == [Outcome.SUCCEEDED, Outcome.SKIPPED]
    assert runs == {"dup": 1} and queue.get_queue_properties().approximate_message_count == 0
    assert azjobs.result(job_id).attempts == 1 and azjobs.wait(job_id, timeout=1) == "DUP"


# -- unique jobs ---------------------------------------------------------------------------------
def test_unique_enqueue_from_8_threads_at_once_sends_one_message(state_client, queue_name, raw_queue):
    reg = registry_for(queue_name)
    call = reg.get("state.quick").options(queue=queue_name, unique_key="order-42")
    state_client.ensure_queue(queue_name)
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def one() -> None:
        barrier.wait()
        ids.append(call.enqueue("order-42"))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    queue = raw_queue(queue_name)
    messages = queue.peek_messages(max_messages=32)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert len(messages) == 1 and Envelope.decode(messages[0].content).id == ids[0]
    assert azjobs.result(ids[0]).status is JobStatus.READY


# -- a Table outage --------------------------------------------------------------------------------
def test_a_table_outage_mid_drain_loses_nothing_and_the_records_catch_up(azurite, connection_string, state_table,
                                                                        queue_name, raw_queue, monkeypatch, caplog):
    import logging
    import re

    from azjobs.state import store as store_module
    from azjobs.runtime.worker import drain

    monkeypatch.setattr(store_module, "OUTAGE_PAUSE_S", 0.5)
    proxy = FaultProxy(azurite.table_port).start()
    try:
        through_proxy = re.sub(r"(TableEndpoint=https?://)([^/;]+)", lambda m: f"{m.group(1)}127.0.0.1:{proxy.port}",
                               connection_string)
        client = Client(through_proxy, state=True, state_table=state_table)
        reg = registry_for(queue_name)
        keys = [f"k{i:02d}" for i in range(24)]

        def work(key: str, seconds: float = 0.0) -> str:
            if key == "k08":
                proxy.cut()  # the Table endpoint goes away while the drain is under way
            return quick(key, seconds)

        reg.register(azjobs.JobDefinition(name="state.cutting", queue=queue_name, call=work, signature_of=work,
                                          target_id="state.cutting"))
        call = reg.get("state.cutting").options(queue=queue_name, client=client)
        ids = dict(zip(keys, call.enqueue_many([azjobs.Call(k, 0.02) for k in keys]).raise_for_failures().ids))
        executor = hosted_executor(registry=reg, client=client, settings=SETTINGS)
        with caplog.at_level(logging.WARNING, logger="azjobs.state"):
            drain(client, [queue_name], executor=executor, fetch=4, lease_s=30)
        assert proxy.is_cut
        assert runs == {key: 1 for key in keys}  # every job ran, once
        assert raw_queue(queue_name).get_queue_properties().approximate_message_count == 0
        unavailable = [r for r in caplog.records if getattr(r, "action", None) == "state_unavailable"]
        assert unavailable, "the outage was not noticed: the test proved nothing"
        lagging = executor.hook(StateTracker).pending
        assert lagging > 0

        proxy.restore()
        time.sleep(0.6)  # past the pause after a failed connect
        call.enqueue("after", 0.0)
        drain(client, [queue_name], executor=executor, fetch=4, lease_s=30)
        assert executor.hook(StateTracker).pending == 0
        store = store_for(client)
        assert {key: store.get(job_id).status for key, job_id in ids.items()} == \
            {key: JobStatus.SUCCESSFUL for key in keys}
        assert {key: store.get(job_id).return_value for key, job_id in ids.items()} == {k: k.upper() for k in keys}
        client.close()
    finally:
        proxy.stop()
        try:
            azjobs.Client(connection_string).connection.table_service().delete_table(state_table)
        except Exception:
            pass


# -- the CLI ---------------------------------------------------------------------------------------
def test_status_and_prune_commands(state_client, state_table, queue_name):
    from azjobs import cli
    from tests.integration.drivers import RunnerDriver

    reg = registry_for(queue_name)
    job_id = reg.get("state.quick").options(queue=queue_name).enqueue("cli")
    RunnerDriver(state_client, queue_name, reg).run_until(lambda: runs.get("cli") == 1)

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(list(argv), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    code, out, err = run("status", job_id, "--json", "--table", state_table)
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert shown["status"] == "SUCCESSFUL" and shown["return_value"] == "CLI" and shown["id"] == job_id
    code, out, _ = run("status", job_id, "--table", state_table)
    assert code == 0 and "status        SUCCESSFUL" in out and 'return value  "CLI"' in out
    code, out, err = run("status", "no-such-job", "--table", state_table)
    assert code == 1 and out == "" and "no record of job 'no-such-job'" in err
    code, out, err = run("status", "a/b", "--table", state_table)
    assert code == 1 and out == "" and "no job can have the id 'a/b': it contains '/'" in err
    code, out, _ = run("state", "prune", "--table", state_table)
    assert (code, out) == (0, f"pruned 0 record(s) past their retention (finished ones only) and 0 expired unique "
                              f"key(s) from table {state_table}\n")
    code, out, _ = run("state", "prune", "--older-than", "1s", "--table", state_table)
    time.sleep(1.1)
    code, out, _ = run("state", "prune", "--older-than", "1s", "--table", state_table)
    assert code == 0 and out.startswith("pruned 1 record(s) not updated for 0:00:01 (finished ones only)")
    assert run("status", job_id, "--table", state_table)[0] == 1
    with pytest.raises(SystemExit) as usage:
        run("state", "prune", "--older-than", "soon")
    assert usage.value.code == 2


def test_recent_and_prune_on_table_storage(connection_string, state_table):
    """The store's queries as Table Storage answers them: a datetime and a status filter, expiry."""
    from datetime import datetime, timezone

    from azjobs.storage.connection import Connection
    from azjobs.state import StateStore

    store = StateStore.from_connection(Connection(connection_string=connection_string), state_table,
                                       retention=timedelta(seconds=1))
    try:
        first, second = (Envelope.build("state.quick", (key,), queue="q") for key in ("a", "b"))
        store.enqueued(first)
        time.sleep(0.05)
        between = datetime.now(timezone.utc)
        time.sleep(0.05)
        store.enqueued(second)
        store.succeeded(second, "B")
        assert [r.id for r in store.recent()] == [second.id, first.id]
        assert [r.id for r in store.recent(since=between)] == [second.id]
        assert [r.id for r in store.recent(status=JobStatus.READY)] == [first.id]
        assert store.prune() == 0
        time.sleep(1.2)
        assert store.prune() == 1 and [r.id for r in store.recent()] == [first.id]  # READY stays
        assert store.prune(include_unfinished=True) == 1 and store.recent() == []
    finally:
        store.table.delete_table()
        store.close()


# -- issue #22: prune keeps what still holds a job (11) ----------------------------------------------
def test_prune_older_than_keeps_a_delayed_ready_job_and_its_key_so_a_duplicate_is_refused(state_client, state_table,
                                                                                          queue_name, raw_queue):
    from azjobs import cli
    from tests.integration.drivers import RunnerDriver

    reg = registry_for(queue_name)
    delayed = reg.get("state.quick").options(queue=queue_name, unique=True, delay=3600).enqueue("later")
    done = reg.get("state.quick").options(queue=queue_name).enqueue("now")
    RunnerDriver(state_client, queue_name, reg).run_until(lambda: runs.get("now") == 1)
    time.sleep(1.1)

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["state", "prune", "--older-than", "1s", "--table", state_table, *argv], stdout=out,
                        stderr=err)
        return code, out.getvalue(), err.getvalue()

    code, out, err = run("--dry-run")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith(f"would delete record {done}  state.quick  SUCCESSFUL  updated 20")
    assert out.splitlines()[1] == (f"dry run: would prune 1 record(s) not updated for 0:00:01 (finished ones only) "
                                   f"and 0 expired unique key(s) from table {state_table}; nothing was deleted")
    assert azjobs.result(done).status is JobStatus.SUCCESSFUL  # the dry run deleted nothing
    code, out, _ = run()
    assert (code, out) == (0, f"pruned 1 record(s) not updated for 0:00:01 (finished ones only) and 0 expired unique "
                              f"key(s) from table {state_table}\n")
    with pytest.raises(azjobs.JobNotFoundError):
        azjobs.result(done)
    assert azjobs.result(delayed).status is JobStatus.READY
    again = reg.get("state.quick").options(queue=queue_name, unique=True, delay=3600).enqueue("later")
    assert again == delayed  # its key is still held: the duplicate is not sent
    assert raw_queue(queue_name).get_queue_properties().approximate_message_count == 1
    code, out, _ = run("--include-unfinished", "--dry-run")
    assert out.splitlines()[0].startswith(f"would delete record {delayed}  state.quick  READY  updated 20")
    code, out, _ = run("--include-unfinished")
    assert code == 0 and out.startswith("pruned 1 record(s) not updated for 0:00:01 and 0 expired unique key(s)")
    with pytest.raises(azjobs.JobNotFoundError):
        azjobs.result(delayed)


# -- issue #22: an id no key can hold (9) ----------------------------------------------------------------
@pytest.mark.parametrize("bad", ["a/b", "a#b", "a?b", "a\\b", "a\tb", "a\x7fb", "x" * 513, "😀" * 257])
def test_a_bad_id_is_not_found_and_the_next_valid_lookup_still_works_at_once(state_client, queue_name, bad):
    reg = registry_for(queue_name)
    job_id = reg.get("state.quick").options(queue=queue_name).enqueue("ok")
    with pytest.raises(azjobs.JobNotFoundError, match="no job can have the id") as raised:
        azjobs.result(bad)
    assert raised.value.why and raised.value.job_id == bad
    with pytest.raises(azjobs.JobNotFoundError, match="no job can have the id"):
        azjobs.wait(bad, timeout=1)
    assert azjobs.result(job_id).status is JobStatus.READY  # no outage pause: the table was never asked
    assert not store_for(state_client).in_outage()


# -- issue #22: Table limits in UTF-16 units, and what the table refuses (6) ----------------------------
@pytest.mark.parametrize("path", ["runner", "functions"])
def test_a_return_value_of_20000_emoji_is_kept_in_a_blob_and_the_record_is_successful(path, state_client, queue_name):
    from tests.integration.drivers import DRIVERS

    reg = registry_for(queue_name)
    job_id = reg.get("state.emoji").options(queue=queue_name).enqueue("e")
    driver = DRIVERS[path](state_client, queue_name, reg)
    driver.run_until(lambda: runs.get("e") == 1 and driver.results)
    assert [r.outcome for r in driver.results] == [Outcome.SUCCEEDED]
    record = azjobs.result(job_id)
    assert record.status is JobStatus.SUCCESSFUL and record.return_value == EMOJI
    assert driver.executor.hook(StateTracker).pending == 0  # nothing left for a catch-up queue
    entity = store_for(state_client).table.get_entity(partition_of(job_id), job_id)
    assert entity["ReturnValue"] == "" and entity["ReturnValueRef"] == f"azjobs-payloads/results/{job_id}.json"


# What Table Storage answers to a transaction one of whose writes has a string property over 64 KiB:
# the transaction's 202, with the refused write's own 400 inside it.
REFUSED_BATCH = (
    b"--batchresponse_5c0f6f1e-0000-4000-8000-000000000001\r\n"
    b"Content-Type: multipart/mixed; boundary=changesetresponse_5c0f6f1e-0000-4000-8000-000000000002\r\n\r\n"
    b"--changesetresponse_5c0f6f1e-0000-4000-8000-000000000002\r\n"
    b"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    b"HTTP/1.1 400 Bad Request\r\nX-Content-Type-Options: nosniff\r\nContent-ID: 1\r\n"
    b"DataServiceVersion: 3.0;\r\nContent-Type: application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
    b"\r\n\r\n"
    b'{"odata.error":{"code":"PropertyValueTooLarge","message":{"lang":"en-US","value":"0:The property value '
    b"exceeds the maximum allowed size (64KB). If the property value is a string, it is UTF-16 encoded and the "
    b'maximum number of characters should be 32K or less.\\nRequestId:1f3c9d2e-7002-0041-1f1e-0a6b3c000000\\n'
    b'Time:2026-12-04T21:40:00.0000000Z"}}}\r\n'
    b"--changesetresponse_5c0f6f1e-0000-4000-8000-000000000002--\r\n"
    b"--batchresponse_5c0f6f1e-0000-4000-8000-000000000001--\r\n"
)


def test_a_successful_write_the_table_refuses_ends_as_a_fallback_record_never_pending(azurite, connection_string,
                                                                                     state_table, queue_name, caplog):
    import logging
    import re

    from tests.integration.drivers import RunnerDriver

    proxy = FaultProxy(azurite.table_port).start()
    try:
        through_proxy = re.sub(r"(TableEndpoint=https?://)([^/;]+)", lambda m: f"{m.group(1)}127.0.0.1:{proxy.port}",
                               connection_string)
        client = Client(through_proxy, state=True, state_table=state_table)
        reg = registry_for(queue_name)

        def refused(key: str) -> str:
            # While it runs (its RUNNING write landed), the table's next transaction answer is a refusal.
            proxy.fail("POST", path_contains="$batch", status=202, times=1, body=REFUSED_BATCH,
                       content_type="multipart/mixed; boundary=batchresponse_5c0f6f1e-0000-4000-8000-000000000001",
                       error_code="")
            return quick(key)

        reg.register(azjobs.JobDefinition(name="state.refused", queue=queue_name, call=refused, signature_of=refused,
                                          target_id="state.refused"))
        job_id = reg.get("state.refused").options(queue=queue_name, client=client).enqueue("r")
        driver = RunnerDriver(client, queue_name, reg)
        with caplog.at_level(logging.WARNING, logger="azjobs.state"):
            driver.run_until(lambda: runs.get("r") == 1 and driver.results)
        assert proxy.faults["POST"] == 1, "the refusal was not injected: the test proved nothing"
        actions = [getattr(r, "action", None) for r in caplog.records]
        assert "state_return_value_dropped" in actions
        assert "state_unavailable" not in actions and "state_reconciled" not in actions  # never kept for later
        assert [r.outcome for r in driver.results] == [Outcome.SUCCEEDED]
        assert driver.executor.hook(StateTracker).pending == 0
        record = store_for(client).get(job_id)
        assert record.status is JobStatus.SUCCESSFUL and record.return_value is None and record.finished_at
        entity = store_for(client).table.get_entity(partition_of(job_id), job_id)
        assert "the return value was not kept: the table refused it" in entity["ReturnValueNote"]
        assert "PropertyValueTooLarge" in entity["ReturnValueNote"]
        client.close()
    finally:
        proxy.stop()
        try:
            azjobs.Client(connection_string).connection.table_service().delete_table(state_table)
        except Exception:
            pass


# -- issue #22: a job running past its RUNNING lease does not run twice at once (5) -------------------
def _shifted(store, shift: list) -> None:
    """The store's clock, ``shift[0]`` ahead of the wall clock (how the issue reproduced a long run)."""
    from azjobs.model.envelope import utcnow

    store.clock = lambda: utcnow() + shift[0]


def _lease_until(store, job_id: str):
    from azjobs.state.entities import _aware

    return _aware(store.table.get_entity(partition_of(job_id), job_id)["LeaseUntil"])


def _extended(store, job_id: str, timeout_s: float = 20.0) -> bool:
    """Wait (a while, without failing) for the record's lease to be pushed past the shifted clock."""
    from azjobs.model.envelope import utcnow

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _lease_until(store, job_id) > utcnow() + timedelta(minutes=15):
            return True
        time.sleep(0.1)
    return False


def test_a_duplicate_of_a_job_running_past_10_minutes_is_deferred_on_the_worker(state_client, queue_name, raw_queue,
                                                                                monkeypatch):
    from azjobs.state import running
    from azjobs.runtime.worker import Worker

    monkeypatch.setattr(running, "CHECK_S", 0.2)
    store, shift = store_for(state_client), [timedelta(0)]
    _shifted(store, shift)
    reg = registry_for(queue_name)
    job_id = reg.get("state.blocking").options(queue=queue_name).enqueue("long")
    queue = raw_queue(queue_name)
    (sent,) = queue.peek_messages(max_messages=1)
    executor = RecordingExecutor(registry=reg, client=state_client, settings=SETTINGS)
    worker = Worker([queue_name], client=state_client, executor=executor, fetch=4, lease=30)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        _until(lambda: _status(job_id) is JobStatus.RUNNING)
        shift[0] = timedelta(minutes=11)  # the run has now lasted past its first 10-minute RUNNING lease
        _extended(store, job_id)
        queue.send_message(sent.content)  # a second message for the job while its first run goes on
        _until(lambda: runs.get("long", 0) > 1 or any(r.outcome is Outcome.DEFERRED for r in executor.results),
               timeout_s=30)
        assert runs == {"long": 1}
        (deferred,) = [r for r in executor.results if r.outcome is Outcome.DEFERRED]
        assert "RUNNING under another live lease" in deferred.detail and deferred.retry_in_s > 5 * 60
    finally:
        release.set()
        _until(lambda: any(r.outcome is Outcome.SUCCEEDED for r in executor.results), timeout_s=30)
        worker.stop()
        thread.join(60)
    assert runs == {"long": 1} and azjobs.result(job_id).status is JobStatus.SUCCESSFUL
    assert len(executor.hook(StateTracker).running_jobs) == 0  # the run ended: nothing extends its lease any more


def test_a_duplicate_of_a_job_running_past_10_minutes_is_deferred_on_functions(state_client, queue_name, raw_queue,
                                                                               monkeypatch):
    from azjobs.state import running

    monkeypatch.setattr(running, "CHECK_S", 0.2)
    store, shift = store_for(state_client), [timedelta(0)]
    _shifted(store, shift)
    reg = registry_for(queue_name)
    job_id = reg.get("state.blocking").options(queue=queue_name).enqueue("long")
    queue = raw_queue(queue_name)
    (sent,) = queue.peek_messages(max_messages=1)
    executor = RecordingExecutor(registry=reg, client=state_client, settings=SETTINGS)
    app = fresh_app([queue_name], registry=reg, executor=executor)
    first = receive_one(queue)
    outcome: list = []
    host = threading.Thread(target=lambda: outcome.append(
        host_like_settle(app, queue, first, SETTINGS, InvocationContext("inv-first"))))
    host.start()
    try:
        _until(lambda: _status(job_id) is JobStatus.RUNNING)
        shift[0] = timedelta(minutes=11)
        _extended(store, job_id)
        queue.send_message(sent.content)
        duplicate = receive_one(queue)
        assert duplicate is not None and duplicate.id != first.id
        second = host_like_settle(app, queue, duplicate, SETTINGS, InvocationContext("inv-second"))
        assert second.action is HostAction.DELETED  # settled by its deferral (a delayed copy is on the queue)
        assert [r.outcome for r in executor.results] == [Outcome.DEFERRED] and runs == {"long": 1}
    finally:
        release.set()
        host.join(60)
    assert outcome[0].action is HostAction.DELETED and runs == {"long": 1}
    record = azjobs.result(job_id)
    assert record.status is JobStatus.SUCCESSFUL and record.worker_ids == ["inv-first"]


# -- #25 item 4: the Python API says a storage failure in one line, and wait() outlasts a blip --------
def test_result_with_the_table_down_raises_one_line_naming_the_table_endpoint(connection_string, state_table):
    import re

    from devtools.azurite import free_port

    port = free_port()
    down = re.sub(r"(TableEndpoint=https?://)([^/;]+)", lambda m: f"{m.group(1)}127.0.0.1:{port}", connection_string)
    client = Client(down, state=True, state_table=state_table)
    try:
        with pytest.raises(StateUnavailable) as raised:
            azjobs.result("job-1", client=client)
        # wait() asks until its timeout, then says why it has no answer (not "still running": it cannot know).
        started = time.monotonic()
        with pytest.raises(StateUnavailable) as waited:
            azjobs.wait("job-1", timeout=1, poll_s=0.2, client=client)
        assert time.monotonic() - started >= 1
        assert str(waited.value).startswith((f"state table {state_table} at http://127.0.0.1:{port}/devstoreaccount1",
                                             f"cannot reach storage account devstoreaccount1 at http://127.0.0.1:{port}"))
    finally:
        client.close()
    text = str(raised.value)
    assert text.startswith(f"cannot reach storage account devstoreaccount1 at http://127.0.0.1:{port}/devstoreaccount1 "
                           f"(connection refused) reading job job-1 from state table {state_table}, connection from "
                           "the connection string given to azjobs.configure() or azjobs.Client(). Is Azurite "
                           "running?"), text
    assert "\n" not in text and "HTTPConnectionPool" not in text and "Max retries" not in text


def test_wait_keeps_polling_through_a_table_outage_until_the_job_finishes(azurite, connection_string, state_client,
                                                                         state_table, queue_name):
    import re

    from tests.integration.drivers import RunnerDriver

    proxy = FaultProxy(azurite.table_port).start()
    through_proxy = Client(re.sub(r"(TableEndpoint=https?://)([^/;]+)",
                                  lambda m: f"{m.group(1)}127.0.0.1:{proxy.port}", connection_string),
                           state=True, state_table=state_table)
    try:
        reg = registry_for(queue_name)
        job_id = reg.get("state.quick").options(queue=queue_name).enqueue("outage")  # recorded READY
        proxy.cut()  # the table goes away before wait() starts, and stays away for a while
        answer: dict = {}

        def waiting() -> None:
            try:
                answer["value"] = azjobs.wait(job_id, timeout=120, poll_s=0.2, client=through_proxy)
            except BaseException as exc:  # what wait() raised, for the assertion below
                answer["error"] = exc

        thread = threading.Thread(target=waiting)
        thread.start()
        time.sleep(2)  # several polls fail meanwhile
        assert "error" not in answer, answer
        proxy.restore()
        RunnerDriver(state_client, queue_name, reg).run_until(lambda: runs.get("outage") == 1)
        thread.join(150)
        assert answer == {"value": "OUTAGE"}
    finally:
        through_proxy.close()
        proxy.stop()


def test_status_of_an_unknown_job_with_json_prints_a_json_error_and_an_empty_id_is_a_usage_error(state_client,
                                                                                                 state_table, capsys):
    from azjobs import cli

    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["status", "no-such-job", "--json", "--table", state_table], stdout=out, stderr=err)
    assert code == 1
    document = json.loads(out.getvalue())
    assert document == {"error": "not_found", "id": "no-such-job", "table": state_table,
                        "message": err.getvalue().removeprefix("azjobs status: ").rstrip("\n")}
    assert "no record of job 'no-such-job'" in document["message"]
    for empty in ("", "   "):
        with pytest.raises(SystemExit) as usage:
            cli.main(["status", empty, "--table", state_table], stdout=io.StringIO(), stderr=io.StringIO())
        assert usage.value.code == 2
        assert capsys.readouterr().err.endswith("azjobs status: error: JOB_ID is empty: give the id enqueue returned\n")
