"""Workflows end to end against Azurite: the worker drives the generated orchestrator over Table Storage history.

Each test has its own step queue, workflows queue and history table. Jobs leave one line
per completed run (tests.jobs.workflow_jobs), so "no completed step ran twice" is counted,
not assumed.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta

import pytest

import azjobs
from azjobs import QueueSettings
from azjobs.model.envelope import decode_body
from azjobs.runtime.worker import Worker
from azjobs.workflows import WorkflowFailed, WorkflowHandle, WorkflowTimeout
from azjobs.storage.table_rules import utf16_units
from azjobs.workflows.history import HistoryStore
from tests.conftest import unique_queue
from tests.integration.worker_support import Background, log_of, spawn, wait_for
from tests.jobs import workflow_jobs as wf

FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.5))


def worker(client, steps, queue):
    return Background(Worker([steps], client=client, settings=FAST, lease=2, workflows=queue))


def empty_or_missing(queue_client) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return queue_client.peek_messages() == []
    except ResourceNotFoundError:
        return True


def runs(test_dir, key):
    return len(wf.runs(test_dir, key))


def test_chain_passes_each_result_to_the_next_step(client, flows, test_dir):
    steps, queue = flows
    on = {"queue": steps}
    flow = azjobs.chain(wf.add.options(**on).s(1, 2), wf.double.options(**on).s(), wf.double.options(**on).s(key="d2"))
    handle = flow.enqueue(queue=queue)
    with worker(client, steps, queue):
        assert handle.result(timeout=30) == 12
    assert (runs(test_dir, "add"), runs(test_dir, "double"), runs(test_dir, "d2")) == (1, 1, 1)
    status = WorkflowHandle(handle.id).status()
    assert status["status"] == "Completed" and status["done"] == 3 and status["output"] == 12
    assert [s["result"] for s in status["steps"]] == [3, 6, 12]


def test_group_then_step_fans_out_and_in(client, flows, test_dir):
    steps, queue = flows
    on = {"queue": steps}
    group = azjobs.group(*(wf.double.options(**on).s(n, key=f"g{n}") for n in range(5)))
    handle = azjobs.chain(group, wf.total.options(**on).s()).enqueue(queue=queue)
    with worker(client, steps, queue):
        assert handle.result(timeout=30) == 2 * sum(range(5))
    assert [runs(test_dir, f"g{n}") for n in range(5)] == [1] * 5 and runs(test_dir, "total") == 1


def test_a_group_alone_returns_its_results_in_order(client, flows):
    steps, queue = flows
    handle = azjobs.group(*(wf.double.options(queue=steps).s(n) for n in (3, 1, 2))).enqueue(queue=queue)
    with worker(client, steps, queue):
        assert handle.result(timeout=30) == [6, 2, 4]


def test_a_short_sleep_waits_then_passes_the_value_on(client, flows, test_dir):
    steps, queue = flows
    on = {"queue": steps}
    handle = azjobs.chain(wf.add.options(**on).s(2, 3), azjobs.sleep(1.5), wf.double.options(**on).s()).enqueue(
        queue=queue)
    with worker(client, steps, queue):
        assert handle.result(timeout=30) == 10
    history = HistoryStore.for_client(client).load(handle.id).events
    created = [e for e in history if e["EventType"] == 10]
    fired = [e for e in history if e["EventType"] == 11]
    assert len(created) == len(fired) == 1
    # The second step was scheduled only in an episode after the timer fired.
    kinds = [e["EventType"] for e in history]
    assert kinds.index(11) < max(i for i, k in enumerate(kinds) if k == 4)


def test_a_step_failing_once_is_retried_by_the_workflow_then_succeeds(client, flows, test_dir):
    steps, queue = flows
    handle = azjobs.chain(wf.add.options(queue=steps).s(1, 1), wf.flaky.options(queue=steps).s(key="fl")).enqueue(
        queue=queue)
    with worker(client, steps, queue):
        assert handle.result(timeout=30) == 20
    assert len(wf.starts(test_dir, "fl")) == 2 and runs(test_dir, "fl") == 1 and runs(test_dir, "add") == 1
    events = HistoryStore.for_client(client).load(handle.id).events
    assert [e["EventType"] for e in events if e["EventType"] in (4, 5, 6, 10, 11)] == [4, 5, 4, 6, 10, 11, 4, 5]


def test_a_step_out_of_retries_fails_the_workflow_with_a_poison_record(client, flows, test_dir, raw_queue):
    steps, queue = flows
    handle = azjobs.chain(wf.add.options(queue=steps).s(1, 1), wf.broken.options(queue=steps).s(key="br"),
                          wf.double.options(queue=steps).s()).enqueue(queue=queue)
    with worker(client, steps, queue):
        with pytest.raises(WorkflowFailed) as failed:
            handle.result(timeout=30)
    assert "ValueError: broken step got 2" in str(failed.value)
    assert len(wf.starts(test_dir, "br")) == 2 and runs(test_dir, "double") == 0  # max_retries=1: two attempts
    [record] = raw_queue(f"{queue}-poison").receive_messages()  # written before the workflow is Failed
    data = json.loads(decode_body(record.content, "base64"))
    assert data["workflow"] == {"id": handle.id, "step": {"path": "0.1", "job": "wf.broken"}}
    assert data["error"]["type"] == "ValueError" and "Traceback" in data["error"]["traceback"]
    assert empty_or_missing(raw_queue(f"{steps}-poison"))  # the step's own queue poisons nothing


def test_kill_9_mid_workflow_resumes_from_history(connection_string, client, flows, test_dir, processes):
    steps, queue = flows
    on = {"queue": steps}
    flow = azjobs.chain(wf.slow.options(**on).s(0, key="s0", seconds=0.2), wf.slow.options(**on).s(key="s1", seconds=4),
                        wf.slow.options(**on).s(key="s2", seconds=0.2))
    handle = flow.enqueue(queue=queue)
    args = ("-i", "tests.jobs.workflow_jobs", "-q", steps, "--workflows-queue", queue, "-r", "2")
    first = spawn(connection_string, test_dir, *args, name="killed")
    processes.append(first)
    assert wait_for(lambda: wf.starts(test_dir, "s1"), timeout=30), log_of(test_dir, "killed")
    first.kill()  # SIGKILL while the second step runs
    first.wait(10)
    assert runs(test_dir, "s0") == 1 and runs(test_dir, "s1") == 0
    second = spawn(connection_string, test_dir, *args, name="resumed")
    processes.append(second)
    assert handle.result(timeout=60) == 3, log_of(test_dir, "resumed")
    # Nothing lost, and the step completed before the kill was not run again.
    assert (runs(test_dir, "s0"), runs(test_dir, "s1"), runs(test_dir, "s2")) == (1, 1, 1)
    assert len(wf.starts(test_dir, "s1")) == 2  # the killed run, then its redelivery
    assert os.environ.get("AZJOBS_WORKFLOWS_TABLE")  # the subprocesses used this test's table


def test_no_workflows_leaves_the_workflows_queue_alone(client, flows):
    steps, queue = flows
    handle = azjobs.chain(wf.add.options(queue=steps).s(1, 2)).enqueue(queue=queue)
    with Background(Worker([steps], client=client, settings=FAST, lease=2)):
        assert wait_for(lambda: False, timeout=1.5) is False
    assert handle.status()["status"] == "Pending"
    assert client.queue(queue).get_queue_properties().approximate_message_count == 1


def test_a_fan_out_of_200_steps_and_a_fan_in_completes(client, flows, test_dir):
    steps, queue = flows
    group = azjobs.group(*(wf.double.options(queue=steps).s(n, key="fan") for n in range(200)))
    handle = azjobs.chain(group, wf.total.options(queue=steps).s()).enqueue(queue=queue)
    # A lease long enough that no renewal is due under a loaded machine: this test counts runs, and a
    # 2 s lease whose renewals time out on a busy Azurite hands a running step to another receiver.
    with Background(Worker([steps], client=client, settings=FAST, lease=60, workflows=queue)):
        assert handle.result(timeout=120) == 2 * sum(range(200))
    assert runs(test_dir, "fan") == 200 and runs(test_dir, "total") == 1
    assert handle.status()["done"] == 201


def test_workflow_status_command_shows_steps_and_results(client, flows, capsys):
    from azjobs import cli

    steps, queue = flows
    handle = azjobs.chain(wf.add.options(queue=steps).s(1, 2), wf.double.options(queue=steps).s()).enqueue(queue=queue)
    with worker(client, steps, queue):
        handle.result(timeout=30)
    assert cli.main(["workflow", "status", handle.id, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"] == "Completed" and info["output"] == 6 and info["done"] == 2
    assert [(s["job"], s["state"], s["result"]) for s in info["steps"]] == [("wf.add", "done", 3), ("wf.double", "done", 6)]
    assert cli.main(["workflow", "status", handle.id]) == 0
    text = capsys.readouterr().out
    first, times, counts = text.splitlines()[:3]
    assert first == f"workflow {handle.id}: Completed" and "output: 6" in text
    assert times.startswith("created 20") and counts.startswith("steps: 2 done, 0 running, 0 failed (2 attempt(s))")
    assert cli.main(["workflow", "status", "no-such-workflow"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("azjobs: no workflow 'no-such-workflow' in table") and err.count("\n") == 1


def test_a_start_message_delivered_twice_runs_the_workflow_once(client, flows, test_dir):
    steps, queue = flows
    handle = azjobs.chain(wf.add.options(queue=steps).s(1, 2), wf.double.options(queue=steps).s()).enqueue(queue=queue)
    [start] = client.queue(queue).peek_messages()
    client.send_text(queue, start.content)  # the same start message again, as an at-least-once producer may
    with worker(client, steps, queue):
        assert handle.result(timeout=30) == 6
        assert wait_for(lambda: client.queue(queue).get_queue_properties().approximate_message_count == 0, 10)
    assert (runs(test_dir, "add"), runs(test_dir, "double")) == (1, 1)
    events = HistoryStore.for_client(client).load(handle.id).events
    assert [e["EventType"] for e in events].count(0) == 1  # one ExecutionStarted


def test_an_episode_whose_sends_failed_sends_them_when_its_message_comes_again(client, flows, monkeypatch):
    from azjobs.workflows.driver import Driver, Incoming

    steps, queue = flows
    store = HistoryStore.for_client(client)
    spec = azjobs.chain(wf.add.options(queue=steps).s(1, 2), wf.double.options(queue=steps).s()).spec()
    start = Incoming("start", "start", spec=spec)
    real_send = client.send

    def send_fails(envelope, **kwargs):
        raise ConnectionError("storage went away after the commit")

    monkeypatch.setattr(client, "send", send_fails)
    with pytest.raises(ConnectionError):
        Driver(client, store, queue).advance(spec["id"], [start])  # the message stays on the queue
    [episode] = store.load(spec["id"]).episodes
    assert episode.sources == ["start"] and not episode.sent
    assert empty_or_missing(client.queue(steps))
    monkeypatch.setattr(client, "send", real_send)
    Driver(client, store, queue).advance(spec["id"], [start])  # the start message, redelivered
    history = store.load(spec["id"])
    assert len(history.episodes) == 1 and history.episodes[0].sent  # no second start, the step sent once
    [message] = client.queue(steps).peek_messages(max_messages=32)
    step = azjobs.Envelope.decode(message.content)
    assert step.job == "wf.add" and step.args == (1, 2) and step.workflow == {"id": spec["id"], "task": 0,
                                                                             "queue": queue}
    Driver(client, store, queue).advance(spec["id"], [start])  # once more: marked sent, nothing sent again
    assert len(client.queue(steps).peek_messages(max_messages=32)) == 1


def test_two_workers_on_one_workflows_queue_run_each_step_once(client, flows, test_dir):
    steps, queue = flows
    group = azjobs.group(*(wf.double.options(queue=steps).s(n, key=f"two{n}") for n in range(40)))
    handle = azjobs.chain(group, wf.total.options(queue=steps).s(key="two-total")).enqueue(queue=queue)
    with worker(client, steps, queue), worker(client, steps, queue):
        assert handle.result(timeout=60) == 2 * sum(range(40))
    assert [runs(test_dir, f"two{n}") for n in range(40)] == [1] * 40 and runs(test_dir, "two-total") == 1
    history = HistoryStore.for_client(client).load(handle.id)
    scheduled = [e["EventId"] for e in history.events if e["EventType"] == 4]
    assert len(scheduled) == len(set(scheduled)) == 41  # each step scheduled once, whoever committed


def test_a_worker_that_commits_second_replays_on_the_winners_history(client, flows):
    from azjobs.workflows.driver import Driver, Incoming

    steps, queue = flows
    store = HistoryStore.for_client(client)
    spec = azjobs.group(wf.double.options(queue=steps).s(1), wf.double.options(queue=steps).s(2)).spec()
    wid = spec["id"]
    Driver(client, store, queue).advance(wid, [Incoming("start", "start", spec=spec)])
    stale = store.load(wid)  # what a second worker read before the first one committed

    def done(task_id, value):
        event = {"EventType": 5, "EventId": -1, "TaskScheduledId": task_id, "Result": json.dumps(value)}
        return Incoming(f"task:{task_id}", "event", event=event)

    assert Driver(client, store, queue).advance(wid, [done(0, 2)]) == "Running"
    late = HistoryStore.for_client(client)
    reads = []

    def load(workflow_id):
        reads.append(workflow_id)
        return stale if len(reads) == 1 else HistoryStore.load(late, workflow_id)

    late.load = load
    assert Driver(client, late, queue).advance(wid, [done(1, 4)]) == "Completed"
    assert len(reads) == 2  # its first commit lost (episode 1 existed), it reloaded and replayed
    history = store.load(wid)
    assert [e.sources for e in history.episodes] == [["start"], ["task:0"], ["task:1"]]
    assert WorkflowHandle(wid).result(timeout=1) == [2, 4]


def test_history_too_large_for_a_table_row_fails_the_workflow_and_says_why(client, flows, monkeypatch, raw_queue):
    from azjobs.workflows import history as history_module
    from azjobs.workflows.driver import Driver, Incoming

    steps, queue = flows
    monkeypatch.setattr(history_module, "CHUNK_UNITS", 1_000)
    monkeypatch.setattr(history_module, "MAX_PARTS", 2)  # a row holds 2,000 UTF-16 units here
    spec = azjobs.chain(wf.echo.options(queue=steps).s("x" * 2_000)).spec()
    store = HistoryStore.for_client(client)
    assert Driver(client, store, queue).advance(spec["id"], [Incoming("start", "start", spec=spec)]) == "Failed"
    with pytest.raises(WorkflowFailed) as failed:
        WorkflowHandle(spec["id"]).result(timeout=1)
    # The workflow named once, the advice given once (#25 item 9).
    import re

    assert re.fullmatch(f"workflow {spec['id']} failed: episode 0 of its history is [0-9,]+ UTF-16 units, more "
                        r"than one table row holds \(2,000\); pass references \(a blob name, a row id\) as step "
                        "arguments and results, not large values", str(failed.value)), str(failed.value)
    assert empty_or_missing(client.queue(steps))  # nothing ran
    [record] = raw_queue(f"{queue}-poison").receive_messages()
    assert json.loads(decode_body(record.content, "base64"))["workflow"]["id"] == spec["id"]


# -- limits counted as Table Storage counts them (UTF-16 units) ----------------------------------------------

def history_rows(client, workflow_id):
    """The history table's entities of one workflow, as stored."""
    store = HistoryStore.for_client(client)
    return list(store.client.query_entities("PartitionKey eq @pk", parameters={"pk": workflow_id}))


