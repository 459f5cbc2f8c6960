"""Periodic jobs against Azurite: several workers fire each tick once, a missed tick fires once past due,
and a generated Functions timer handler enqueues the job."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import azure.functions as func
from azure.functions import meta
from azure.functions.timer import TimerRequestConverter

import azjobs
from azjobs.message import Envelope, parse_time
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
    assert delivery.ran and CALLS == [("eu", envelope.scheduled_at, True)]
