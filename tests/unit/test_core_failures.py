"""The core's failure decisions with an in-memory client: hooks, times, targets, edge cases."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest

import azjobs
from azjobs.execution.executor import Redeliver
from azjobs.hosting import executor as hosted_executor
from azjobs.model.outcome import MessageInfo, Outcome
from azjobs.model.envelope import Envelope, format_time
from azjobs.model.poison_record import PoisonRecord
from azjobs.model.retry import Backoff, Fixed
from azjobs.testing import RecordingClient

REG = azjobs.Registry()
HOOKED: list = []
QUEUE = "core-unit"


class ClassJob(azjobs.Job):
    queue = QUEUE
    registry = REG
    max_retries = 0

    def perform(self, x: int) -> None:
        raise azjobs.Fail(f"no {x}")

    def on_dead_letter(self, record) -> None:
        HOOKED.append(("class", record))


async def _async_hook(record) -> None:
    HOOKED.append(("async", record))


def _broken_hook(record) -> None:
    raise RuntimeError("hook bug")


@azjobs.job(queue=QUEUE, registry=REG, retry=Fixed(3, max_retries=1), on_dead_letter=_async_hook)
def fails(x: int) -> None:
    raise ValueError(x)


@azjobs.job(queue=QUEUE, registry=REG, on_dead_letter=_broken_hook)
def fails_with_broken_hook(x: int) -> None:
    raise azjobs.Fail("x")


class ExplodingPolicy(Backoff):
    def decide(self, error, attempt):
        raise RuntimeError("policy bug")


@azjobs.job(queue=QUEUE, registry=REG, retry=ExplodingPolicy())
def bad_policy() -> None:
    raise ValueError("x")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def setup():
    HOOKED.clear()
    client = RecordingClient("base64")
    clock = Clock()
    ex = hosted_executor(registry=REG, client=client, settings=client.settings, host="h1", clock=clock,
                  unknown_job_policy=Fixed(10, max_retries=1))
    return ex, client, clock


def deliver(ex, envelope, queue=QUEUE, dequeue_count=1):
    return ex.execute(envelope.encode(), MessageInfo(queue=queue, message_id="m", dequeue_count=dequeue_count))


def test_retry_then_poison_keeps_first_and_last_failure_times_and_runs_async_hook(setup):
    ex, client, clock = setup
    first = deliver(ex, fails.options().build((1,), {}))
    assert first.outcome is Outcome.RETRY_SCHEDULED and first.retry_in_s == 3
    queue, text, visibility, _ = client.writes[-1]
    retry = Envelope.decode(text)
    assert (queue, visibility, retry.attempt) == (QUEUE, 3, 2)
    assert retry.first_failed_at == format_time(clock.now)
    clock.now += timedelta(minutes=5)
    second = deliver(ex, retry)
    assert second.outcome is Outcome.DEAD_LETTERED
    record = PoisonRecord.decode(client.writes[-1][1])
    assert record.first_failed_at == format_time(clock.now - timedelta(minutes=5))
    assert record.last_failed_at == format_time(clock.now)
    assert record.attempts == 2 and record.host == "h1"
    assert [(kind, r.id) for kind, r in HOOKED] == [("async", record.id)]


def test_class_job_hook_and_fail(setup):
    ex, client, _ = setup
    result = deliver(ex, ClassJob.options().build((7,), {}))
    assert result.outcome is Outcome.DEAD_LETTERED and result.extra["reason"] == "fail"
    [(kind, record)] = HOOKED
    assert kind == "class" and record.error.message == "no 7"


def test_broken_hook_does_not_undo_the_dead_letter(setup):
    ex, client, _ = setup
    result = deliver(ex, fails_with_broken_hook.options().build((1,), {}))
    assert result.outcome is Outcome.DEAD_LETTERED and client.writes[-1][0] == QUEUE + "-poison"


def test_hook_runs_for_bad_arguments_too(setup):
    ex, client, _ = setup
    result = deliver(ex, Envelope.build(fails.name, (1, 2, 3), {}, queue=QUEUE))
    assert result.extra["reason"] == "bad_arguments" and [k for k, _ in HOOKED] == ["async"]


def test_broken_retry_policy_dead_letters_instead_of_losing(setup):
    ex, client, _ = setup
    result = deliver(ex, bad_policy.options().build((), {}))
    assert result.outcome is Outcome.DEAD_LETTERED and "policy raised" in result.detail


def test_copies_go_to_the_queue_received_from_not_the_one_the_message_names(setup):
    ex, client, _ = setup
    envelope = Envelope.build(fails.name, (1,), {}, queue="attacker-chosen")
    deliver(ex, envelope)
    assert client.writes[-1][0] == QUEUE
    deliver(ex, Envelope.build("no.such.job", (), {}, queue="attacker-chosen"))
    assert client.writes[-1][0] == QUEUE


def test_unknown_job_is_retried_then_poisoned(setup):
    ex, client, _ = setup
    envelope = Envelope.build("no.such.job", (), {}, queue=QUEUE)
    first = deliver(ex, envelope)
    assert first.outcome is Outcome.RETRY_SCHEDULED and first.retry_in_s == 10 and not first.ran
    second = deliver(ex, Envelope.decode(client.writes[-1][1]))
    assert second.outcome is Outcome.DEAD_LETTERED and second.extra["reason"] == "unknown_job"


def test_poison_queue_missing_means_redeliver(setup):
    ex, client, _ = setup
    with pytest.raises(Redeliver):
        ex.execute("%%%", MessageInfo(queue="already-poison", message_id="m"))
    assert client.writes == []


def test_max_dequeue_count_exceeded_is_poisoned_before_running(setup):
    ex, client, _ = setup
    result = deliver(ex, fails.options().build((1,), {}), dequeue_count=6)
    assert result.outcome is Outcome.DEAD_LETTERED and result.extra["reason"] == "max_dequeue_count"
    assert not result.ran


def test_dead_letter_redelivered_keeps_the_envelope_or_raw_body(setup):
    ex, client, _ = setup
    envelope = fails.options().build((1,), {})
    result = ex.dead_letter_redelivered(envelope.encode(), MessageInfo(queue=QUEUE, dequeue_count=5),
                                        TimeoutError("lease lost"))
    record = PoisonRecord.decode(client.writes[-1][1])
    assert record.envelope == envelope and record.error.type == "TimeoutError"
    assert result.extra["reason"] == "max_dequeue_count"
    ex.dead_letter_redelivered("%%%", MessageInfo(queue=QUEUE), TimeoutError("x"))
    record = PoisonRecord.decode(client.writes[-1][1])
    assert record.raw_body == "%%%" and record.raw_form == "wire" and record.replay_text() == "%%%"


def test_decoded_body_on_functions_is_kept_decoded(setup):
    ex, client, _ = setup
    ex.execute(b"{not json", MessageInfo(queue=QUEUE), encoded=False)
    record = PoisonRecord.decode(client.writes[-1][1])
    assert record.raw_form == "decoded" and record.raw_bytes() == b"{not json"
    assert base64.b64decode(record.replay_text("base64")) == b"{not json"


def test_early_message_is_deferred_with_the_remaining_time_and_never_expires(setup):
    ex, client, clock = setup
    due = clock.now + timedelta(days=9, seconds=30)
    envelope = fails.options().build((1,), {}).evolve(due_at=format_time(due))
    result = deliver(ex, envelope)
    assert result.outcome is Outcome.DEFERRED and not result.ran
    assert client.writes[-1][2:] == (7 * 86400, -1)
    clock.now += timedelta(days=7)
    deliver(ex, Envelope.decode(client.writes[-1][1]))
    assert client.writes[-1][2:] == (2 * 86400 + 30, -1)
    clock.now = due
    assert deliver(ex, Envelope.decode(client.writes[-1][1])).ran


def _largest_envelope_that_fits() -> Envelope:
    low, high = 40_000, 50_000
    while high - low > 1:
        middle = (low + high) // 2
        try:
            Envelope.build(fails.name, ("y" * middle,), {}, queue=QUEUE).encode()
            low = middle
        except azjobs.PayloadTooLargeError:
            high = middle
    return Envelope.build(fails.name, ("y" * low,), {}, queue=QUEUE)


def test_retry_copy_that_outgrows_the_limit_is_claim_checked(setup):
    ex, client, _ = setup
    big = _largest_envelope_that_fits()  # fits as sent; the retry copy (attempt 2, first_failed_at) does not
    with pytest.raises(azjobs.PayloadTooLargeError):
        big.evolve(attempt=2, first_failed_at=format_time(datetime.now(timezone.utc))).encode()
    result = ex.execute(big.encode(), MessageInfo(queue=QUEUE, message_id="m"))
    assert result.outcome is Outcome.RETRY_SCHEDULED
    copy = Envelope.decode(client.writes[-1][1])
    assert copy.attempt == 2 and copy.payload_ref and copy.args == ()
    assert client.payloads.load_arguments(copy.payload_ref) == (big.args, {})