def string_units(rows):
    """UTF-16 units of every string property of ``rows`` (what Table Storage limits to 32K)."""
    return [utf16_units(value) for row in rows for value in row.values() if isinstance(value, str)]


def test_a_history_row_is_split_by_utf16_units_as_table_storage_counts(client, flows):
    """Three group steps fail in one batch with emoji in their errors: one episode of about 30,000 emoji.
    Split every 30,000 Python characters, a part held 60,000 UTF-16 units and Azurite refused the row
    (400 PropertyValueTooLarge), as Azure does."""
    from azjobs.workflows.driver import Driver, Incoming

    steps, queue = flows
    store = HistoryStore.for_client(client)
    spec = azjobs.group(*(wf.double.options(queue=steps).s(n) for n in range(3))).spec()
    wid = spec["id"]
    driver = Driver(client, store, queue)
    assert driver.advance(wid, [Incoming("start", "start", spec=spec)]) == "Running"
    reason = "ValueError: " + "😀" * 5_000

    def failed(task_id):
        event = {"EventType": 6, "EventId": -1, "TaskScheduledId": task_id, "Reason": reason, "Details": reason}
        return Incoming(f"task:{task_id}", "event", event=event)

    assert driver.advance(wid, [failed(0), failed(1), failed(2)]) == "Running"  # the retry task's closing timer
    rows = [row for row in history_rows(client, wid) if row["RowKey"].isdigit()]  # (not the listing row)
    assert len(rows) == 2 and max(string_units(rows)) <= 32_000
    assert sum(string_units(rows)) > 60_000  # the emoji are all there, two units each
    [_, episode] = store.load(wid).episodes
    assert [e.get("Reason") for e in episode.events if e["EventType"] == 6] == [reason] * 3


