"""Cancelling jobs (``azjobs.cancel``), against Azurite: before the start, during a long-delay hop, while
running (sync checking, sync not checking, async), racing a start, a cancelled job's redelivery, and the
cost of the running-job check.

Each test has its own state table and queue. The running-job check reads every ``CANCEL_CHECK_S``
seconds; the tests that wait for it shorten that to 0.2 s (the cost test measures the default cadence's
arithmetic at a short one).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import timedelta

import pytest

import azjobs
from azjobs.hosting import executor as hosted_executor
from azjobs.model import tracking
from azjobs.model.envelope import utcnow
from azjobs.model.outcome import MessageInfo, Outcome
from azjobs.model.settings import QueueSettings
from azjobs.state import running as running_module
from azjobs.state.cancel import cancel_job
from azjobs.state.entities import partition_of
from azjobs.state.record import JobStatus
from azjobs.state.store import store_for
from azjobs.state.tracker import StateTracker
from tests.integration.drivers import DRIVERS, RunnerDriver
from tests.integration.worker_support import until

SETTINGS = QueueSettings(max_dequeue_count=5, visibility_timeout=timedelta(0))

started: dict[str, int] = {}
saw_cancel: dict[str, str] = {}
finished: dict[str, str] = {}
lock = threading.Lock()
go = threading.Event()


def _note(table: dict, key: str, value=None) -> None:
    with lock:
        table[key] = table.get(key, 0) + 1 if value is None else value


def quick(key: str) -> str:
    _note(started, key)
    return key.upper()


def checking(key: str, limit_s: float = 60.0) -> str:
    """A long sync job that stops at a safe point once cancelled."""
    _note(started, key)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if azjobs.current_job().cancelled:
            _note(saw_cancel, key, "flag")
            azjobs.current_job().raise_if_cancelled()
        time.sleep(0.02)
    _note(finished, key, "ran out")
    return "done"


def not_checking(key: str) -> str:
    """A sync job that never looks: it runs until the test lets it go."""
    _note(started, key)
    assert go.wait(60), "the test never let the job go"
    _note(finished, key, "returned")
    return "a result nobody keeps"


async def sleeping(key: str) -> str:
    _note(started, key)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        _note(saw_cancel, key, "CancelledError")
        raise
    finally:
        _note(finished, key, "finally ran")
    return "slept"


def registry_for(queue: str) -> azjobs.Registry:
    reg = azjobs.Registry()
    for name, call in (("c.quick", quick), ("c.checking", checking), ("c.not_checking", not_checking),
                       ("c.sleeping", sleeping)):
        azjobs.job(queue=queue, registry=reg, name=name)(call)
    return reg


@pytest.fixture(autouse=True)
def reset(monkeypatch):
    for table in (started, saw_cancel, finished):
        table.clear()
    go.clear()
    monkeypatch.setattr(running_module, "CANCEL_CHECK_S", 0.2)
    yield
    go.set()
    tracking._process_state = None


@pytest.fixture
def state_client(connection_string):
    table = f"cx{uuid.uuid4().hex[:16]}"
    client = azjobs.configure(connection_string, state=True, state_table=table)
    yield client
    try:
        client.connection.table_service().delete_table(table)
    except Exception:
        pass
    client.close()


def _until(condition, timeout_s: float = 30.0):
    return until(condition, timeout_s)


def _depth(client, queue: str) -> int:
    return client.queue(queue).get_queue_properties().approximate_message_count


def _poison_depth(client, queue: str) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return _depth(client, f"{queue}-poison")
    except ResourceNotFoundError:
        return 0


# -- before the start ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(DRIVERS))
@pytest.mark.parametrize("when", ["immediate", "delayed"])
def test_a_job_cancelled_before_it_starts_never_runs_and_its_message_is_deleted(path, when, state_client,
                                                                                 queue_name):
    reg = registry_for(queue_name)
    call = reg.get("c.quick").options(queue=queue_name)
    job_id = call.enqueue("x") if when == "immediate" else call.enqueue_in(timedelta(seconds=2), "x")
    record = azjobs.cancel(job_id)  # no worker runs yet
    assert record.status is JobStatus.CANCELLED and record.cancel_requested and record.finished_at is not None
    driver = DRIVERS[path](state_client, queue_name, reg, settings=SETTINGS)
    driver.run_until(lambda: len(driver.results) == 1 and _depth(state_client, queue_name) == 0)
    (result,) = driver.results
    assert result.outcome is Outcome.CANCELLED and not result.ran
    assert started == {} and azjobs.result(job_id).status is JobStatus.CANCELLED
    assert _poison_depth(state_client, queue_name) == 0
    with pytest.raises(azjobs.JobFailedError, match="it was cancelled"):
        azjobs.wait(job_id, timeout=1)


@pytest.mark.parametrize("path", sorted(DRIVERS))
def test_a_cancelled_job_s_redelivered_message_is_deleted_without_running(path, state_client, queue_name,
                                                                         raw_queue):
    reg = registry_for(queue_name)
    job_id = reg.get("c.quick").options(queue=queue_name).enqueue("dup")
    queue = raw_queue(queue_name)
    (sent,) = queue.peek_messages(max_messages=1)
    azjobs.cancel(job_id)
    queue.send_message(sent.content)  # what a failed delete leaves: the same message again
    driver = DRIVERS[path](state_client, queue_name, reg, settings=SETTINGS)
    driver.run_until(lambda: len(driver.results) == 2 and _depth(state_client, queue_name) == 0)
    assert [r.outcome for r in driver.results] == [Outcome.CANCELLED, Outcome.CANCELLED]
    assert started == {} and azjobs.result(job_id).status is JobStatus.CANCELLED


def test_a_job_cancelled_during_a_long_delay_hop_never_runs(connection_string, state_client, queue_name):
    """Cancelled while its message waits out a 7-day hop: the hop arrives, then its due time: nothing runs."""
    from tests.integration.test_long_delay import TimeWarpClient

    warp = TimeWarpClient(connection_string, state=True, state_table=state_client.state_table)
    try:
        reg = registry_for(queue_name)
        job_id = reg.get("c.quick").options(queue=queue_name, client=warp).enqueue_in(timedelta(days=9), "far")
        driver = RunnerDriver(warp, queue_name, reg, settings=SETTINGS)
        # Azurite cannot wait 7 days: the warp client sends each hop visible a second later, the clock moves.
        driver.shift_clock(timedelta(days=7, seconds=1))
        driver.run_until(lambda: len(driver.results) == 1)
        assert driver.results[0].outcome is Outcome.DEFERRED and started == {}  # hopping: 2 days left
        assert azjobs.cancel(job_id).status is JobStatus.CANCELLED
        driver.shift_clock(timedelta(days=9, seconds=5))  # due now
        driver.run_until(lambda: len(driver.results) == 2 and _depth(warp, queue_name) == 0)
        assert driver.results[1].outcome is Outcome.CANCELLED and started == {}
        assert azjobs.result(job_id).status is JobStatus.CANCELLED
        # The record outlives the message: kept at least until the due time plus the retention.
        entity = store_for(state_client)._get(job_id)
        assert entity["ExpiresAt"] > utcnow() + timedelta(days=9)
    finally:
        warp.close()


# -- while running ---------------------------------------------------------------------------------
def _running_on_the_worker(client, queue: str, reg, job: str, key: str):
    job_id = reg.get(job).options(queue=queue).enqueue(key)
    driver = RunnerDriver(client, queue, reg, settings=SETTINGS)
    worker = threading.Thread(target=driver.drain)
    worker.start()
    _until(lambda: started.get(key) == 1 and azjobs.result(job_id).status is JobStatus.RUNNING)
    return job_id, driver, worker


def test_a_running_sync_job_that_checks_stops_and_ends_cancelled(state_client, queue_name):
    reg = registry_for(queue_name)
    job_id, driver, worker = _running_on_the_worker(state_client, queue_name, reg, "c.checking", "chk")
    asked = time.monotonic()
    record = azjobs.cancel(job_id)
    assert record.status is JobStatus.RUNNING and record.cancel_requested
    worker.join(60)
    assert not worker.is_alive()
    seen_after = time.monotonic() - asked
    assert saw_cancel == {"chk": "flag"} and finished == {}  # it stopped at its safe point, not at its end
    assert seen_after < 30  # 0.2 s checks: seen well within a loaded machine's margins
    (result,) = driver.results
    assert result.outcome is Outcome.CANCELLED and result.ran
    assert azjobs.result(job_id).status is JobStatus.CANCELLED and _depth(state_client, queue_name) == 0


def test_a_running_sync_job_that_never_checks_finishes_and_its_result_is_discarded(state_client, queue_name):
    reg = registry_for(queue_name)
    job_id, driver, worker = _running_on_the_worker(state_client, queue_name, reg, "c.not_checking", "nc")
    azjobs.cancel(job_id)
    executor_hook = driver.executor.hook(StateTracker)
    _until(lambda: all(run.cancellation.is_set() for run in executor_hook.running_jobs.runs())
           and len(executor_hook.running_jobs) == 1)
    go.set()
    worker.join(60)
    assert finished == {"nc": "returned"}
    (result,) = driver.results
    assert result.outcome is Outcome.CANCELLED and result.ran
    record = azjobs.result(job_id)
    assert record.status is JobStatus.CANCELLED and record.return_value is None
    assert _depth(state_client, queue_name) == 0


def test_a_running_async_job_s_task_is_cancelled_and_its_finally_runs(state_client, queue_name):
    reg = registry_for(queue_name)
    job_id, driver, worker = _running_on_the_worker(state_client, queue_name, reg, "c.sleeping", "as")
    azjobs.cancel(job_id)
    worker.join(60)
    assert not worker.is_alive()
    assert saw_cancel == {"as": "CancelledError"} and finished == {"as": "finally ran"}
    (result,) = driver.results
    assert result.outcome is Outcome.CANCELLED and result.ran
    assert azjobs.result(job_id).status is JobStatus.CANCELLED and _depth(state_client, queue_name) == 0


@pytest.mark.parametrize("job,key,expected", [("c.checking", "fchk", {"fchk": "flag"}),
                                              ("c.sleeping", "fas", {"fas": "CancelledError"})])
def test_on_functions_a_running_job_learns_of_its_cancel_through_current_job(job, key, expected, state_client,
                                                                             queue_name):
    from tests.integration.drivers import FunctionsDriver

    reg = registry_for(queue_name)
    job_id = reg.get(job).options(queue=queue_name).enqueue(key)
    driver = FunctionsDriver(state_client, queue_name, reg, settings=SETTINGS)
    host = threading.Thread(target=driver.drain)
    host.start()
    _until(lambda: started.get(key) == 1 and azjobs.result(job_id).status is JobStatus.RUNNING)
    azjobs.cancel(job_id)
    host.join(60)
    assert not host.is_alive() and saw_cancel == expected
    assert [r.outcome for r in driver.results] == [Outcome.CANCELLED]
    assert [a.action.name for a in driver.host_actions] == ["DELETED"]  # the function returned: deleted
    assert azjobs.result(job_id).status is JobStatus.CANCELLED and _depth(state_client, queue_name) == 0


def test_cancelling_a_finished_job_changes_nothing_and_an_unknown_id_raises(state_client, queue_name):
    reg = registry_for(queue_name)
    job_id = reg.get("c.quick").options(queue=queue_name).enqueue("done")
    RunnerDriver(state_client, queue_name, reg, settings=SETTINGS).run_until(lambda: started.get("done") == 1)
    before = azjobs.result(job_id)
    after = azjobs.cancel(job_id)
    assert after.status is JobStatus.SUCCESSFUL and after.return_value == "DONE" and not after.cancel_requested
    assert azjobs.result(job_id) == before
    with pytest.raises(azjobs.JobNotFoundError, match="only a tracked job can be cancelled"):
        azjobs.cancel(f"no-such-{uuid.uuid4().hex}")
    untracked = reg.get("c.quick").options(queue=queue_name, track=False).enqueue("untracked")
    with pytest.raises(azjobs.JobNotFoundError, match="only a tracked job can be cancelled"):
        azjobs.cancel(untracked)
    assert asyncio.run(azjobs.cancel_async(job_id)).status is JobStatus.SUCCESSFUL


# -- racing a start ----------------------------------------------------------------------------------
def test_a_cancel_racing_the_start_either_prevents_the_run_or_is_seen_by_it(state_client, queue_name, raw_queue):
    """Many times: a cancel and a delivery's start at once. No run goes on unaware of a CANCELLED record."""
    reg = registry_for(queue_name)
    executor = hosted_executor(registry=reg, client=state_client, settings=SETTINGS)
    queue = raw_queue(queue_name)
    prevented = seen = 0
    for rep in range(30):
        key = f"r{rep}"
        job_id = reg.get("c.checking").options(queue=queue_name).enqueue(key, 30.0)
        message = next(iter(queue.receive_messages(max_messages=1, visibility_timeout=120)))
        barrier = threading.Barrier(2)
        results: list = []

        def deliver() -> None:
            barrier.wait()
            info = MessageInfo(queue=queue_name, message_id=message.id, dequeue_count=message.dequeue_count)
            results.append(executor.execute(message.content, info))

        host = threading.Thread(target=deliver)
        host.start()
        barrier.wait()
        _, what = cancel_job(job_id)
        host.join(60)
        assert not host.is_alive()
        (result,) = results
        assert result.outcome is Outcome.CANCELLED, (rep, result)
        assert finished.get(key) is None  # no run of it went on to its end
        if what == "cancelled":  # CANCELLED written while nothing ran: nothing may start after it
            assert not started.get(key) and not result.ran, (rep, what, result)
            prevented += 1
        else:  # the start won: the run was asked to stop, and saw it
            assert what == "requested" and started.get(key) == 1 and saw_cancel.get(key) == "flag" and result.ran
            seen += 1
        assert azjobs.result(job_id).status is JobStatus.CANCELLED
        queue.delete_message(message.id, message.pop_receipt)
    assert prevented + seen == 30
    print(f"cancel racing a start, 30 times: {prevented} prevented the run, {seen} seen by the run")


