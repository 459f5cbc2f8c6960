"""Lease renewal and settling logic, against an in-memory queue stand-in (storage is proven in integration)."""

from __future__ import annotations

import logging
import threading
import time

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceResponseError

from azjobs.runtime.leases import LeaseKeeper, is_lost_error
from azjobs.runtime.settler import Settler


class Updated:
    def __init__(self, pop_receipt):
        self.pop_receipt = pop_receipt


def http_error(status, code=None):
    error = HttpResponseError(message=f"status {status}")
    error.status_code = status
    error.error_code = code
    return error


class FakeQueue:
    """Records update_message calls; ``fail_with`` makes the next calls raise."""

    def __init__(self):
        self.calls = []
        self.fail_with = []
        self.event = threading.Event()

    def update_message(self, message_id, pop_receipt, visibility_timeout, **options):
        self.calls.append((message_id, pop_receipt, visibility_timeout))
        self.options = options
        self.event.set()
        if self.fail_with:
            raise self.fail_with.pop(0)
        return Updated(f"r{len(self.calls)}")


def wait_calls(fake, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while len(fake.calls) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(fake.calls)


def test_no_renewal_for_a_message_settled_within_half_the_lease():
    fake = FakeQueue()
    keeper = LeaseKeeper(2).start()
    try:
        lease = keeper.track("q", fake, "m1", "r0")
        time.sleep(0.2)
        assert keeper.close(lease) == "r0"
        time.sleep(1.2)  # past the half-lease point
        assert fake.calls == []
    finally:
        keeper.stop()


def test_renews_at_half_the_lease_and_hands_back_the_newest_receipt():
    fake = FakeQueue()
    keeper = LeaseKeeper(1).start()  # renew every 0.5 s
    try:
        lease = keeper.track("q", fake, "m1", "r0")
        assert wait_calls(fake, 2) >= 2
        receipt = keeper.close(lease)
        count = len(fake.calls)
        assert receipt == f"r{count}"
        assert fake.calls[0] == ("m1", "r0", 1)
        assert fake.calls[1] == ("m1", "r1", 1)  # each renewal uses the receipt of the last
        time.sleep(0.8)
        assert len(fake.calls) == count  # closed: no more renewals
    finally:
        keeper.stop()


def test_pop_receipt_mismatch_stops_renewal_and_loses_the_lease(caplog):
    fake = FakeQueue()
    fake.fail_with = [http_error(400, "PopReceiptMismatch")]
    keeper = LeaseKeeper(1).start()
    try:
        with caplog.at_level(logging.WARNING, logger="azjobs.worker"):
            lease = keeper.track("q", fake, "m1", "r0")
            assert wait_calls(fake, 1) == 1
            time.sleep(0.8)
        assert len(fake.calls) == 1
        assert keeper.close(lease) is None
        assert any(getattr(r, "action", None) == "lease_lost" for r in caplog.records)
    finally:
        keeper.stop()


def test_a_server_error_is_retried_sooner_than_the_normal_interval():
    fake = FakeQueue()
    fake.fail_with = [http_error(503)]
    keeper = LeaseKeeper(2).start()  # half = 1 s; after a 503 with 1 s of lease left, retry within 0.5 s
    try:
        started = time.monotonic()
        lease = keeper.track("q", fake, "m1", "r0")
        assert wait_calls(fake, 1) == 1
        first = time.monotonic() - started
        assert wait_calls(fake, 2) == 2
        gap = time.monotonic() - started - first
        assert 0.9 <= first < 1.5 and 0.15 <= gap <= 0.6
        assert keeper.close(lease) == "r2"
    finally:
        keeper.stop()


class StallingQueue(FakeQueue):
    """Every call blocks for ``stall_s`` (a renewal stuck on a slow connection), ignoring timeouts."""

    def __init__(self, stall_s):
        super().__init__()
        self.stall_s = stall_s

    def update_message(self, message_id, pop_receipt, visibility_timeout, **options):
        time.sleep(self.stall_s)
        return super().update_message(message_id, pop_receipt, visibility_timeout, **options)


def test_one_slow_renewal_does_not_let_the_other_leases_lapse():
    slow, fast = StallingQueue(3.0), FakeQueue()
    keeper = LeaseKeeper(1).start()  # renew every 0.5 s: the fast lease needs a renewal before 1 s
    try:
        keeper.track("q", slow, "slow", "r0")
        started = time.monotonic()
        lease = keeper.track("q", fast, "fast", "r0")
        assert wait_calls(fast, 3, timeout=2.0) >= 3, "the fast lease waited behind the stalled renewal"
        assert time.monotonic() - started < 2.0
        assert keeper.close(lease) == f"r{len(fast.calls)}"
    finally:
        keeper.stop()


def test_a_renewal_call_is_bounded_well_inside_the_remaining_lease():
    fake = FakeQueue()
    keeper = LeaseKeeper(4).start()  # renew at 2 s, with 2 s of the lease left
    try:
        lease = keeper.track("q", fake, "m1", "r0")
        assert wait_calls(fake, 1, timeout=4) == 1
        keeper.close(lease)
        # no SDK retry with the old receipt, and connect/read timeouts of half the remaining lease
        assert fake.options["retry_total"] == 0
        assert 0 < fake.options["read_timeout"] <= 1.0 and fake.options["connection_timeout"] <= 1.0
    finally:
        keeper.stop()


class ServerQueue:
    """A queue with one message: the receipt changes on every update; a wrong receipt is a 400 mismatch.

    ``lose_answers`` updates are applied by storage but their answer never arrives.
    """

    def __init__(self, receipt="r0"):
        self.receipt = receipt
        self.updates = 0
        self.lose_answers = 0
        self.calls = []

    def update_message(self, message_id, pop_receipt, visibility_timeout, **options):
        self.calls.append(pop_receipt)
        if pop_receipt != self.receipt:
            raise http_error(400, "PopReceiptMismatch")
        self.updates += 1
        self.receipt = f"s{self.updates}"
        if self.lose_answers:
            self.lose_answers -= 1
            raise ServiceResponseError("connection closed before the answer (fault)")
        return Updated(self.receipt)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_an_unanswered_renewal_that_storage_applied_is_still_our_lease():
    clock, server = Clock(), ServerQueue()
    keeper = LeaseKeeper(10, clock=clock)  # driven by hand: no threads
    lease = keeper.track("q", server, "m1", "r0")
    clock.now += 5
    server.lose_answers = 1
    assert keeper._renew(lease) is not None and lease.uncertain  # no answer: retried soon
    clock.now += 1  # the confirmed lease (until 110) has not run out: nobody else can hold the message
    assert keeper._renew(lease) is None
    assert lease.orphaned and not lease.lost
    settled = []
    assert keeper.close(lease, later=settled.append) is None
    # the message becomes visible again and this worker receives it: the waiting delete uses the new receipt
    assert keeper.adopt("q", "m1", "fresh") is True
    assert settled == ["fresh"] and keeper.orphans() == 0


def test_an_orphaned_lease_of_a_running_job_is_renewed_again_once_the_message_comes_back():
    clock, server = Clock(), ServerQueue()
    keeper = LeaseKeeper(10, clock=clock)
    lease = keeper.track("q", server, "m1", "r0")
    server.lose_answers = 1
    keeper._renew(lease)
    keeper._renew(lease)
    assert lease.orphaned
    server.receipt = "received-again"  # storage handed it out again (to us)
    assert keeper.adopt("q", "m1", "received-again")
    assert not lease.orphaned and keeper._renew(lease) is not None
    assert keeper.close(lease) == server.receipt


def test_a_mismatch_after_the_confirmed_lease_ran_out_is_a_lost_lease():
    clock, server = Clock(), ServerQueue()
    keeper = LeaseKeeper(10, clock=clock)
    lease = keeper.track("q", server, "m1", "r0")
    server.lose_answers = 1
    keeper._renew(lease)
    clock.now += 20  # past the confirmed lease: another consumer may have received it
    server.receipt = "another-worker"
    assert keeper._renew(lease) is None
    assert lease.lost and not lease.orphaned
    assert keeper.close(lease) is None and keeper.orphans() == 0


def test_a_message_that_is_not_an_orphan_is_not_adopted():
    keeper = LeaseKeeper(10, clock=Clock())
    assert keeper.adopt("q", "unknown", "r") is False


def test_lost_errors():
    assert is_lost_error(http_error(400, "PopReceiptMismatch"))
    assert is_lost_error(ResourceNotFoundError("gone"))
    assert is_lost_error(http_error(404, "MessageNotFound"))
    assert not is_lost_error(http_error(503, "ServerBusy"))
    assert not is_lost_error(ConnectionError("refused"))


class FakeDeletes:
    def __init__(self, errors):
        self.errors = list(errors)
        self.calls = 0

    def delete_message(self, message_id, pop_receipt, **options):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


def test_settler_retries_a_failed_delete_then_succeeds():
    fake = FakeDeletes([http_error(503), ConnectionError("reset")])
    failed = []
    settler = Settler(2, on_delete_failed=lambda: failed.append(1), sleep=lambda s: None).start()
    settler.delete(fake, "q", "m1", "r1")
    settler.stop()
    assert fake.calls == 3 and failed == []


def test_settler_gives_up_with_an_error_log_and_keeps_working(caplog):
    fake = FakeDeletes([http_error(500)] * 10)
    failed = []
    settler = Settler(1, on_delete_failed=lambda: failed.append(1), sleep=lambda s: None).start()
    with caplog.at_level(logging.ERROR, logger="azjobs.worker"):
        settler.delete(fake, "q", "m1", "r1")
        settler.flush()
    ok = FakeDeletes([])
    settler.delete(ok, "q", "m2", "r2")
    settler.stop()
    assert failed == [1] and ok.calls == 1
    assert any(getattr(r, "action", None) == "delete_failed" for r in caplog.records)


def test_settler_ignores_a_message_that_is_gone():
    fake = FakeDeletes([ResourceNotFoundError("gone")])
    failed = []
    settler = Settler(1, on_delete_failed=lambda: failed.append(1), sleep=lambda s: None).start()
    settler.delete(fake, "q", "m1", "r1")
    settler.stop()
    assert fake.calls == 1 and failed == []


class BlockingDeletes:
    def __init__(self):
        self.release = threading.Event()
        self.deleted = []

    def delete_message(self, message_id, pop_receipt, **options):
        self.release.wait(5)
        self.deleted.append((message_id, pop_receipt))


def test_a_queued_delete_closes_its_lease_only_when_a_delete_thread_takes_it_up():
    fake = BlockingDeletes()
    asked = []
    settler = Settler(1, sleep=lambda s: None).start()
    try:
        settler.delete(fake, "q", "m1", "r1")  # occupies the only delete thread
        settler.delete(fake, "q", "m2", lambda: asked.append("m2") or "r2")
        time.sleep(0.3)
        assert asked == []  # still waiting: its lease is still being renewed
        fake.release.set()
        assert settler.flush(5)
        assert asked == ["m2"] and fake.deleted == [("m1", "r1"), ("m2", "r2")]
        done = []
        settler.delete(fake, "q", "m3", lambda: None, on_done=lambda: done.append(1))  # not ours any more
        assert settler.flush(5) and done == [1] and len(fake.deleted) == 2
    finally:
        settler.stop()