@pytest.fixture
def own_client(connection_string):
    """A client whose payload container (claim checks, large step values) belongs to this test alone."""
    container = f"wfp{uuid.uuid4().hex[:20]}"
    own = azjobs.Client(connection_string, payload_container=container)
    yield own
    try:
        own.payloads._client().delete_container()
    except Exception:
        pass
    own.close()


def blobs(client, prefix=""):
    """Names of the blobs in ``client``'s payload container (None: the container was never created)."""
    container = client.payloads._client()
    if not container.exists():
        return None
    return [blob.name for blob in container.list_blobs(name_starts_with=prefix)]


def test_a_step_value_too_large_for_its_report_message_travels_in_a_blob_and_the_workflow_completes(
        own_client, flows):
    """20,000 emoji: 80,000 bytes of UTF-8 (over the 48 KiB a report message holds) and 40,000 UTF-16 units in
    the history (over one 32K property). The value waits in a blob, the history splits it, the blob goes."""
    steps, queue = flows
    handle = azjobs.chain(wf.emoji.options(queue=steps).s(20_000)).enqueue(queue=queue, client=own_client)
    with worker(own_client, steps, queue):
        assert handle.result(timeout=30) == "😀" * 20_000
    assert handle.status()["steps"][0]["result"] == "😀" * 20_000
    assert max(string_units(history_rows(own_client, handle.id))) <= 32_000
    assert blobs(own_client, "workflow-results/") == []  # it was written (the container exists), then deleted


