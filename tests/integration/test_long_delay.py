"""Delays beyond the 7-day visibility maximum: the message hops until its due time, then runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import azjobs
from azjobs.model.outcome import Outcome
from azjobs.model.envelope import Envelope, parse_time, utcnow
from tests.conftest import stored_message, unique_queue
from tests.integration.worker_support import wait_for
from tests.integration.drivers import DRIVERS
from tests.jobs import failure_jobs as jobs

SEVEN_DAYS = int(timedelta(days=7).total_seconds())
# How storage reports the expiry of a message sent with TTL -1 (never expires).
NEVER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


class TimeWarpClient(azjobs.Client):
    """A real client that records each send and shortens visibilities over a minute to 1 s.

    Azurite cannot fast-forward, so a 7-day hop becomes visible after a second; the core's
    clock is moved forward instead (``Driver.shift_clock``).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, int, int | None]] = []

    def send_text(self, queue, text, *, visibility_timeout=0, time_to_live=None, **options):
        self.sent.append((queue, visibility_timeout, time_to_live))
        if visibility_timeout > 60:
            visibility_timeout = 1
        return super().send_text(queue, text, visibility_timeout=visibility_timeout, time_to_live=time_to_live,
                                 **options)


@pytest.fixture(params=sorted(DRIVERS))
def warped(request, connection_string, client):
    queue = unique_queue("delay")
    warp = TimeWarpClient(connection_string)
    warp.ensure_queue(queue)
    driver = DRIVERS[request.param](warp, queue, jobs.registry_for(queue))
    yield driver
    try:
        warp.queue(queue).delete_queue()
    finally:
        warp.close()


def _visible_messages(client, queue) -> int:
    return len(client.queue(queue).peek_messages(max_messages=32))


def test_thirty_day_delay_hops_and_is_not_run_early(warped):
    t = f"{warped.name}-{warped.queue}"
    enqueued = utcnow()
    job_id = jobs.record.options(queue=warped.queue, client=warped.client).enqueue_in(timedelta(days=30), t, 7)
    first = warped.client.sent[0]
    assert first == (warped.queue, SEVEN_DAYS, -1)  # one full hop, never expiring

    # Each hop arrives "7 days" later; the job must not run before day 30.
    for day in (7, 14, 21, 28):
        warped.shift_clock(timedelta(days=day, seconds=1))
        before = len(warped.results)
        warped.run_until(lambda: len(warped.results) > before, timeout_s=15)
        result = warped.results[-1]
        assert result.outcome is Outcome.DEFERRED and not result.ran, result
        assert jobs.calls(t) == []
        remaining = (timedelta(days=30) - timedelta(days=day, seconds=1)).total_seconds()
        queue, visibility, ttl = warped.client.sent[-1]
        assert queue == warped.queue and ttl == -1
        # The remaining time (less the seconds this test has taken), at most one 7-day hop.
        assert min(SEVEN_DAYS, remaining - 60) <= visibility <= min(SEVEN_DAYS, remaining + 1), visibility
        assert result.envelope.id == job_id

    warped.shift_clock(timedelta(days=30, seconds=5))
    warped.run_until(lambda: bool(jobs.calls(t)), timeout_s=15)
    assert [details for _, details in jobs.calls(t)] == [(7,)]
    assert warped.results[-1].outcome is Outcome.SUCCEEDED
    due = parse_time(warped.results[-1].envelope.due_at)
    assert timedelta(days=30) <= due - enqueued < timedelta(days=30, minutes=1)
    assert _visible_messages(warped.client, warped.queue) == 0


def test_real_thirty_day_message_is_invisible_and_does_not_expire(client, raw_queue, sent_messages):
    queue = unique_queue("delay")
    raw = raw_queue(queue)
    job_id = jobs.record.options(queue=queue).enqueue_in(timedelta(days=30), "x")
    assert raw.get_queue_properties().approximate_message_count == 1
    assert list(raw.peek_messages()) == []
    assert list(raw.receive_messages(max_messages=1)) == []
    # Revealed with its pop receipt, the message as Azurite keeps it never expires: storage
    # reports a TTL of -1 as 9999-12-31 (a TTL of days would expire before the job is due).
    [sent] = sent_messages
    stored = stored_message(raw, sent)
    assert stored.expires_on == NEVER
    assert Envelope.decode(stored.content).id == job_id


def test_deferral_of_an_early_message_keeps_the_id_and_payload(warped):
    """A message that arrives before its due time is re-sent unchanged, not run."""
    t = f"early-{warped.name}-{warped.queue}"
    envelope = Envelope.build(jobs.record.name, (t,), {"value": 3}, queue=warped.queue,
                              due_at=(utcnow() + timedelta(days=9)).isoformat().replace("+00:00", "Z"))
    warped.client.send_text(warped.queue, envelope.encode())
    warped.run_until(lambda: bool(warped.results))
    [result] = warped.results
    assert result.outcome is Outcome.DEFERRED and result.retry_in_s == SEVEN_DAYS
    assert jobs.calls(t) == []
    # The copy on the queue (visible after the warped 1 s): same id, same arguments, same due time.
    queue_client = warped.client.queue(warped.queue)
    assert wait_for(lambda: list(queue_client.peek_messages(max_messages=32)), timeout=10), "no copy was re-sent"
    [copy] = [Envelope.decode(message.content) for message in queue_client.peek_messages(max_messages=32)]
    assert (copy.id, copy.job, copy.args, dict(copy.kwargs)) == (envelope.id, jobs.record.name, (t,), {"value": 3})
    assert copy.to_dict() == envelope.to_dict()
