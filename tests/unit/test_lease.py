"""Lease renewal and settling logic, against an in-memory queue stand-in (storage is proven in integration)."""

from __future__ import annotations

import logging
import threading
import time

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from azjobs.lease import LeaseKeeper, is_lost_error
from azjobs.settler import Settler


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

    def update_message(self, message_id, pop_receipt, visibility_timeout):
        self.calls.append((message_id, pop_receipt, visibility_timeout))
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


def test_a_server_error_halves_the_interval():
    fake = FakeQueue()
    fake.fail_with = [http_error(503)]
    keeper = LeaseKeeper(2).start()  # half = 1 s; after a 503, retry in 0.5 s
    try:
        started = time.monotonic()
        lease = keeper.track("q", fake, "m1", "r0")
        assert wait_calls(fake, 2) == 2
        elapsed = time.monotonic() - started
        assert 1.4 <= elapsed < 4.0
        assert keeper.close(lease) == "r2"
    finally:
        keeper.stop()


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

    def delete_message(self, message_id, pop_receipt):
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