def test_a_step_value_whose_blob_is_gone_fails_that_attempt_and_says_where(client, flows):
    from azjobs.workflows.driver import Driver, Incoming

    steps, queue = flows
    store = HistoryStore.for_client(client)
    spec = azjobs.chain(wf.double.options(queue=steps).s(1)).spec()
    driver = Driver(client, store, queue)
    driver.advance(spec["id"], [Incoming("start", "start", spec=spec)])
    ref = f"{client.payloads.container}/workflow-results/{uuid.uuid4()}.json"  # never written
    report = {"EventType": 5, "EventId": -1, "TaskScheduledId": 0, "ResultRef": ref}
    assert driver.advance(spec["id"], [Incoming("task:0", "event", event=report)]) == "Running"
    [failed] = [e for e in store.load(spec["id"]).events if e["EventType"] == 6]
    assert failed["TaskScheduledId"] == 0 and f"could not be read from {ref}" in failed["Reason"]


def test_a_workflow_input_and_output_of_20000_emoji_complete(own_client, flows):
    """The spec (its first step's argument) is over a start message: it waits in a blob; the argument, the step
    values and the output go through the history in parts of at most 32K UTF-16 units; every blob is deleted."""
    steps, queue = flows
    value = "😀" * 20_000
    flow = azjobs.chain(wf.echo.options(queue=steps).s(value), wf.echo.options(queue=steps).s())
    handle = flow.enqueue(queue=queue, client=own_client)
    [start] = own_client.queue(queue).peek_messages()
    assert "spec_ref" in json.loads(decode_body(start.content, "base64"))
    with worker(own_client, steps, queue):
        assert handle.result(timeout=30) == value
    assert max(string_units(history_rows(own_client, handle.id))) <= 32_000
    assert wait_for(lambda: blobs(own_client, "workflow-") == [], timeout=10), blobs(own_client)


