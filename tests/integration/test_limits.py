"""Limits across workers, against Azurite with real worker processes (and the Functions handler).

Every job run notes ``<pid> <start> <end> <key>`` (``time.time()``, one clock for the machine's
processes); each test has its own queue and its own limits table (``AZJOBS_LIMITS_TABLE``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

import azjobs
from azjobs.limits import slots
from azjobs.limits.table import LimitTable, slot_partition
from azjobs.model.limits import Limit
from azjobs.model.outcome import Outcome
from azjobs.model.settings import QueueSettings
from tests.conftest import unique_queue
from tests.functions_support import HostAction, RecordingExecutor, fresh_app, host_like_settle, receive_one
from tests.integration.worker_support import ROOT, wait_for
from tests.integration.dashboard_support import sessions_table  # noqa: F401 (a fixture)
from tests.jobs import limit_jobs

JOBS = "tests.jobs.limit_jobs"


@pytest.fixture
def limits_table(connection_string, monkeypatch):
    name = f"lim{uuid.uuid4().hex[:16]}"
    monkeypatch.setenv("AZJOBS_LIMITS_TABLE", name)
    yield name
    try:
        azjobs.Connection  # noqa: B018 - the lazy name loads the connection module
        from azjobs.storage.connection import connection_from_string

        connection_from_string(connection_string, "test").table_service().delete_table(name)
    except Exception:
        pass


def _spawn(connection_string: str, test_dir: Path, table: str, name: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, AzureWebJobsStorage=connection_string, AZJOBS_TEST_DIR=str(test_dir),
               AZJOBS_LIMITS_TABLE=table, PYTHONPATH=str(ROOT))
    log = open(test_dir / f"{name}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "azjobs", "-i", JOBS, *args], cwd=test_dir, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def _runs(test_dir: Path, file: str) -> list[tuple[int, float, float, str]]:
    path = test_dir / f"{file}.runs"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        pid, start, end, key = line.split(" ", 3)
        rows.append((int(pid), float(start), float(end), key))
    return rows


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def _depth(raw_queue, name: str) -> int:
    """Messages on the queue (a poison queue that was never made holds none)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return raw_queue(name).get_queue_properties().approximate_message_count
    except ResourceNotFoundError:
        return 0


def _log(test_dir: Path, name: str) -> str:
    path = test_dir / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_concurrency_2_holds_across_two_workers_with_8_threads_each(client, raw_queue, test_dir, processes,
                                                                     limits_table, connection_string):
    q = unique_queue("lconc")
    raw_queue(q), raw_queue(f"{q}-poison")
    client.ensure_queue(q)
    keys = [f"k{i}" for i in range(12)]
    for key in keys:
        limit_jobs.capped.options(queue=q).enqueue(key, 0.6)
    for name in ("w1", "w2"):
        processes.append(_spawn(connection_string, test_dir, limits_table, name, "-q", q, "-c", "8"))
    assert wait_for(lambda: len(_runs(test_dir, "capped")) >= len(keys), timeout=240, interval=0.5), \
        _log(test_dir, "w1")[-3000:]
    for process in processes:
        _stop(process)
    runs = _runs(test_dir, "capped")
    assert sorted(key for *_, key in runs) == sorted(keys)  # all ran, once each
    assert _most_at_once([(start, end) for _, start, end, _ in runs]) <= 2
    assert "job_throttled" in _log(test_dir, "w1") + _log(test_dir, "w2") or \
        "throttled" in _log(test_dir, "w1") + _log(test_dir, "w2")
    assert _depth(raw_queue, f"{q}-poison") == 0


def test_rate_limit_5_per_second_holds_across_two_workers(client, raw_queue, test_dir, processes, limits_table,
                                                          connection_string):
    q = unique_queue("lrate")
    raw_queue(q), raw_queue(f"{q}-poison")
    client.ensure_queue(q)
    keys = [f"r{i}" for i in range(30)]
    for key in keys:
        limit_jobs.rated.options(queue=q).enqueue(key)
    for name in ("w1", "w2"):
        processes.append(_spawn(connection_string, test_dir, limits_table, name, "-q", q, "-c", "8"))
    assert wait_for(lambda: len(_runs(test_dir, "rated")) >= len(keys), timeout=240, interval=0.5), \
        _log(test_dir, "w1")[-3000:]
    for process in processes:
        _stop(process)
    runs = _runs(test_dir, "rated")
    assert sorted(key for *_, key in runs) == sorted(keys)
    starts = sorted(start for _, start, _, _ in runs)
    # No 2 s window holds more than the limit (10) plus a small burst (the time between a start's
    # admission and the job's own clock reading, on a loaded machine).
    busiest = max(sum(1 for other in starts if first <= other < first + 2.0) for first in starts)
    assert busiest <= 12, starts
    assert {pid for pid, *_ in runs} and _depth(raw_queue, f"{q}-poison") == 0