# -- the cost of the running-job check --------------------------------------------------------------
def test_the_running_job_check_is_one_query_per_partition_and_14_jobs_each_interval(state_client, queue_name,
                                                                                   monkeypatch):
    """Reads per check: one query per partition holding running jobs (14 RowKeys a query), whatever the number
    of jobs, and nothing while none runs."""
    from azjobs.state.running import RunningJobs

    store = store_for(state_client)
    store.ensure_table()
    calls: list[str] = []
    real = store.table.query_entities

    def counting(query, **kwargs):
        calls.append(query)
        return real(query, **kwargs)

    monkeypatch.setattr(store.table, "query_entities", counting)
    ids = [f"job-{i}-{uuid.uuid4().hex[:6]}" for i in range(40)]
    partitions: dict[str, int] = {}
    for job_id in ids:
        partitions[partition_of(job_id)] = partitions.get(partition_of(job_id), 0) + 1
    expected = sum(-(-n // 14) for n in partitions.values())
    assert store.cancel_requests(ids) == set()
    assert len(calls) == expected and expected < len(ids)

    class _Env:
        def __init__(self, job_id: str) -> None:
            self.id, self.job = job_id, "c.x"

    running = RunningJobs(lambda: store)
    calls.clear()
    start = time.monotonic()
    for job_id in ids[:3]:
        running.add(_Env(job_id), "m", 1, None, utcnow() + timedelta(minutes=10), lambda: True)
    time.sleep(2.1)
    elapsed = time.monotonic() - start
    for job_id in ids[:3]:
        running.end(job_id)
    three = len({partition_of(i) for i in ids[:3]})
    # Every 0.2 s at most one query per partition: 3 running jobs cost at most 3 queries a check.
    assert 0 < len(calls) <= three * (elapsed / 0.2 + 1)
    time.sleep(0.5)
    after = len(calls)
    time.sleep(0.6)
    assert len(calls) == after  # no running job: no reads


# -- the command line ---------------------------------------------------------------------------------
def _cli(*argv: str) -> tuple[int, str, str]:
    import io

    from azjobs import cli

    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_the_cancel_command_cancels_reports_finished_jobs_and_refuses_unknown_ids(state_client, queue_name,
                                                                                 monkeypatch, connection_string):
    import json

    monkeypatch.setenv("AzureWebJobsStorage", connection_string)
    table = state_client.state_table
    reg = registry_for(queue_name)
    job_id = reg.get("c.quick").options(queue=queue_name).enqueue("cli")
    code, out, err = _cli("cancel", job_id, "--table", table)
    assert (code, err) == (0, "") and out == f"job c.quick {job_id} CANCELLED: it does not run\n"
    code, out, err = _cli("cancel", job_id, "--json", "--table", table)
    shown = json.loads(out)
    assert (code, err) == (0, "") and shown["status"] == "CANCELLED" and shown["cancel_requested"] is True
    code, out, err = _cli("cancel", job_id, "--table", table)
    assert code == 0 and out == f"job c.quick {job_id} was already CANCELLED: nothing changed\n"
    code, out, err = _cli("cancel", "no-such-job", "--table", table)
    assert code == 2 and out == "" and "only a tracked job can be cancelled" in err
    code, out, err = _cli("cancel", "a/b", "--table", table)
    assert code == 2 and out == "" and "no job can have the id 'a/b'" in err
    RunnerDriver(state_client, queue_name, reg, settings=SETTINGS).drain()
    assert started == {}


def test_the_cancel_command_exits_1_when_the_state_table_cannot_be_reached(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                       "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                       "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
                       "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1")
    code, out, err = _cli("cancel", "some-job", "--table", "nowhere")
    assert code == 1 and out == "" and "azjobs cancel: the state table could not be reached" in err