def test_a_workflow_the_worker_fails_gets_its_record_even_if_the_worker_died_before_writing_it(
        client, flows, monkeypatch, raw_queue):
    from azjobs.workflows import driver as driver_module
    from azjobs.workflows import history as history_module
    from azjobs.workflows.driver import Driver, Incoming

    steps, queue = flows
    monkeypatch.setattr(history_module, "CHUNK_UNITS", 1_000)
    monkeypatch.setattr(history_module, "MAX_PARTS", 2)
    spec = azjobs.chain(wf.echo.options(queue=steps).s("x" * 2_000)).spec()
    start = Incoming("start", "start", spec=spec)
    store = HistoryStore.for_client(client)
    real_write = driver_module.write_failure_record

    def dies(*args, **kwargs):
        raise ConnectionError("the worker died after the commit")

    monkeypatch.setattr(driver_module, "write_failure_record", dies)
    with pytest.raises(ConnectionError):
        Driver(client, store, queue).advance(spec["id"], [start])
    assert store.load(spec["id"]).status == "Failed"
    monkeypatch.setattr(driver_module, "write_failure_record", real_write)
    assert Driver(client, store, queue).advance(spec["id"], [start]) == "Failed"  # the start message, redelivered
    [record] = raw_queue(f"{queue}-poison").receive_messages()
    assert json.loads(decode_body(record.content, "base64"))["workflow"]["id"] == spec["id"]


def test_a_history_table_storage_refuses_for_good_fails_the_workflow_and_says_why(own_client, flows, monkeypatch,
                                                                                   raw_queue):
    """Parts of 40,000 UTF-16 units stand for whatever the size checks could miss (on Azure, an entity over
    1 MiB, which Azurite does not check): Azurite answers 400 PropertyValueTooLarge, as Azure does. The
    workflow fails with that answer; before, it stayed Running while its message was redelivered, then poisoned."""
    from azjobs.workflows import history as history_module

    steps, queue = flows
    monkeypatch.setattr(history_module, "CHUNK_UNITS", 40_000)  # over the service's 32,768
    handle = azjobs.chain(wf.emoji.options(queue=steps).s(20_000)).enqueue(queue=queue, client=own_client)
    with worker(own_client, steps, queue):
        with pytest.raises(WorkflowFailed) as failed:
            handle.result(timeout=30)
        assert wait_for(lambda: own_client.queue(queue).get_queue_properties().approximate_message_count == 0, 10)
    assert "Table Storage refused episode 1 of the workflow's history (400 PropertyValueTooLarge: " in str(failed.value)
    [record] = raw_queue(f"{queue}-poison").receive_messages(max_messages=32)  # its failure record, nothing poisoned
    data = json.loads(decode_body(record.content, "base64"))
    assert data["workflow"]["id"] == handle.id and data["error"]["reason"] == "workflow_failed"