def test_limit_key_runs_two_customers_in_parallel_and_each_customers_jobs_in_series(
        client, raw_queue, test_dir, processes, limits_table, connection_string):
    q = unique_queue("lkey")
    raw_queue(q), raw_queue(f"{q}-poison")
    client.ensure_queue(q)
    for i in range(3):
        for customer in ("acme", "globex"):
            limit_jobs.per_customer.options(queue=q).enqueue(customer, f"{customer}{i}", 1.5)
    for name in ("w1", "w2"):
        processes.append(_spawn(connection_string, test_dir, limits_table, name, "-q", q, "-c", "8"))
    done = lambda: len(_runs(test_dir, "customer-acme")) >= 3 and len(_runs(test_dir, "customer-globex")) >= 3  # noqa: E731
    assert wait_for(done, timeout=240, interval=0.5), _log(test_dir, "w1")[-3000:]
    for process in processes:
        _stop(process)
    acme = [(s, e) for _, s, e, _ in _runs(test_dir, "customer-acme")]
    globex = [(s, e) for _, s, e, _ in _runs(test_dir, "customer-globex")]
    assert len(acme) == len(globex) == 3
    assert _most_at_once(acme) == 1 and _most_at_once(globex) == 1  # one customer: in series
    assert _most_at_once(acme + globex) == 2  # two customers: side by side


def test_a_slot_of_a_worker_killed_with_sigkill_comes_back_when_its_lease_ends(
        client, raw_queue, test_dir, processes, limits_table, connection_string):
    # Two jobs share the limit "lt-shared" (concurrency=1, lease_s=6), on two queues: the doomed
    # worker works only the holder's queue, and with -r 600 its message stays hidden for the whole
    # test, so only the slot's lease can let the waiter run.
    q, q2 = unique_queue("lkill"), unique_queue("lkillw")
    for name in (q, f"{q}-poison", q2, f"{q2}-poison"):
        raw_queue(name)
    client.ensure_queue(q), client.ensure_queue(q2)
    limit_jobs.held_long.options(queue=q).enqueue("holder", 600)
    doomed = _spawn(connection_string, test_dir, limits_table, "doomed", "-q", q, "-c", "2", "-r", "600")
    processes.append(doomed)
    started = test_dir / "held.started"
    assert wait_for(started.exists, timeout=120, interval=0.2), _log(test_dir, "doomed")[-3000:]
    limit_jobs.held.options(queue=q2).enqueue("waiter", 0.1)
    processes.append(_spawn(connection_string, test_dir, limits_table, "other", "-q", q2, "-c", "2"))
    time.sleep(8)  # the holder's lease (6 s) is renewed while it runs: the waiter must not start
    assert _runs(test_dir, "held") == []
    killed_at = time.time()
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    assert wait_for(lambda: _runs(test_dir, "held"), timeout=120, interval=0.2), _log(test_dir, "other")[-3000:]
    (_, start, _, key), = _runs(test_dir, "held")
    assert key == "waiter"
    # Its lease (6 s) plus the clock margin (5 s) plus one throttle hop and a poll, with room for a loaded machine.
    assert start - killed_at < 60, start - killed_at
    assert _depth(raw_queue, f"{q2}-poison") == 0


