"""Periodic jobs against Azurite: several workers fire each tick once, a missed tick fires once past due,
a generated Functions timer handler enqueues the job, and a scheduler keeps its lease while sends are slow
(renewed, progress recorded per hold) and stops firing when it loses it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import azure.functions as func
from azure.functions import meta
from azure.functions.timer import TimerRequestConverter

import azjobs
from azjobs.model.envelope import Envelope, format_time, parse_time
from azjobs.schedules.declarations import schedules
from tests.conftest import unique_queue
from tests.functions_support import functions_of, host_like_settle, receive_one
from tests.integration.worker_support import ROOT, wait_for

JOBS = "tests.jobs.schedule_jobs"


class Schedule:
    """One test's periodic job: its queue, name, worker processes and what they fired."""

    def __init__(self, connection_string: str, test_dir: Path, processes: list, expression: str = "* * * * * *"):
        self.connection_string = connection_string
        self.dir = test_dir
        self.processes = processes
        self.queue = unique_queue("sched")
        self.name = f"sched-{uuid.uuid4().hex[:12]}"
        self.env = dict(os.environ, AzureWebJobsStorage=connection_string, AZJOBS_TEST_DIR=str(test_dir),
                        PYTHONPATH=str(ROOT), AZJOBS_SCHEDULE_QUEUE=self.queue, AZJOBS_SCHEDULE=expression,
                        AZJOBS_SCHEDULE_JOB=self.name)
        self.env.pop("WEBSITE_TIME_ZONE", None)

    def spawn(self, name: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "azjobs", "-i", JOBS, "-q", self.queue, "--create",
                                    "--grace", "5"], cwd=self.dir, env=self.env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def runs(self) -> list[tuple[str, bool, str]]:
        path = self.dir / "ticks.runs"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(tick, past_due == "1", job_id) for tick, past_due, job_id, _ in (line.split() for line in lines)]

    def left_in_queue(self) -> list[tuple[str, bool, str]]:
        """Fired but not run before the workers stopped: read from the queue itself."""
        from azure.storage.queue import QueueClient

        queue = QueueClient.from_connection_string(self.connection_string, self.queue)
        out = []
        while True:
            batch = list(queue.receive_messages(max_messages=32, messages_per_page=32, visibility_timeout=300))
            if not batch:
                return out
            for message in batch:
                envelope = Envelope.decode(message.content)
                out.append((envelope.scheduled_at, envelope.past_due, envelope.id))

    def fired(self) -> list[tuple[str, bool, str]]:
        return sorted(self.runs() + self.left_in_queue())


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(30)


def _seconds(ticks) -> list[int]:
    return [int(parse_time(tick).timestamp()) for tick in ticks]


def test_three_workers_fire_each_tick_of_an_every_second_schedule_exactly_once(connection_string, test_dir,
                                                                                processes):
    schedule = Schedule(connection_string, test_dir, processes)
    workers = [schedule.spawn(f"worker{i}") for i in range(3)]
    assert wait_for(lambda: all("scheduler started" in schedule.log(f"worker{i}") for i in range(3)), 60), \
        [schedule.log(f"worker{i}") for i in range(3)]
    time.sleep(10)
    assert [_stop(worker) for worker in workers] == [0, 0, 0], [schedule.log(f"worker{i}") for i in range(3)]
    assert all("scheduler stopped" in schedule.log(f"worker{i}") for i in range(3))  # with the worker, on SIGTERM

    fired = schedule.fired()
    ticks = [tick for tick, _, _ in fired]
    seconds = _seconds(ticks)
    assert len(ticks) == len(set(ticks)), f"a tick fired twice: {ticks}"
    assert len({job_id for _, _, job_id in fired}) == len(fired)
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), f"a tick was skipped: {ticks}"
    assert len(seconds) >= 10
    # The lease went round: more than one worker fired ticks.
    firing = [schedule.log(f"worker{i}").count(" enqueued job ")
              for i in range(3)]
    assert sum(1 for count in firing if count) >= 2, firing