# -- workflow ids: unknown ones are unknown, impossible ones are refused -----------------------------------

def test_an_unknown_workflow_id_raises_not_found_and_an_enqueued_one_reads_pending(client, flows):
    steps, queue = flows
    with pytest.raises(azjobs.WorkflowNotFoundError) as missing:
        WorkflowHandle("nope").status()  # before: {"status": "Pending", ...} for ever
    assert "no workflow 'nope'" in str(missing.value) and "never enqueued" in str(missing.value)
    with pytest.raises(azjobs.WorkflowNotFoundError):
        WorkflowHandle("nope").result(timeout=30)  # at once, not after the timeout
    handle = azjobs.chain(wf.add.options(queue=steps).s(1, 2)).enqueue(queue=queue)  # no worker: never started
    info = WorkflowHandle(handle.id).status()  # a fresh handle: it reads the pending row enqueue wrote
    assert info["status"] == "Pending" and info["steps"] == [] and info["history_length"] == 0
    with pytest.raises(WorkflowTimeout):
        WorkflowHandle(handle.id).result(timeout=0.5)


def test_the_status_command_says_pending_not_found_and_impossible_ids_in_one_line(client, flows, capsys):
    from azjobs import cli

    steps, queue = flows
    handle = azjobs.chain(wf.add.options(queue=steps).s(1, 2)).enqueue(queue=queue, id="order-42-" + uuid.uuid4().hex)
    assert cli.main(["workflow", "status", handle.id]) == 0
    first, times, counts = capsys.readouterr().out.splitlines()[:3]
    assert (first, counts.split(";")[0]) == (f"workflow {handle.id}: Pending", "steps: 0 done, 0 running, 0 failed "
                                                                               "(0 attempt(s))")
    assert times.startswith("created 20") and times.endswith(", finished -")  # created: when it was enqueued
    for impossible in ("order/42", "a#b"):
        assert cli.main(["workflow", "status", impossible]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"azjobs: no workflow can have the id {impossible!r}: it contains")
        assert err.count("\n") == 1


def test_a_start_message_whose_id_cannot_key_a_history_is_poisoned_on_its_first_delivery(client, flows, raw_queue):
    """A start message from elsewhere (written by hand, an older producer) with '/' in its id: before, every
    delivery failed on Table Storage's 400 and the message was poisoned only after maxDequeueCount."""
    from azjobs.model.envelope import encode_text
    from azjobs.workflows.spec import start_message

    steps, queue = flows
    spec = azjobs.chain(wf.add.options(queue=steps).s(1, 2)).spec()
    client.send_text(queue, encode_text(start_message({**spec, "id": "order/42"}), client.encoding))
    with worker(client, steps, queue):
        assert wait_for(lambda: not empty_or_missing(raw_queue(f"{queue}-poison")), timeout=30)
    [poisoned] = raw_queue(f"{queue}-poison").receive_messages()
    record = json.loads(decode_body(poisoned.content, "base64"))
    assert record["error"]["reason"] == "bad_id" and record["dequeue_count"] == 1
    assert empty_or_missing(client.queue(steps))  # nothing ran


def test_status_in_a_function_app_is_pending_for_an_enqueued_workflow_and_not_found_for_an_unknown_one(
        client, flows, monkeypatch):
    import asyncio

    from azure.durable_functions import DurableOrchestrationClient

    from azjobs.workflows.testing import TaskHub

    steps, queue = flows
    hub = TaskHub().install(monkeypatch)  # the start trigger has not run: the task hub knows neither
    durable = DurableOrchestrationClient(hub.binding)
    handle = azjobs.chain(wf.add.options(queue=steps).s(1, 2)).enqueue(queue=queue)
    info = asyncio.run(WorkflowHandle(handle.id, durable_client=durable, client=client).status_async())
    assert info["status"] == "Pending" and info["source"] == "durable"
    with pytest.raises(azjobs.WorkflowNotFoundError):
        asyncio.run(WorkflowHandle("nope", durable_client=durable, client=client).status_async())


# -- steps that can never run fail their workflow at once ---------------------------------------------------

BEFORE = azjobs.Registry()  # the jobs as the enqueuer knew them
AFTER = azjobs.Registry()  # the worker's, after a deploy: wf.gone is gone, wf.resized takes one argument