def test_a_message_throttled_many_times_never_reaches_poison(client, raw_queue, test_dir, processes, limits_table,
                                                             connection_string):
    q = unique_queue("lthr")
    raw_queue(q), raw_queue(f"{q}-poison")
    client.ensure_queue(q)
    (test_dir / "host.json").write_text('{"version": "2.0", "extensions": {"queues": {"maxDequeueCount": 1}}}')
    table = LimitTable.from_connection(client.connection, limits_table)
    # The test holds the shared limit's only slot (a long lease: it must not run out during the test).
    taken = slots.acquire(table, Limit("lt-shared", 1, None, 600, True), "", {"Holder": "test"},
                          lambda: datetime.now(timezone.utc))
    assert isinstance(taken, slots.Slot)
    job_id = limit_jobs.held.options(queue=q).enqueue("patient", 0.1)
    worker = _spawn(connection_string, test_dir, limits_table, "w1", "-q", q, "-c", "2", "-v")
    processes.append(worker)
    throttled = lambda: _log(test_dir, "w1").count("throttled for")  # noqa: E731
    # maxDequeueCount is 1: a delivery that counted would be poisoned at the second one.
    assert wait_for(lambda: throttled() >= 6 or _depth(raw_queue, f"{q}-poison") > 0, timeout=240, interval=0.5), \
        _log(test_dir, "w1")[-3000:]
    assert _depth(raw_queue, f"{q}-poison") == 0
    assert throttled() >= 6 and _runs(test_dir, "held") == []
    assert slots.release(table, taken)
    assert wait_for(lambda: _runs(test_dir, "held"), timeout=120, interval=0.3), _log(test_dir, "w1")[-3000:]
    _stop(worker)
    assert [key for *_, key in _runs(test_dir, "held")] == ["patient"]
    assert _depth(raw_queue, f"{q}-poison") == 0
    assert job_id in _log(test_dir, "w1")


def test_functions_handler_throttles_a_real_queue_message_without_using_an_attempt(client, raw_queue,
                                                                                    limits_table):
    q, reg = unique_queue("lfn"), azjobs.Registry()
    ran = FN_RUNS
    ran.clear()
    job = azjobs.job(queue=q, registry=reg, name="lt.fn", concurrency=1)(lt_fn)
    settings = QueueSettings(max_dequeue_count=1)
    executor = RecordingExecutor(registry=reg, client=client, settings=settings)
    app = fresh_app(registry=reg, executor=executor)
    table = LimitTable.from_connection(client.connection, limits_table)
    own = job.job.limits.own
    taken = slots.acquire(table, own, "", {"Holder": "test"}, lambda: datetime.now(timezone.utc))
    assert isinstance(taken, slots.Slot)
    job_id = job.enqueue("x")
    qc = raw_queue(q)
    for _ in range(3):  # throttled again and again: each copy starts with a fresh dequeue count
        assert wait_for(lambda: _visible(qc), timeout=60, interval=0.3)
        message = receive_one(qc)
        assert message.dequeue_count == 1
        delivery = host_like_settle(app, qc, message, settings)
        assert delivery.action is HostAction.DELETED
        result = executor.results[-1]
        assert result.outcome is Outcome.THROTTLED and result.envelope.id == job_id
        assert result.envelope.attempt == 1 and result.retry_in_s >= 1
    assert ran == [] and _depth(raw_queue, f"{q}-poison") == 0
    assert slots.release(table, taken)
    assert wait_for(lambda: _visible(qc), timeout=60, interval=0.3)
    assert host_like_settle(app, qc, receive_one(qc), settings).action is HostAction.DELETED
    assert executor.results[-1].outcome is Outcome.SUCCEEDED and ran == ["x"]
    # The run gave its slot back.
    assert table.query("PartitionKey eq @pk", {"pk": slot_partition(own.name, "")}) == []


def _visible(qc) -> bool:
    return bool(qc.peek_messages(max_messages=1))


def test_weighted_queues_split_the_starts_4_to_1_while_both_are_backed_up_then_lend_the_idle_share(
        client, raw_queue, test_dir, processes, limits_table, connection_string):
    critical, default = unique_queue("lcrit"), unique_queue("ldef")
    for name in (critical, default, f"{critical}-poison", f"{default}-poison"):
        raw_queue(name)
    client.ensure_queue(critical), client.ensure_queue(default)
    for i in range(60):
        limit_jobs.pause.options(queue=critical).enqueue("w", f"critical-{i}", 0.2)
        limit_jobs.pause.options(queue=default).enqueue("w", f"default-{i}", 0.2)
    processes.append(_spawn(connection_string, test_dir, limits_table, "w1", "-q", f"{critical}:4",
                            "-q", f"{default}:1", "-c", "2"))
    assert wait_for(lambda: len(_runs(test_dir, "w")) >= 120, timeout=300, interval=0.5), _log(test_dir, "w1")[-3000:]
    _stop(processes[0])
    order = [key.split("-")[0] for _, _, key in sorted(
        (float(start), pid, key) for pid, start, key in
        (line.split(" ", 2) for line in (test_dir / "w.started").read_text().splitlines()))]
    assert sorted(order) == ["critical"] * 60 + ["default"] * 60  # every job ran once
    # The first 50 starts come while both queues have a backlog (critical has 60): 4:1 is 40 of 50.
    share = order[:50].count("critical") / 50
    assert 0.6 <= share <= 0.92, order[:50]
    # Once critical is empty, default takes every thread: the last 10 starts are all default.
    assert order[-10:] == ["default"] * 10


