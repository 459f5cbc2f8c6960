"""azjobs.testing.inline() and recording(): jobs run through the real core, in memory, with no storage.

Every test here runs with outbound connections refused (``no_network``), so a storage call anywhere
would fail the test instead of going unnoticed.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timedelta, timezone

import pytest

import azjobs
import azjobs.testing
from azjobs.state import JobStatus
from azjobs.storage.client import default_client
from tests.jobs import inline_jobs as ij


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt fails the test: inline mode must reach no storage."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"inline mode tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    ij.seen.clear()
    yield attempts
    assert attempts == []


def test_an_enqueued_job_has_run_when_enqueue_returns_and_result_and_wait_read_its_record(azjobs_inline):
    job_id = ij.greet.enqueue("Ada", punctuation="?")

    assert ij.seen == [("greet", "Ada")]
    record = azjobs.result(job_id)
    assert (record.status, record.return_value, record.attempts, record.job) == (
        JobStatus.SUCCESSFUL, "hello Ada?", 1, "tests.jobs.inline_jobs.greet")
    assert (list(record.args), record.kwargs) == (["Ada"], {"punctuation": "?"})
    assert azjobs.wait(job_id, timeout=0) == "hello Ada?"
    assert [(ran.job, ran.outcome, ran.value) for ran in azjobs_inline.runs] == [
        ("tests.jobs.inline_jobs.greet", "succeeded", "hello Ada?")]


def test_a_failing_job_runs_every_attempt_of_its_policy_then_is_failed_with_tracebacks_and_a_poison_record(
        azjobs_inline):
    job_id = ij.flaky.enqueue("k-1")

    assert ij.seen == [("flaky", 1), ("flaky", 2), ("flaky", 3)]  # max_retries=2: three attempts, no waiting
    record = azjobs.result(job_id)
    assert (record.status, record.attempts) == (JobStatus.FAILED, 3)
    assert [error.exception_class_path for error in record.errors] == ["builtins.ConnectionError"] * 3
    assert "mail server down for k-1" in record.errors[-1].traceback
    assert 'raise ConnectionError(f"mail server down for {key}")' in record.errors[-1].traceback
    with pytest.raises(azjobs.JobFailedError) as failed:
        azjobs.wait(job_id, timeout=0)
    assert failed.value.record.id == job_id
    [poison] = azjobs.testing.poisoned("inline-mail")
    assert (poison.envelope.id, poison.attempts, poison.error.type, poison.error.reason) == (
        job_id, 3, "ConnectionError", "job_failed")
    assert azjobs.testing.poisoned("inline-mail-poison") == [poison]


def test_a_job_that_succeeds_on_a_retry_is_successful_with_the_earlier_error_kept(azjobs_inline):
    job_id = ij.second_time_lucky.enqueue("k-2")

    record = azjobs.result(job_id)
    assert (record.status, record.return_value, record.attempts) == (JobStatus.SUCCESSFUL, "k-2 on attempt 2", 2)
    assert [error.exception_class_path for error in record.errors] == ["builtins.TimeoutError"]
    assert azjobs.testing.poisoned("inline-mail") == []


def test_retries_false_shows_only_the_first_attempt_and_run_due_runs_the_kept_retry():
    with azjobs.testing.inline(retries=False):
        job_id = ij.second_time_lucky.enqueue("k-3")
        assert azjobs.result(job_id).status is JobStatus.RETRYING
        assert ij.seen == [("second_time_lucky", 1)]

        ran = azjobs.testing.run_due(datetime.now(timezone.utc) + timedelta(hours=1))

        assert [(r.attempt, r.outcome) for r in ran] == [(2, "succeeded")]
        assert azjobs.result(job_id).status is JobStatus.SUCCESSFUL


def test_a_non_json_argument_fails_at_enqueue_as_in_production_and_nothing_runs(azjobs_inline):
    with pytest.raises(azjobs.ArgumentError, match=r"kwargs\['punctuation'\] is a builtins.set"):
        ij.greet.enqueue("Ada", punctuation={"!"})
    with pytest.raises(azjobs.ArgumentError, match="unexpected keyword"):
        ij.greet.enqueue("Ada", tone="warm")
    assert azjobs_inline.runs == [] and ij.seen == []


def test_arguments_reach_the_job_through_the_wire_format(azjobs_inline):
    """A tuple arrives as a list and a big argument through the claim check, as on a real queue."""
    assert azjobs.result(ij.describe.enqueue((1, 2))).return_value == "list"
    big = "é" * 70_000  # over a message's 48 KiB of JSON: its arguments go to (memory) Blob Storage
    job_id = ij.greet.enqueue(big)
    assert azjobs.result(job_id).return_value == f"hello {big}!"
    assert azjobs_inline.jobs[-1].envelope.payload_ref is not None


def test_a_job_enqueued_by_a_job_runs_inside_it_before_the_enqueue_returns(azjobs_inline):
    job_id = ij.place_order.enqueue(42)

    assert ij.seen == [("place_order:start", 42), ("send_receipt", 42), ("place_order:receipt", "SUCCESSFUL")]
    receipt = azjobs.result(job_id).return_value["receipt"]
    assert azjobs.result(receipt).return_value == "receipt 42"
    assert [ran.job.rsplit(".", 1)[1] for ran in azjobs_inline.runs] == ["send_receipt", "place_order"]


def test_nesting_up_to_max_depth_works_and_one_level_more_raises_a_clear_error_without_retrying_the_tree():
    with azjobs.testing.inline(max_depth=10) as jobs:
        assert azjobs.result(ij.nest.enqueue(9)).return_value == 9  # ten runs, each inside the one before
        with pytest.raises(azjobs.testing.InlineRecursionError) as too_deep:
            ij.nest.enqueue(10)
        # one failed attempt per level: the retries of the levels above do not run the whole tree again
        assert [ran.outcome for ran in jobs.runs[10:]] == ["retry_scheduled"] * 10
    assert "more than 10 levels deep" in str(too_deep.value)
    assert "tests.jobs.inline_jobs.nest → tests.jobs.inline_jobs.nest" in str(too_deep.value)
    assert "inline(max_depth=...)" in str(too_deep.value)


def test_a_job_that_enqueues_itself_for_ever_raises_at_the_outer_enqueue(azjobs_inline):
    with pytest.raises(azjobs.testing.InlineRecursionError, match="a job that enqueues itself"):
        ij.ping_pong.enqueue(0)


def test_a_job_that_enqueue_manys_itself_meets_the_depth_guard_at_once(azjobs_inline):
    with pytest.raises(azjobs.testing.InlineRecursionError, match="more than 25 levels deep"):
        ij.fan_out_forever.enqueue(0)
    assert len(azjobs_inline.runs) <= 2 * 25  # the first branch down, then one failed attempt per level


def test_a_delayed_job_runs_at_once_even_past_the_seven_day_visibility_limit(azjobs_inline):
    soon = ij.greet.enqueue_in(timedelta(minutes=5), "Grace")
    later = ij.greet.enqueue_at(datetime.now(timezone.utc) + timedelta(days=30), "Linus")

    assert azjobs.result(soon).status is JobStatus.SUCCESSFUL
    assert azjobs.result(later).status is JobStatus.SUCCESSFUL  # not deferred hop after hop
    assert [ran.outcome for ran in azjobs_inline.runs] == ["succeeded", "succeeded"]


def test_delays_keep_leaves_delayed_jobs_for_run_due():
    now = datetime.now(timezone.utc)
    with azjobs.testing.inline(delays="keep") as jobs:
        at_once = ij.greet.enqueue("now")
        later = ij.greet.enqueue_at(now + timedelta(days=10), "later")
        assert azjobs.result(at_once).status is JobStatus.SUCCESSFUL
        assert azjobs.result(later).status is JobStatus.READY

        assert jobs.run_due(now + timedelta(days=9)) == []
        assert azjobs.result(later).status is JobStatus.READY
        [ran] = jobs.run_due(now + timedelta(days=10, seconds=1))

        assert (ran.id, ran.outcome, azjobs.result(later).status) == (later, "succeeded", JobStatus.SUCCESSFUL)


def test_a_workflow_runs_inline_and_its_handle_has_the_result(azjobs_inline):
    pytest.importorskip("azure.durable_functions")
    chained = azjobs.chain(ij.fetch.s("a.example"), ij.size.s()).enqueue()
    fanned = azjobs.chain(azjobs.group(ij.size.si("ab"), ij.size.si("abc")), ij.total.s()).enqueue()
    slept = azjobs.chain(ij.fetch.s("b"), azjobs.sleep(timedelta(days=3)), ij.size.s()).enqueue()

    assert chained.result(timeout=0) == len("<a.example>")
    assert fanned.result(timeout=0) == 5
    assert slept.result(timeout=0) == len("<b>")
    assert azjobs.WorkflowHandle(chained.id).status()["status"] == "Completed"


def test_a_failing_workflow_step_fails_the_workflow_with_its_error_and_a_failure_record(azjobs_inline):
    pytest.importorskip("azure.durable_functions")
    handle = azjobs.chain(ij.fetch.s("c"), ij.size.s(), ij.broken_step.s()).enqueue()

    with pytest.raises(azjobs.WorkflowFailed, match="cannot take 3"):
        handle.result(timeout=0)
    [record] = azjobs.testing.poisoned("azjobs-workflows")
    assert "cannot take 3" in record.error.message


def test_fire_enqueues_a_periodic_jobs_tick_and_it_runs(azjobs_inline):
    job_id = azjobs.testing.fire("tests.jobs.inline_jobs.morning_report",
                                 at=datetime(2026, 12, 7, 9, 30, tzinfo=timezone.utc))

    record = azjobs.result(job_id)
    assert (record.status, record.return_value) == (JobStatus.SUCCESSFUL, "2026-12-07T07:00:00.000Z past_due=False")
    with pytest.raises(azjobs.ConfigurationError, match="no periodic job named 'nope'"):
        azjobs.testing.fire("nope")


def test_async_enqueues_and_async_jobs_run_inline(azjobs_inline):
    async def view() -> tuple:
        first = await ij.add_async.enqueue_async(1, 2)
        second = ij.add_async.enqueue(3, 4)  # a sync enqueue inside a running event loop
        return azjobs.result(first).return_value, azjobs.result(second).return_value

    assert asyncio.run(view()) == (3, 7)


def test_an_untracked_jobs_async_enqueue_runs_inline_too(azjobs_inline):
    asyncio.run(ij.untracked.enqueue_async("async quiet"))
    assert ij.seen == [("untracked", "async quiet")]


def test_enqueue_many_runs_every_item_in_order_and_reports_the_bad_one(azjobs_inline):
    result = ij.greet.enqueue_many(["a", ("b", "?"), {"name": "c"}, {"nom": "d"}])

    assert ij.seen == [("greet", "a"), ("greet", "b"), ("greet", "c")]

    assert [azjobs.result(job_id).return_value for job_id in result.ids] == ["hello a!", "hello b?", "hello c!"]
    assert [index for index, _ in result.failures] == [3]


def test_a_call_that_names_its_own_client_runs_inline_too(azjobs_inline):
    elsewhere = azjobs.Client("UseDevelopmentStorage=true")
    job_id = ij.greet.options(client=elsewhere).enqueue("Barbara")
    assert azjobs.result(job_id).return_value == "hello Barbara!"


def test_an_untracked_job_runs_and_has_no_record_as_in_production(azjobs_inline):
    job_id = ij.untracked.enqueue("quiet")
    assert ij.seen == [("untracked", "quiet")]
    with pytest.raises(azjobs.JobNotFoundError):
        azjobs.result(job_id)
    assert [ran.value for ran in azjobs_inline.runs] == ["quiet"]


def test_a_running_job_cancelled_with_azjobs_cancel_stops_and_reads_cancelled(azjobs_inline):
    """The running jobs' cancel check (a query the memory store answers as Table Storage does) reaches it."""
    job_id = ij.cancel_myself.enqueue()

    assert azjobs.result(job_id).status is JobStatus.CANCELLED
    assert [ran.outcome for ran in azjobs_inline.runs] == ["cancelled"]


