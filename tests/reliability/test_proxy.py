"""The fault proxy itself: forwards faithfully, fails what it is told to, and only that."""

from __future__ import annotations

import socket

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError, ServiceResponseError
from azure.storage.queue import ExponentialRetry, QueueClient

from devtools.proxy import FaultProxy


@pytest.fixture
def through_proxy(proxied, queue_name):
    queue = QueueClient.from_connection_string(proxied, queue_name,
                                               retry_policy=ExponentialRetry(initial_backoff=0.1, retry_total=0))
    queue.create_queue()
    yield queue
    queue.close()


def _received(queue, count):
    return list(next(queue.receive_messages(messages_per_page=count, max_messages=count,
                                            visibility_timeout=30).by_page()))


def test_forwards_and_fails_only_the_matching_method(proxy, through_proxy, raw_queue, queue_name):
    direct = raw_queue(queue_name)
    for i in range(3):
        through_proxy.send_message(f"m{i}")
    first, second, third = _received(through_proxy, 3)

    proxy.fail("DELETE", "error", path_contains="/messages/")
    with pytest.raises(HttpResponseError) as info:
        through_proxy.delete_message(first.id, first.pop_receipt)
    assert info.value.status_code == 500
    through_proxy.update_message(first.id, first.pop_receipt, visibility_timeout=30)  # other methods still pass

    proxy.fail("DELETE", "drop", path_contains="/messages/")
    with pytest.raises(ServiceResponseError):
        through_proxy.delete_message(second.id, second.pop_receipt)

    proxy.fail("DELETE", "drop_after", path_contains="/messages/")
    with pytest.raises(ServiceResponseError):
        through_proxy.delete_message(third.id, third.pop_receipt)  # it happened; the answer was lost
    proxy.heal()
    with pytest.raises(ResourceNotFoundError):
        through_proxy.delete_message(third.id, third.pop_receipt)
    assert direct.get_queue_properties().approximate_message_count == 2  # only the drop_after delete went through
    assert proxy.faults["DELETE"] == 3


def test_cut_makes_storage_unreachable_until_restored(proxy, through_proxy):
    through_proxy.send_message("before")
    proxy.cut()
    with pytest.raises((ServiceRequestError, ServiceResponseError)):
        through_proxy.send_message("during")
    resets = proxy.resets
    try:  # a new connection is reset too (at connect or at the first read)
        with socket.create_connection((proxy.listen_host, proxy.port), timeout=5) as fresh:
            fresh.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert fresh.recv(1024) == b""
    except ConnectionResetError:
        pass
    assert proxy.resets == resets + 1
    proxy.restore()
    through_proxy.send_message("after")
    assert sorted(m.content for m in _received(through_proxy, 32)) == ["after", "before"]


def test_only_loopback_is_accepted():
    with pytest.raises(ValueError):
        FaultProxy(10001, upstream_host="10.0.0.1")
    with pytest.raises(ValueError):
        FaultProxy(10001, listen_host="0.0.0.0")


def test_a_fault_limited_by_times_fails_only_that_many_requests(proxy, through_proxy):
    proxy.fail("PUT", "error", times=2)  # the queue's metadata PUT: any method with a harmless call does
    failed = 0
    for _ in range(4):
        try:
            through_proxy.set_queue_metadata({"n": "1"})
        except HttpResponseError as error:
            assert error.status_code == 500
            failed += 1
    assert failed == 2 and proxy.faults["PUT"] == 2
    with pytest.raises(ValueError, match="times must be at least 1"):
        proxy.fail("PUT", times=0)


def test_a_delay_holds_matching_requests_then_forwards_them(proxy, through_proxy, raw_queue, queue_name):
    import time

    proxy.fail("POST", "delay", delay_s=1.5, times=1)
    started = time.monotonic()
    through_proxy.send_message("slow")
    slow = time.monotonic() - started
    started = time.monotonic()
    through_proxy.send_message("fast")
    fast = time.monotonic() - started
    assert slow >= 1.5 and fast < slow  # only the first was held
    assert sorted(m.content for m in raw_queue(queue_name).peek_messages(max_messages=5)) == ["fast", "slow"]
    assert proxy.faults["POST"] == 1
    with pytest.raises(ValueError, match="delay_s goes with mode='delay'"):
        proxy.fail("POST", "delay")


def test_a_stalled_request_gets_no_answer_until_the_stall_is_healed(proxy, through_proxy):
    import time

    through_proxy.send_message("held")
    proxy.fail("GET", "stall", path_contains="/messages")
    began = time.monotonic()
    with pytest.raises(ServiceResponseError):  # the read times out: nothing came back
        through_proxy.receive_messages(max_messages=1, read_timeout=1).by_page().__next__()
    assert time.monotonic() - began >= 1.0 and proxy.faults["GET"] == 1
    through_proxy.set_queue_metadata({"n": "1"})  # other methods still pass
    proxy.heal("GET")
    assert [m.content for m in _received(through_proxy, 32)] == ["held"]  # the stalled receive took nothing


def test_stop_ends_every_connection_it_serves_before_its_loop_closes():
    """A connection's coroutine left pending when the loop closes (here: waiting for an upstream answer) is
    destroyed later by the garbage collector, and its cleanup raises there, in whatever code is running then
    (a reliability run once ended in ``SystemError: AST constructor recursion depth mismatch``)."""
    import gc
    import sys
    import time

    upstream = socket.socket()  # accepts connections and never answers
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(4)
    proxy = FaultProxy(upstream.getsockname()[1]).start()
    raised = []
    hook, sys.unraisablehook = sys.unraisablehook, raised.append
    try:
        with socket.create_connection((proxy.listen_host, proxy.port), timeout=5) as waiting:
            waiting.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            deadline = time.monotonic() + 10
            while proxy.requests["GET"] < 1 and time.monotonic() < deadline:  # forwarded; no answer comes
                time.sleep(0.05)
            assert proxy.requests["GET"] == 1
            proxy.stop()
        del proxy
        gc.collect()
    finally:
        sys.unraisablehook = hook
        upstream.close()
    assert [f"{u.exc_type.__name__}: {u.exc_value}" for u in raised] == []