FN_RUNS: list[str] = []


def lt_fn(tag: str) -> None:
    FN_RUNS.append(tag)


def test_azjobs_limits_shows_the_holders_now_and_recent_starts_and_throttles(client, raw_queue, limits_table,
                                                                             test_dir):
    import io
    import json as json_module

    from azjobs.cli import main as cli_main
    from azjobs.hosting import executor as hosted_executor
    from azjobs.model.outcome import MessageInfo

    q = unique_queue("lcli")
    raw_queue(q)
    client.ensure_queue(q)
    table = LimitTable.from_connection(client.connection, limits_table)
    taken = slots.acquire(table, Limit("lt-shared", 1, None, 600, True), "",
                          {"Holder": "elsewhere:42", "Job": "lt.held", "JobId": "job-🦄/1"},
                          lambda: datetime.now(timezone.utc))
    assert isinstance(taken, slots.Slot)
    limit_jobs.held.options(queue=q).enqueue("cli", 0.1)
    limit_jobs.rated.options(queue=q).enqueue("cli")
    executor = hosted_executor(client=client, settings=QueueSettings())
    outcomes = []
    for message in raw_queue(q).receive_messages(max_messages=2, visibility_timeout=60):
        outcomes.append(executor.execute(message.content, MessageInfo(q, message.id, message.dequeue_count)).outcome)
    executor.close()  # the counts are written
    assert sorted(o.value for o in outcomes) == ["succeeded", "throttled"]
    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["limits", "-i", JOBS, "--json"], stdout=out, stderr=err) == 0, err.getvalue()
    rows = {row["limit"]: row for row in map(json_module.loads, out.getvalue().splitlines())}
    shared = rows["lt-shared"]
    assert shared["shared"] and shared["jobs"] == ["lt.held", "lt.held_long"]
    assert shared["holding"] == 1 and shared["holders"][0]["job_id"] == "job-🦄/1"
    assert shared["holders"][0]["holder"] == "elsewhere:42"
    assert (shared["recent_started"], shared["recent_throttled"]) == (0, 1)
    rated = rows["lt.rated"]
    assert rated["rate_limit"] == "5/s" and rated["window_starts"] == 1 and rated["recent_started"] == 1
    assert rows["lt.capped"]["holding"] == 0 and rows["lt.capped"]["concurrency"] == 2


def test_azjobs_stats_shows_throttled_deliveries_per_queue(client, raw_queue, limits_table, test_dir):
    import io
    import json as json_module

    from azjobs.cli import main as cli_main
    from azjobs.hosting import executor as hosted_executor
    from azjobs.model.outcome import MessageInfo

    q, quiet = unique_queue("lstat"), unique_queue("lquiet")
    raw_queue(q), raw_queue(quiet)
    client.ensure_queue(q), client.ensure_queue(quiet)
    table = LimitTable.from_connection(client.connection, limits_table)
    taken = slots.acquire(table, Limit("lt-shared", 1, None, 600, True), "", {"Holder": "elsewhere:42"},
                          lambda: datetime.now(timezone.utc))
    assert isinstance(taken, slots.Slot)
    for i in range(3):
        limit_jobs.held.options(queue=q).enqueue(f"s{i}", 0.1)
    executor = hosted_executor(client=client, settings=QueueSettings())
    for message in raw_queue(q).receive_messages(max_messages=3, visibility_timeout=60):
        assert executor.execute(message.content, MessageInfo(q, message.id, 1)).outcome is Outcome.THROTTLED
    executor.close()
    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["stats", "-q", q, "-q", quiet, "--limits", "--json"], stdout=out, stderr=err) == 0, \
        err.getvalue()
    assert json_module.loads(out.getvalue())["throttled"]["queues"] == {q: 3, quiet: 0}
    out = io.StringIO()
    assert cli_main(["stats", "-q", q, "--limits"], stdout=out, stderr=err) == 0
    head, line = out.getvalue().splitlines()[:2]
    assert head.split()[-1] == "THROTTLED/5m" and line.split()[-1] == "3"