@azjobs.job(queue="workflow-tests", registry=BEFORE, name="wf.gone", retry=azjobs.Fixed(0.1, max_retries=4))
def gone_before(n: int) -> int:
    return n


@azjobs.job(queue="workflow-tests", registry=BEFORE, name="wf.resized", retry=azjobs.Fixed(0.1, max_retries=4))
def resized_before(n: int, m: int) -> int:
    return n * m


@azjobs.job(queue="workflow-tests", registry=AFTER, name="wf.resized", retry=azjobs.Fixed(0.1, max_retries=4))
def resized_after(n: int) -> int:
    return n


@pytest.mark.parametrize("job, args, reason", [
    (gone_before, (1,), "azjobs.errors.UnknownJobError: step 0 (wf.gone) cannot run: no job named 'wf.gone'"),
    (resized_before, (2, 3), "azjobs.errors.ArgumentError: step 0 (wf.resized) cannot run: "),
])
def test_a_step_that_can_never_run_fails_its_workflow_on_its_first_delivery(client, flows, raw_queue, job, args,
                                                                             reason):
    """Five attempts in its retry policy, yet one delivery: before, an unknown job was retried by the core's
    unknown-job policy on every workflow attempt (25 deliveries, 5 poison records, minutes), and bad arguments
    wrote a poison record per workflow attempt; handle.result() said Running throughout."""
    from azjobs.testing import RecordingExecutor

    steps, queue = flows
    handle = job.options(queue=steps).s(*args).enqueue(queue=queue)
    executor = RecordingExecutor(registry=AFTER, client=client, settings=FAST)
    with Background(Worker([steps], client=client, executor=executor, lease=2, workflows=queue)):
        with pytest.raises(WorkflowFailed) as failed:
            handle.result(timeout=60)
    assert reason in str(failed.value)
    deliveries = [r for r in executor.results if r.envelope is not None and r.envelope.workflow]
    assert len(deliveries) == 1 and deliveries[0].extra["reason"] in ("unknown_job", "bad_arguments")
    events = HistoryStore.for_client(client).load(handle.id).events
    assert [e["EventType"] for e in events].count(4) == 2  # the step once, then the failure record's call
    assert empty_or_missing(raw_queue(f"{steps}-poison"))  # no record per attempt: the workflow's holds it
    [record] = raw_queue(f"{queue}-poison").receive_messages()
    assert json.loads(decode_body(record.content, "base64"))["workflow"]["step"]["path"] == "0"


def failed_workflow(client, flows):
    """A workflow failed by its broken step; its failure record is on the workflows queue's poison queue."""
    steps, queue = flows
    handle = azjobs.chain(wf.broken.options(queue=steps).s(2, key="rq")).enqueue(queue=queue)
    with worker(client, steps, queue):
        with pytest.raises(WorkflowFailed):
            handle.result(timeout=30)
    return handle


def test_requeueing_a_failed_workflows_record_is_refused_and_it_stays_in_poison(client, flows, raw_queue, capsys):
    from azjobs.cli import poison as poison_cli

    steps, queue = flows
    handle = failed_workflow(client, flows)
    code = poison_cli.main(["requeue", queue, "--id", handle.id], client=client)
    out = capsys.readouterr().out
    assert code == 2, out  # before: 1, "the record holds neither an envelope nor a body"
    assert f"it is the failure record of workflow {handle.id} (step 0.0, wf.broken): a failed workflow resumes " \
           "nothing" in out
    assert out.endswith("0 requeued, 0 failed, 0 not found, 1 refused (left in " + f"{queue}-poison)\n")
    assert len(raw_queue(f"{queue}-poison").peek_messages()) == 1 and empty_or_missing(raw_queue(queue))


def test_requeueing_a_workflow_steps_record_is_refused_and_runs_nothing(client, flows, raw_queue, capsys):
    """A step record as older versions wrote on the step's queue-poison: requeued, it ran the job again and its
    report was dropped as a late event (the workflow had been told the step failed)."""
    from azjobs.cli import poison as poison_cli
    from azjobs.model.poison_record import ErrorInfo, PoisonRecord

    steps, queue = flows
    handle = failed_workflow(client, flows)
    step = azjobs.Envelope.build("wf.double", (2,), queue=steps, workflow={"id": handle.id, "task": 0, "queue": queue})
    record = PoisonRecord(queue=steps, error=ErrorInfo("ValueError", "x", reason="job_failed"), envelope=step)
    client.send_text(f"{steps}-poison", record.encode(client.encoding), create=True)
    code = poison_cli.main(["requeue", steps, "--all"], client=client)
    out = capsys.readouterr().out
    assert code == 2 and f"it is a step of workflow {handle.id} (job wf.double)" in out, out
    assert empty_or_missing(raw_queue(steps)) and len(raw_queue(f"{steps}-poison").peek_messages()) == 1


