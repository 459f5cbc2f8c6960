"""Declaring periodic jobs, the tick rules, the envelope fields and the generated timer triggers (no storage)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import azure.functions as func
import pytest

import azjobs
from azjobs.model.envelope import Envelope
from azjobs.schedules import declarations
from azjobs.schedules.ncrontab import ScheduleError, parse
from azjobs.schedules.declarations import schedules, time_zone, timer_tick
from azjobs.schedules.ticks import LEASE_S, MIN_LEFT_S, Fire, Hold, Status, decide
from tests.functions_support import fresh_app, functions_of

UTC = timezone.utc


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def report(region: str = "eu", full: bool = False) -> None:
    """A job body; these tests never run it."""


@pytest.fixture(autouse=True)
def own_schedules(monkeypatch):
    """Each test declares into an empty schedule book (the global one is restored afterwards)."""
    monkeypatch.setattr(schedules, "_items", {})


@pytest.fixture
def reg():
    return azjobs.Registry()


# -- declaration ---------------------------------------------------------------------------------
def test_job_schedule_option_declares_one_periodic_job_named_after_the_job(reg):
    job = azjobs.job(queue="reports", schedule="0 */5 * * * *", registry=reg, name="reports.daily")(report)
    [item] = schedules.for_registry(reg)
    assert (item.name, item.schedule, item.job, item.args) == ("reports.daily", "0 */5 * * * *", job.job, ())
    assert job("x") is None  # still a plain function


def test_several_schedules_and_periodic_with_arguments(reg):
    job = azjobs.job(queue="reports", schedule=["0 0 7 * * *", "0 0 19 * * *"], registry=reg, name="r")(report)
    eu = azjobs.periodic("0 0 6 * * Mon-Fri", job, args=("eu",), kwargs={"full": True}, name="report-eu")
    us = azjobs.periodic("0 0 12 * * Mon-Fri", job, args=("us",))
    names = [item.name for item in schedules.for_registry(reg)]
    assert len(names) == 4 and "report-eu" in names and us.name.startswith("r:")
    assert (eu.args, dict(eu.kwargs)) == (("eu",), {"full": True})


def test_a_class_job_may_set_schedule(reg):
    import types

    module = types.ModuleType("class_jobs")
    module.reg, module.azjobs = reg, azjobs
    exec("class Cleanup(azjobs.Job):\n"
         "    registry = reg\n"
         "    queue = 'maintenance'\n"
         "    schedule = '0 0 3 * * *'\n"
         "    def perform(self) -> None: ...\n", module.__dict__)
    [item] = schedules.for_registry(reg)
    assert (item.schedule, item.job) == ("0 0 3 * * *", module.Cleanup.job)


@pytest.mark.parametrize("schedule, message", [
    ("* * * *", "has 4 field(s)"),
    ("0 99 * * * *", "minute 99 is out of range 0..59"),
    ("0 0 0 30 2 *", "never fires"),
    (42, "an NCRONTAB string"),
])
def test_a_bad_schedule_fails_at_declaration_and_leaves_no_job_behind(reg, schedule, message):
    with pytest.raises(azjobs.ConfigurationError) as caught:
        azjobs.job(queue="reports", schedule=schedule, registry=reg, name="bad.job")(report)
    assert message in str(caught.value) and "bad.job" in str(caught.value)
    assert "bad.job" not in reg and not list(schedules)


def test_periodic_checks_arguments_when_declared(reg):
    job = azjobs.job(queue="reports", registry=reg, name="r")(report)
    with pytest.raises(azjobs.ArgumentError, match="arguments do not fit job r"):
        azjobs.periodic("0 0 6 * * *", job, args=("eu", True, "extra"))
    with pytest.raises(azjobs.ArgumentError, match="args\\[0\\] is a builtins.object"):
        azjobs.periodic("0 0 6 * * *", job, args=(object(),))
    with pytest.raises(azjobs.ConfigurationError, match="args= is a tuple or list"):
        azjobs.periodic("0 0 6 * * *", job, args="eu")
    with pytest.raises(azjobs.ConfigurationError, match="needs a job declared with @azjobs.job"):
        azjobs.periodic("0 0 6 * * *", report)
    assert not list(schedules)


def test_two_different_periodic_jobs_cannot_share_a_name(reg):
    job = azjobs.job(queue="reports", registry=reg, name="r")(report)
    azjobs.periodic("0 0 6 * * *", job, name="morning")
    azjobs.periodic("0 0 6 * * *", job, name="morning")  # the same declaration again (a re-import) is fine
    with pytest.raises(azjobs.ConfigurationError, match="already declared"):
        azjobs.periodic("0 0 7 * * *", job, name="morning")


def test_app_setting_schedule_is_checked_when_set_and_read_when_used(reg, monkeypatch):
    monkeypatch.delenv("REPORT_SCHEDULE", raising=False)
    job = azjobs.job(queue="reports", schedule="%REPORT_SCHEDULE%", registry=reg, name="r")(report)
    [item] = schedules.for_registry(reg)
    with pytest.raises(azjobs.ConfigurationError, match="names app setting 'REPORT_SCHEDULE', which is not set"):
        item.expression
    monkeypatch.setenv("REPORT_SCHEDULE", "0 15 * * * *")
    assert item.expression.text == "0 15 * * * *"
    monkeypatch.setenv("OTHER_SCHEDULE", "0 0 25 * * *")
    with pytest.raises(ScheduleError, match="app setting OTHER_SCHEDULE: .*hour 25 is out of range"):
        azjobs.periodic("%OTHER_SCHEDULE%", job)


def test_time_zone_is_utc_unless_website_time_zone():
    assert time_zone({}) is UTC
    assert time_zone({"WEBSITE_TIME_ZONE": "UTC"}) is UTC
    assert time_zone({"WEBSITE_TIME_ZONE": "Europe/Paris"}).key == "Europe/Paris"
    with pytest.raises(azjobs.ConfigurationError, match="'Nowhere/City' is not a time zone"):
        time_zone({"WEBSITE_TIME_ZONE": "Nowhere/City"})


# -- what a tick enqueues ------------------------------------------------------------------------
def test_a_tick_envelope_carries_the_tick_and_a_job_id_derived_from_it(reg):
    job = azjobs.job(queue="reports", registry=reg, name="r")(report)
    item = azjobs.periodic("0 0 6 * * *", job, args=("eu",), name="morning")
    first = item.envelope(utc(2026, 11, 28, 6), past_due=True)
    data = json.loads(first.to_json())
    assert data["scheduled_at"] == "2026-11-28T06:00:00.000Z" and data["past_due"] is True
    assert (data["job"], data["args"], data["queue"], data["azjobs"]) == ("r", ["eu"], "reports", 1)
    assert item.envelope(utc(2026, 11, 28, 6)).id == first.id  # one tick, one job id
    assert item.envelope(utc(2026, 11, 29, 6)).id != first.id
    again = Envelope.from_json(first.to_json())
    assert (again.scheduled_at, again.past_due) == ("2026-11-28T06:00:00.000Z", True)


def test_envelope_schedule_fields_are_optional_and_read_tolerantly():
    plain = Envelope.build("j", (1,), queue="q")
    assert "scheduled_at" not in plain.to_dict() and "past_due" not in plain.to_dict()
    data = plain.to_dict() | {"scheduled_at": "not a time", "past_due": "yes"}
    decoded = Envelope.from_dict(data)
    assert (decoded.scheduled_at, decoded.past_due) == (None, False)


# -- the tick rules (a worker holding the lease) ---------------------------------------------------
EVERY_SECOND = parse("* * * * * *")
HOURLY = parse("0 0 * * * *")


def test_no_status_fires_the_tick_and_starts_the_status():
    assert decide(None, HOURLY, UTC, tick=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 10)).fires == [
        Fire(utc(2026, 1, 1, 10))]
    startup = decide(None, HOURLY, UTC, now=utc(2026, 1, 1, 10, 30))
    assert startup.fires == [] and startup.cursor == utc(2026, 1, 1, 10, 30)


def test_a_tick_already_at_or_behind_the_cursor_is_not_fired_again():
    status = Status(schedule=HOURLY.text, cursor=utc(2026, 1, 1, 10))
    assert decide(status, HOURLY, UTC, tick=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 10, 0, 1)).nothing
    assert decide(status, HOURLY, UTC, tick=utc(2026, 1, 1, 9), now=utc(2026, 1, 1, 10)).nothing


def test_the_next_tick_fires_on_time():
    status = Status(schedule=HOURLY.text, cursor=utc(2026, 1, 1, 10))
    decision = decide(status, HOURLY, UTC, tick=utc(2026, 1, 1, 11), now=utc(2026, 1, 1, 11))
    assert decision.fires == [Fire(utc(2026, 1, 1, 11))] and decision.cursor == utc(2026, 1, 1, 11)


def test_ticks_missed_while_no_worker_ran_fire_once_past_due_at_start_up():
    status = Status(schedule=HOURLY.text, cursor=utc(2026, 1, 1, 10))
    decision = decide(status, HOURLY, UTC, now=utc(2026, 1, 1, 13, 30))
    assert decision.fires == [Fire(utc(2026, 1, 1, 11), past_due=True, missed=3)]
    assert decision.cursor == utc(2026, 1, 1, 13)  # 11:00, 12:00 and 13:00 are done with that one fire
    assert decide(Status(HOURLY.text, decision.cursor), HOURLY, UTC, now=utc(2026, 1, 1, 13, 40)).nothing


def test_late_ticks_between_the_cursor_and_a_tick_each_fire_past_due_before_it():
    status = Status(schedule=EVERY_SECOND.text, cursor=utc(2026, 1, 1, 10, 0, 0))
    decision = decide(status, EVERY_SECOND, UTC, tick=utc(2026, 1, 1, 10, 0, 3), now=utc(2026, 1, 1, 10, 0, 3, 500))
    assert decision.fires == [Fire(utc(2026, 1, 1, 10, 0, 1), past_due=True, missed=1),
                              Fire(utc(2026, 1, 1, 10, 0, 2), past_due=True, missed=1), Fire(utc(2026, 1, 1, 10, 0, 3))]
    assert decision.cursor == utc(2026, 1, 1, 10, 0, 3)


def test_ticks_missed_past_the_late_limit_fire_once_together():
    status = Status(schedule=EVERY_SECOND.text, cursor=utc(2026, 1, 1, 10, 0, 0))
    now = utc(2026, 1, 1, 10, 0, 20)  # the lease of a worker that died was held until 10:00:15
    decision = decide(status, EVERY_SECOND, UTC, tick=utc(2026, 1, 1, 10, 0, 20), now=now,
                      late_limit=timedelta(seconds=10))
    assert decision.fires[0] == Fire(utc(2026, 1, 1, 10, 0, 1), past_due=True, missed=9)  # 10:00:01 .. 10:00:09
    assert [f.tick.second for f in decision.fires[1:]] == list(range(10, 21))
    assert all(f.past_due for f in decision.fires[1:-1]) and not decision.fires[-1].past_due
    # Each fire says where the cursor stands once it is sent (a hold that stops after it records that much).
    assert [f.cursor.second for f in decision.fires] == list(range(9, 21))


def test_a_changed_expression_starts_over_without_past_due():
    status = Status(schedule="0 0 * * * *", cursor=utc(2026, 1, 1, 1))
    assert decide(status, parse("0 30 * * * *"), UTC, now=utc(2026, 1, 2)).fires == []


def test_status_round_trips_and_unknown_content_counts_as_no_history():
    status = Status(schedule=HOURLY.text, cursor=utc(2026, 1, 1, 10), last={"tick": "x"})
    assert Status.from_json(status.to_json()) == status
    assert Status.from_json(b"") is None and Status.from_json(b"{not json") is None
    assert Status.from_json(b'{"azjobs_schedule": 99}') is None


# -- Functions: the generated timer triggers --------------------------------------------------------
def test_blueprint_generates_one_timer_trigger_per_periodic_job(reg):
    job = azjobs.job(queue="reports", schedule="0 */5 * * * *", registry=reg, name="example.Reports.daily")(report)
    azjobs.periodic("%EU_REPORT%", job, args=("eu",), name="report-eu")
    app = func.FunctionApp()
    app.register_functions(azjobs.blueprint(registry=reg, workflows=False))
    timers = {}
    for function in functions_of(app):
        doc = json.loads(function.get_function_json())
        [binding] = doc["bindings"]
        if binding["type"] == "timerTrigger":
            timers[function.get_function_name()] = binding
    assert set(timers) == {"azjobs_timer_example_reports_daily", "azjobs_timer_report_eu"}
    daily = timers["azjobs_timer_example_reports_daily"]
    assert daily["schedule"] == "0 */5 * * * *" and daily["name"] == "timer" and daily["direction"] == "IN"
    # The host's default, stated: the monitor on for a schedule a minute or more apart; runOnStartup left off.
    assert daily["useMonitor"] is True and "runOnStartup" not in daily
    assert timers["azjobs_timer_report_eu"]["schedule"] == "%EU_REPORT%"  # the host resolves the setting
    assert "useMonitor" not in timers["azjobs_timer_report_eu"]  # so it applies its default to what it resolves


def test_a_timer_firing_more_than_once_a_minute_is_not_monitored_as_on_the_host(reg):
    azjobs.job(queue="reports", schedule="*/20 * * * * *", registry=reg, name="often")(report)
    app = func.FunctionApp()
    app.register_functions(azjobs.blueprint(registry=reg, workflows=False))
    (timer,) = [b for f in functions_of(app) for b in json.loads(f.get_function_json())["bindings"]
                if b["type"] == "timerTrigger"]
    assert timer["schedule"] == "*/20 * * * * *" and timer["useMonitor"] is False


def test_blueprint_schedules_false_leaves_the_timers_out(reg):
    azjobs.job(queue="reports", schedule="0 */5 * * * *", registry=reg, name="r")(report)
    app = fresh_app(registry=reg, schedules=False, workflows=False)
    assert [f.get_function_name() for f in functions_of(app)] == ["azjobs_reports"]


def test_timer_function_names_are_host_valid():
    from azjobs.functions.blueprint import FUNCTION_NAME_RULE, timer_function_name_for

    for name in ("a.b.C", "x" * 300, "über:weird name", "9lives"):
        generated = timer_function_name_for(name)
        assert FUNCTION_NAME_RULE.match(generated) and len(generated) <= 128


def test_blueprint_queues_restricts_timers_too(reg):
    azjobs.job(queue="reports", schedule="0 */5 * * * *", registry=reg, name="r")(report)
    azjobs.job(queue="emails", registry=reg, name="e")(report)
    app = fresh_app(["emails"], registry=reg, workflows=False)
    assert [f.get_function_name() for f in functions_of(app)] == ["azjobs_emails"]


def test_timer_tick_uses_the_hosts_schedule_status_or_the_nearest_occurrence(reg):
    job = azjobs.job(queue="reports", registry=reg, name="r")(report)
    item = azjobs.periodic("0 */5 * * * *", job)
    now = utc(2026, 11, 28, 14, 5, 0, 300000)
    assert timer_tick(item, now, {}, UTC) == utc(2026, 11, 28, 14, 5)
    assert timer_tick(item, utc(2026, 11, 28, 14, 4, 59, 900000), {}, UTC) == utc(2026, 11, 28, 14, 5)  # early
    status = {"Last": "2026-11-28T13:00:00+00:00", "Next": "2026-11-28T13:05:00+00:00"}
    assert timer_tick(item, now, status, UTC) == utc(2026, 11, 28, 13, 5)  # past due: the missed one
    assert timer_tick(item, now, {"Next": "2026-11-28T14:10:00+00:00"}, UTC) == utc(2026, 11, 28, 14, 5)


def test_the_schedule_module_keeps_no_state_between_declarations():
    assert declarations.schedules is schedules and len(schedules) == 0


# -- the worker and the command ---------------------------------------------------------------------
def test_a_worker_fires_the_schedules_of_jobs_on_its_queues_unless_told_not_to(reg, monkeypatch):
    from azjobs.hosting import executor as hosted_executor
    from azjobs.runtime.worker import Worker

    monkeypatch.delenv("WEBSITE_TIME_ZONE", raising=False)
    azjobs.job(queue="reports", schedule="0 */5 * * * *", registry=reg, name="r")(report)
    azjobs.job(queue="emails", schedule="0 0 * * * *", registry=reg, name="e")(report)
    client = azjobs.Client(azjobs.storage.connection.azurite_connection_string(queue_port=1))  # never called here
    executor = hosted_executor(registry=reg, client=client)
    worker = Worker(["reports"], executor=executor)
    assert [item.name for item in worker._scheduler.items] == ["r"]
    assert Worker(["reports"], executor=executor, schedules=False)._scheduler is None
    assert Worker(["reports"], executor=executor, burst=True)._scheduler is None
    assert Worker(["images"], executor=executor)._scheduler is None


def test_the_cli_passes_no_schedules_to_the_worker():
    from azjobs.cli import build_parser

    assert build_parser().parse_args(["-q", "reports", "--no-schedules"]).no_schedules is True
    assert build_parser().parse_args(["-q", "reports"]).no_schedules is False


def test_schedules_listing_shows_next_fire_times_and_the_last_fire(reg, monkeypatch):
    import io

    from azjobs.cli.schedules import _text, describe

    job = azjobs.job(queue="reports", registry=reg, name="r")(report)
    azjobs.periodic("0 0 7 * * Mon-Fri", job, args=("eu",), kwargs={"full": True}, name="morning")
    azjobs.periodic("%UNSET_SCHEDULE_X%", job, name="broken")
    monkeypatch.delenv("UNSET_SCHEDULE_X", raising=False)
    last = Status(schedule="0 0 7 * * Mon-Fri", cursor=utc(2026, 11, 27, 7),
                  last={"tick": "2026-11-27T07:00:00.000Z", "fired_at": "2026-11-27T07:00:00.120Z", "job_id": "j1",
                        "past_due": True, "by": "host:1"})

    def read(name):
        if name == "broken":
            raise ConnectionError("storage down")
        return last

    rows, ok = describe(schedules.for_registry(reg), UTC, 3, utc(2026, 11, 27, 12), read)
    assert not ok
    out = io.StringIO()
    _text(rows, "UTC", out)
    text = out.getvalue()
    assert "morning\n  job       r(\"eu\", full=true) on queue reports\n  schedule  0 0 7 * * Mon-Fri\n" in text
    assert ("  next      2026-11-30T07:00:00.000Z, 2026-12-01T07:00:00.000Z, 2026-12-02T07:00:00.000Z\n"
            "  last      tick 2026-11-27T07:00:00.000Z (past due), fired 2026-11-27T07:00:00.120Z by host:1, job j1\n"
            ) in text
    assert "names app setting 'UNSET_SCHEDULE_X', which is not set" in text and "last      unknown: " in text


class FakeLease:
    """A blob lease whose renewals raise ``errors`` in turn, then succeed."""

    def __init__(self, errors=()) -> None:
        self.errors = list(errors)
        self.renewed = 0

    def renew(self) -> None:
        self.renewed += 1
        if self.errors:
            raise self.errors.pop(0)


def test_a_hold_fires_only_while_enough_of_its_lease_is_confirmed():
    now = [1000.0]
    hold = Hold("s", FakeLease(), renew_after_s=3600, clock=lambda: now[0])
    try:
        assert hold.held
        now[0] += LEASE_S - MIN_LEFT_S  # just enough left
        assert hold.held
        now[0] += 0.001  # less than MIN_LEFT_S left, unless a renewal got through: no new fire
        assert not hold.held and not hold.lost
    finally:
        hold.close()


def test_a_renewal_refused_by_the_service_loses_the_hold_for_good():
    from azure.core.exceptions import HttpResponseError

    refused = HttpResponseError(message="The lease ID specified did not match the lease ID for the blob.")
    refused.status_code = 409
    lease = FakeLease([refused])
    hold = Hold("s", lease, renew_after_s=0.0)
    hold._thread.join(10)
    assert lease.renewed == 1 and hold.lost and not hold.held
    hold.close()