def test_the_dashboard_overview_shows_throttled_deliveries_per_queue(client, raw_queue, limits_table, test_dir,
                                                                    sessions_table):
    import re

    from azjobs.dashboard import create_app
    from azjobs.hosting import executor as hosted_executor
    from azjobs.model.outcome import MessageInfo
    from tests.integration.dashboard_support import ADMIN_KEY, Browserless, Served

    q, quiet = unique_queue("ldash"), unique_queue("lquiet")
    raw_queue(q), raw_queue(quiet)
    client.ensure_queue(q), client.ensure_queue(quiet)
    table = LimitTable.from_connection(client.connection, limits_table)
    taken = slots.acquire(table, Limit("lt-shared", 1, None, 600, True), "", {"Holder": "elsewhere:42"},
                          lambda: datetime.now(timezone.utc))
    assert isinstance(taken, slots.Slot)
    for i in range(2):
        limit_jobs.held.options(queue=q).enqueue(f"d{i}", 0.1)
    executor = hosted_executor(client=client, settings=QueueSettings())
    for message in raw_queue(q).receive_messages(max_messages=2, visibility_timeout=60):
        assert executor.execute(message.content, MessageInfo(q, message.id, 1)).outcome is Outcome.THROTTLED
    executor.close()
    app = create_app(client.connection, admin_key=ADMIN_KEY, queues=[q, quiet], background_sampling=False)
    with Served(app) as server:
        page = Browserless(server.port).get("/")
    assert page.status == 200 and "<th>Throttled (5 min)</th>" in page.text
    rows = dict(re.findall(r'<tr data-queue="([^"]+)">(.*?)</tr>', page.text))
    assert re.search(r'class="num throttled">2<', rows[q]) and re.search(r'class="num throttled">0<', rows[quiet])


def test_a_job_id_too_long_for_a_table_property_still_takes_a_slot_and_runs(client, raw_queue, limits_table, test_dir):
    from azjobs.hosting import executor as hosted_executor
    from azjobs.model.envelope import Envelope
    from azjobs.model.outcome import MessageInfo

    q = unique_queue("llong")
    long_id = "j" * 33_000  # 66,000 bytes as UTF-16: over a property's 64 KiB, and the message still fits
    body = Envelope.build("lt.capped", ("long", 0.01), id=long_id).encode("base64")
    executor = hosted_executor(client=client, settings=QueueSettings())
    result = executor.execute(body, MessageInfo(q, "m-1", 1))
    assert result.outcome is Outcome.SUCCEEDED, result.detail
    assert [key for *_, key in _runs(test_dir, "capped")] == ["long"]
    table = LimitTable.from_connection(client.connection, limits_table)
    assert table.query("PartitionKey eq @pk", {"pk": slot_partition("lt.capped", "")}) == []  # given back


def test_a_limited_run_costs_3_table_calls_for_a_slot_and_2_for_a_rate(client, limits_table, test_dir, monkeypatch):
    from azjobs.hosting import executor as hosted_executor
    from azjobs.model.envelope import Envelope
    from azjobs.model.outcome import MessageInfo

    q = unique_queue("lcost")
    executor = hosted_executor(client=client, settings=QueueSettings())
    warm = Envelope.build("lt.capped", ("warm", 0.0)).encode("base64")
    assert executor.execute(warm, MessageInfo(q, "m-0", 1)).outcome is Outcome.SUCCEEDED  # the table exists now
    calls: list[str] = []
    real = LimitTable._call

    def counted(self, method, *args, **kwargs):
        calls.append(method)
        return real(self, method, *args, **kwargs)

    monkeypatch.setattr(LimitTable, "_call", counted)
    capped = Envelope.build("lt.capped", ("cost", 0.0)).encode("base64")
    assert executor.execute(capped, MessageInfo(q, "m-1", 1)).outcome is Outcome.SUCCEEDED
    assert calls == ["query_entities", "create_entity", "delete_entity"]
    calls.clear()
    rated = Envelope.build("lt.rated", ("cost",)).encode("base64")
    assert executor.execute(rated, MessageInfo(q, "m-2", 1)).outcome is Outcome.SUCCEEDED
    assert calls == ["get_entity", "create_entity"]
    calls.clear()
    plain = Envelope.build("lt.pause", ("cost", "free", 0.0)).encode("base64")
    assert executor.execute(plain, MessageInfo(q, "m-3", 1)).outcome is Outcome.SUCCEEDED
    assert calls == []  # a job without limits costs nothing