def test_flow_enqueue_creates_the_step_queues_and_a_worker_then_runs_the_workflow(client, flows, raw_queue):
    from azure.core.exceptions import ResourceNotFoundError

    _, queue = flows
    first, second = raw_queue(unique_queue("wfa")), raw_queue(unique_queue("wfb"))  # deleted at teardown
    for missing in (first, second):
        with pytest.raises(ResourceNotFoundError):
            missing.get_queue_properties()
    flow = azjobs.chain(wf.add.options(queue=first.queue_name).s(1, 2),
                        azjobs.group(wf.double.options(queue=second.queue_name).s(key="w1")))
    handle = flow.enqueue(queue=queue)
    for created in (first, second):
        assert created.get_queue_properties() is not None  # exists now
    with Background(Worker([first.queue_name, second.queue_name], client=client, settings=FAST, lease=2,
                           workflows=queue)):
        assert handle.result(timeout=30) == [6]


def test_flow_enqueue_with_create_queues_false_leaves_step_queues_alone(connection_string, flows, raw_queue):
    from azure.core.exceptions import ResourceNotFoundError

    _, queue = flows
    raw_queue(queue).create_queue()
    step = raw_queue(unique_queue("wfc"))
    no_create = azjobs.Client(connection_string, create_queues=False)
    try:
        azjobs.chain(wf.add.options(queue=step.queue_name).s(1, 2)).enqueue(queue=queue, client=no_create)
    finally:
        no_create.close()
    with pytest.raises(ResourceNotFoundError):
        step.get_queue_properties()


# -- #25 item 7: status counts steps with their attempts; recent workflows are listed -----------------
def test_status_shows_a_retried_step_once_with_its_attempts_and_list_finds_recent_workflows(client, flows, test_dir,
                                                                                           raw_queue):
    import io

    from azjobs import cli

    steps, queue = flows
    table = os.environ["AZJOBS_WORKFLOWS_TABLE"]
    good = azjobs.chain(wf.add.options(queue=steps).s(1, 2), azjobs.sleep(0.5),
                        wf.double.options(queue=steps).s()).enqueue(queue=queue)
    bad = azjobs.chain(wf.broken.options(queue=steps).s(2, key="lst")).enqueue(queue=queue)
    raw_queue(f"{queue}-later")  # deleted at teardown
    waiting = azjobs.chain(wf.add.options(queue=steps).s(5, 5)).enqueue(queue=f"{queue}-later")  # never worked
    with worker(client, steps, queue):
        assert good.result(timeout=30) == 6
        with pytest.raises(WorkflowFailed):
            bad.result(timeout=30)

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        return cli.main(list(argv), stdout=out, stderr=err), out.getvalue(), err.getvalue()

    code, text, err = run("workflow", "status", bad.id)
    assert (code, err) == (0, "")
    lines = text.splitlines()
    assert lines[1].startswith("created 20") and ", finished 20" in lines[1]
    # Durable answers each failed attempt with a retry timer, the last one included.
    assert lines[2] == "steps: 0 done, 0 running, 1 failed (2 attempt(s)); 0 sleep(s), 2 retry wait(s); history " \
                       f"{lines[2].rsplit('history ', 1)[1]}"
    assert lines[3].startswith("  0.0      wf.broken                      failed   2 attempts  !! ValueError: broken")
    code, text, _ = run("workflow", "status", good.id)
    assert "steps: 2 done, 0 running, 0 failed (2 attempt(s)); 1 sleep(s), 0 retry wait(s)" in text

    code, text, err = run("workflow", "list", "--since", "1h")
    assert (code, err) == (0, ""), err
    rows = [line.split() for line in text.splitlines()]
    assert rows[0] == ["ID", "STATUS", "CREATED", "FINISHED"]
    assert {row[0]: row[1] for row in rows[1:]} == {good.id: "Completed", bad.id: "Failed", waiting.id: "Pending"}
    assert rows[1][0] == waiting.id  # newest first
    assert all(row[3] != "-" for row in rows[1:] if row[0] != waiting.id)
    code, text, _ = run("workflow", "list", "--status", "failed", "--json")
    assert code == 0 and [json.loads(line)["id"] for line in text.splitlines()] == [bad.id]
    code, text, _ = run("workflow", "list", "--status", "Running")
    assert (code, text) == (0, f"no Running workflows in table {table}\n")
    with pytest.raises(SystemExit) as usage:
        run("workflow", "list", "--status", "Done")
    assert usage.value.code == 2