def test_a_worker_killed_and_restarted_fires_the_missed_ticks_once_past_due(connection_string, test_dir, processes):
    schedule = Schedule(connection_string, test_dir, processes, "*/2 * * * * *")
    worker = schedule.spawn("first")
    assert wait_for(lambda: len(schedule.runs()) >= 2, 60), schedule.log("first")
    # Kill it (SIGKILL) while it sleeps between ticks, holding no lease: just after it recorded a tick, when
    # the next one is more than half a second away (a loaded machine may record a tick late).
    def idle() -> bool:
        recorded = re.findall(r"tick (\S+) enqueued job", schedule.log("first"))
        return bool(recorded) and time.time() + 0.1 < parse_time(recorded[-1]).timestamp() + 2 - 0.5

    assert wait_for(idle, 30, interval=0.01), schedule.log("first")
    time.sleep(0.1)  # the lease is released right after the line is written
    worker.kill()
    worker.wait(10)
    time.sleep(5)  # no worker runs: ticks are missed
    restarted = schedule.spawn("restarted")
    assert wait_for(lambda: any(past_due for _, past_due, _ in schedule.runs()), 40), schedule.log("restarted")
    assert wait_for(lambda: [late for _, late, _ in sorted(schedule.runs())[-2:]] == [False, False], 20)
    assert _stop(restarted) == 0, schedule.log("restarted")

    fired = schedule.fired()
    ticks = [tick for tick, _, _ in fired]
    assert len(ticks) == len(set(ticks)), f"a tick fired twice: {ticks}"
    past_due = [tick for tick, late, _ in fired if late]
    assert len(past_due) == 1, f"the missed ticks must fire once: {fired}"
    before = [tick for tick in ticks if tick < past_due[0]]
    after = [tick for tick in ticks if tick > past_due[0]]
    seconds_before, [missed], seconds_after = _seconds(before), _seconds(past_due), _seconds(after)
    assert seconds_before == list(range(seconds_before[0], seconds_before[0] + 2 * len(seconds_before), 2))
    assert missed == seconds_before[-1] + 2  # the first tick no worker fired, as the host's status calls Next
    # The ticks between it and the first one after the restart were not fired one by one: that one fire
    # stands for all of them, and the restarted worker's log says how many.
    count = (seconds_after[0] - missed) // 2
    assert count >= 2
    assert f"schedule {schedule.name}: {count} ticks from {past_due[0]} were not fired in time" in \
        schedule.log("restarted")

    # `azjobs schedules` shows the schedule with its next fire times and the last recorded fire.
    listed = subprocess.run([sys.executable, "-m", "azjobs", "schedules", "-i", JOBS, "--json"], cwd=test_dir,
                            env=schedule.env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["name"] == schedule.name and row["queue"] == schedule.queue and len(row["next"]) == 3
    assert row["last"]["tick"] == ticks[-1] and row["last"]["past_due"] is False


CALLS: list = []


def nightly(region: str) -> None:
    CALLS.append((region, azjobs.current_job().scheduled_at, azjobs.current_job().past_due))


def test_a_functions_timer_handler_invoked_with_a_timer_request_enqueues_the_job(client, raw_queue, monkeypatch):
    CALLS.clear()
    queue, reg = unique_queue("ftimer"), azjobs.Registry()
    monkeypatch.setattr(schedules, "_items", {})
    job = azjobs.job(queue=queue, registry=reg, name="nightly")(nightly)
    item = azjobs.periodic("0 30 2 * * *", job, args=("eu",), name="nightly-eu")
    app = func.FunctionApp()
    app.register_functions(azjobs.blueprint(registry=reg))
    [timer_function] = [f for f in functions_of(app) if f.get_trigger().get_binding_name() == "timerTrigger"]
    assert timer_function.get_function_name() == "azjobs_timer_nightly_eu"

    # What the host sends for a past-due invocation (useMonitor on), decoded by the library's own converter.
    missed = (datetime.now(timezone.utc) - timedelta(days=1)).replace(hour=2, minute=30, second=0, microsecond=0)
    body = {"Schedule": {"AdjustForDST": True}, "IsPastDue": True,
            "ScheduleStatus": {"Last": (missed - timedelta(days=1)).isoformat(), "Next": missed.isoformat(),
                               "LastUpdated": (missed - timedelta(days=1)).isoformat()}}
    request = TimerRequestConverter.decode(meta.Datum(json.dumps(body), "json"), trigger_metadata={})
    assert isinstance(request, func.TimerRequest) and request.past_due
    result = timer_function.get_user_function()(**{timer_function.get_trigger().name: request})
    asyncio.run(result) if asyncio.iscoroutine(result) else None

    queue_client = raw_queue(queue)
    message = receive_one(queue_client)
    envelope = Envelope.from_json(base64.b64decode(message.content))
    assert (envelope.job, envelope.args, envelope.queue) == ("nightly", ("eu",), queue)
    assert parse_time(envelope.scheduled_at) == missed and envelope.past_due is True
    assert envelope.id == item.tick_id(missed)
    # The scheduled run goes through the generated queue trigger like any job.
    delivery = host_like_settle(app, queue_client, message)
    assert delivery.ran and CALLS == [("eu", parse_time(envelope.scheduled_at), True)]


def _sent_ticks(connection_string: str, queue: str) -> list[str]:
    """The ``scheduled_at`` of every message on ``queue`` (received, so each is read once)."""
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(connection_string, queue)
    ticks = []
    while batch := list(client.receive_messages(max_messages=32, messages_per_page=32, visibility_timeout=300)):
        ticks += [Envelope.decode(message.content).scheduled_at for message in batch]
    return ticks


def test_a_tick_whose_send_outlasts_the_schedule_lease_is_fired_once_by_two_schedulers(connection_string, azurite,
                                                                                       monkeypatch):
    from devtools.proxy import FaultProxy
    from azjobs.schedules.declarations import Periodic
    from azjobs.schedules.scheduler import Scheduler
    from azjobs.schedules.ticks import LEASE_S

    monkeypatch.delenv("WEBSITE_TIME_ZONE", raising=False)
    queue, registry = unique_queue("slowtick"), azjobs.Registry()
    job = azjobs.job(queue=queue, registry=registry, name="slow_tick")(nightly)
    item = Periodic(name=f"slow-{uuid.uuid4().hex[:12]}", schedule="* * * * * *", job=job)
    with FaultProxy(azurite.queue_port, reconnect_upstream=True) as proxy:
        slow = azjobs.Client(proxy.connection_string(connection_string))  # its sends go through the proxy
        fast = azjobs.Client(connection_string)
        fast.ensure_queue(queue)
        first = Scheduler([item], slow).start()
        second = None
        try:
            assert wait_for(lambda: first.fired >= 2, 30)
            # The first scheduler's next send is held longer than the schedule's lease, by the network.
            delay_s = LEASE_S + 8
            proxy.fail("POST", "delay", delay_s=delay_s, times=1)
            second = Scheduler([item], fast).start()
            assert wait_for(lambda: proxy.faults["POST"] == 1, 30)
            held_from = time.monotonic()
            fired = first.fired
            # Until the held send is through, and the first scheduler (or the second) fired more ticks after it.
            assert wait_for(lambda: time.monotonic() - held_from > delay_s and first.fired + second.fired > fired + 3,
                            delay_s + 60)
        finally:
            first.stop()
            if second is not None:
                second.stop()
            slow.close()
            fast.close()
    ticks = _sent_ticks(connection_string, queue)
    assert len(ticks) >= 5
    assert len(ticks) == len(set(ticks)), f"a tick fired twice: {sorted(ticks)}"


class Firing:
    """One schedule firing its late ticks in one call: ``cursor`` is set ``late`` seconds before the tick, so the
    scheduler holding the lease fires the ``late`` ticks after it and the tick itself, one send each."""

    def __init__(self, connection_string: str, late: int, *, store_connection: str | None = None,
                 send_connection: str | None = None, **scheduler_options) -> None:
        from azjobs.schedules.declarations import Periodic
        from azjobs.schedules.scheduler import Scheduler
        from azjobs.schedules.ticks import Status, TickStore

        self.queue = unique_queue("late")
        self.registry = azjobs.Registry()
        job = azjobs.job(queue=self.queue, registry=self.registry, name="late_tick")(nightly)
        self.item = Periodic(name=f"late-{uuid.uuid4().hex[:12]}", schedule="* * * * * *", job=job)
        self.direct = TickStore(azjobs.Client(connection_string).connection)
        self.tick = datetime.now(timezone.utc).replace(microsecond=0)
        self.start = self.tick - timedelta(seconds=late)
        self.direct.ensure(self.item.name)
        self.direct.blob(self.item.name).upload_blob(Status("* * * * * *", self.start).to_json().encode(),
                                                     overwrite=True)
        self.client = azjobs.Client(send_connection or connection_string)
        self.client.ensure_queue(self.queue)
        store = TickStore(azjobs.Client(store_connection or connection_string).connection)
        self.scheduler = Scheduler([self.item], self.client, store=store, zone=timezone.utc, **scheduler_options)
        self.writes: list[datetime] = []
        write = store.write
        store.write = lambda name, status, lease: (write(name, status, lease), self.writes.append(status.cursor))

    def fire(self) -> bool:
        return self.scheduler._attempt(self.item, self.tick, self.tick)

    def cursor(self) -> datetime:
        return self.direct.read(self.item.name).cursor

    def close(self) -> None:
        self.client.close()
        self.scheduler.store.close()
        self.direct.close()


def test_a_scheduler_records_its_progress_after_each_hold_of_at_most_max_fires_ticks(connection_string):
    firing = Firing(connection_string, 12, max_fires=4)
    try:
        assert firing.fire()
        # 12 ticks: the oldest (more than 10 s late) once past due, ten late ones each on its own, then the tick
        ticks = sorted(_sent_ticks(connection_string, firing.queue))
        assert ticks == [format_time(firing.start + timedelta(seconds=n)) for n in range(1, 13)]
        assert firing.writes == [firing.start + timedelta(seconds=n) for n in (4, 8, 12)]  # three holds of 4 fires
        assert firing.scheduler.fired == 12 and firing.cursor() == firing.tick
    finally:
        firing.close()


def test_a_scheduler_whose_lease_is_taken_while_it_fires_stops_firing_and_records_nothing(connection_string, azurite,
                                                                                       caplog):
    from azure.storage.blob import BlobLeaseClient
    from devtools.proxy import FaultProxy

    with FaultProxy(azurite.queue_port, reconnect_upstream=True) as proxy:
        firing = Firing(connection_string, 9, send_connection=proxy.connection_string(connection_string))
        try:
            proxy.fail("POST", "delay", delay_s=3)  # each send takes 3 s: ten of them outlast the lease twice over

            def taken() -> None:  # an operator breaks the lease and another worker takes the schedule
                blob = firing.direct.blob(firing.item.name)
                BlobLeaseClient(blob).break_lease(lease_break_period=0)
                blob.acquire_lease(lease_duration=60)

            threading.Timer(1.0, taken).start()
            assert firing.fire()
        finally:
            firing.close()
    sent = _sent_ticks(connection_string, firing.queue)
    assert 1 <= len(sent) < 10, sent  # it stopped at its first renewal (after 7.5 s), refused
    assert firing.writes == [] and firing.cursor() == firing.start  # the schedule is the new holder's to record
    assert any(getattr(r, "action", "") == "schedule_lease_lost" for r in caplog.records)


def test_a_scheduler_that_cannot_renew_its_lease_stops_firing_before_it_may_have_run_out(connection_string, azurite,
                                                                                        caplog):
    from devtools.proxy import FaultProxy

    with FaultProxy(azurite.queue_port, reconnect_upstream=True) as queue_proxy, \
            FaultProxy(azurite.blob_port, reconnect_upstream=True) as blob_proxy:
        to_blobs = re.sub(r"BlobEndpoint=http://[^/;]+", f"BlobEndpoint={blob_proxy.endpoint}", connection_string)
        firing = Firing(connection_string, 9, store_connection=to_blobs,
                        send_connection=queue_proxy.connection_string(connection_string))
        try:
            queue_proxy.fail("POST", "delay", delay_s=3)
            threading.Timer(1.0, blob_proxy.cut).start()  # the blob endpoint is unreachable: no renewal gets through
            assert not firing.fire()  # nor the status write: a storage error, logged
        finally:
            firing.close()
    sent = _sent_ticks(connection_string, firing.queue)
    # A tick is fired only while 5 s of the 15 s lease are confirmed: sends start at 0, 3, 6 and 9 s at the latest.
    assert 1 <= len(sent) <= 4, sent
    assert any(getattr(r, "action", "") == "schedule_lease_lost" for r in caplog.records)