def test_a_job_cancelled_while_it_waits_for_its_time_never_runs():
    with azjobs.testing.inline(delays="keep") as jobs:
        job_id = ij.greet.enqueue_in(timedelta(hours=1), "Ada")
        azjobs.cancel(job_id)

        [ran] = jobs.run_due(datetime.now(timezone.utc) + timedelta(hours=2))

        assert (ran.outcome, azjobs.result(job_id).status, ij.seen) == ("cancelled", JobStatus.CANCELLED, [])


def test_recording_lists_the_enqueues_without_running_them_and_run_all_runs_them():
    with azjobs.testing.recording() as jobs:
        first = ij.greet.options(max_retries=0).enqueue("Ada", punctuation=".")
        second = ij.place_order.enqueue_in(timedelta(minutes=10), 7)

        assert ij.seen == []
        assert [(j.id, j.job, j.args, j.kwargs, j.queue, j.options) for j in jobs.jobs] == [
            (first, "tests.jobs.inline_jobs.greet", ("Ada",), {"punctuation": "."}, "inline-mail", {"max_retries": 0}),
            (second, "tests.jobs.inline_jobs.place_order", (7,), {}, "inline-orders", {}),
        ]
        assert [j.delay for j in jobs.jobs] == [timedelta(0), timedelta(minutes=10)]
        assert azjobs.result(first).status is JobStatus.READY

        ran = jobs.run_all()

        assert [r.job.rsplit(".", 1)[1] for r in ran] == ["greet", "place_order", "send_receipt"]
        assert azjobs.result(second).status is JobStatus.SUCCESSFUL
        assert jobs.jobs[-1].job == "tests.jobs.inline_jobs.send_receipt"  # enqueued by place_order, recorded too


def test_inline_decorates_plain_and_async_functions():
    @azjobs.testing.inline
    def plain() -> str:
        return azjobs.result(ij.greet.enqueue("x")).return_value

    @azjobs.testing.inline(retries=False)
    async def coroutine() -> str:
        job_id = await ij.second_time_lucky.enqueue_async("y")
        return azjobs.result(job_id).status.value

    assert plain() == "hello x!"
    assert asyncio.run(coroutine()) == "RETRYING"


def test_leaving_the_block_gives_the_process_its_own_client_back():
    before = default_client()
    with azjobs.testing.inline():
        assert isinstance(default_client(), azjobs.testing.InlineClient)
        with azjobs.testing.recording():
            inner = default_client()
        assert default_client() is not inner and isinstance(default_client(), azjobs.testing.InlineClient)
    assert default_client() is before


def test_the_block_functions_without_a_block_say_what_is_missing():
    with pytest.raises(azjobs.ConfigurationError, match=r"no azjobs.testing.inline\(\) or recording\(\) block"):
        azjobs.testing.poisoned("inline-mail")
    with pytest.raises(azjobs.ConfigurationError, match="delays= takes 'skip'"):
        azjobs.testing.inline(delays="later").__enter__()
