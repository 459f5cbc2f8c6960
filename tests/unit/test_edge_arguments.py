"""Edge arguments fail in the caller with the azjobs error naming them, before any network call.

Before: a lone surrogate raised UnicodeEncodeError, ``enqueue_in(1e20)`` OverflowError,
``10**5000`` ValueError (int-to-str limit) and a list nested 5,000 deep RecursionError.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

import azjobs
from azjobs.storage.aio import AsyncClient
from azjobs.storage.client import Client
from azjobs.errors import ArgumentError, DelayError
from azjobs.model.envelope import MAX_NESTING, Envelope

REG = azjobs.Registry()


@azjobs.job(queue="edge-args", registry=REG)
def takes(value, other=None) -> None:
    pass


class NoNetwork(Client):
    """A client that fails the test if anything reaches for storage."""

    def queue(self, name):
        raise AssertionError(f"a network call was attempted (queue {name!r})")

    def service(self):
        raise AssertionError("a network call was attempted (service)")

    def aio(self):
        class NoNetworkAsync(AsyncClient):
            def _service(self):
                raise AssertionError("a network call was attempted (async service)")

        return NoNetworkAsync(self)


@pytest.fixture
def job():
    return takes.options(client=NoNetwork("UseDevelopmentStorage=true"))


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def cyclic() -> list:
    value: list = []
    value.append(value)
    return value


BAD_ARGUMENTS = [
    pytest.param(("\ud800",), {}, ArgumentError, r"^args\[0\] contains '\\ud800' at position 0, a lone surrogate "
                 "that UTF-8 cannot encode", id="lone-surrogate"),
    pytest.param(("ok", "x\udfffy"), {}, ArgumentError, r"^args\[1\] contains '\\udfff' at position 1", id="surrogate-2nd"),
    pytest.param((), {"value": {"k\ud800": 1}}, ArgumentError, r"^kwargs\['value'\] key 'k\\ud800' contains",
                 id="surrogate-key"),
    pytest.param((10**5000,), {}, ArgumentError, r"^args\[0\] is an integer with more than 4,300 digits",
                 id="huge-int"),
    pytest.param((), {"value": [1, -(10**5000)]}, ArgumentError,
                 r"^kwargs\['value'\]\[1\] is an integer with more than", id="huge-int-nested"),
    pytest.param((nested(5000),), {}, ArgumentError,
                 rf"^args\[0\] is nested more than {MAX_NESTING} levels deep", id="nested-5000"),
    pytest.param((), {"value": cyclic()}, ArgumentError, r"^kwargs\['value'\] is nested more than", id="cycle"),
]


@pytest.mark.parametrize("args,kwargs,error,message", BAD_ARGUMENTS)
def test_bad_argument_raises_the_azjobs_error_naming_it(job, args, kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        job.enqueue(*args, **kwargs)
    assert len(str(info.value)) < 300  # one readable line, not the value itself


@pytest.mark.parametrize("args,kwargs,error,message", BAD_ARGUMENTS)
def test_bad_argument_raises_before_sending_async(job, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        asyncio.run(job.enqueue_async(*args, **kwargs))


def test_bad_argument_is_a_per_item_failure_in_enqueue_many(job):
    class Counting(NoNetwork):
        sent = 0

        def send_many(self, envelopes, **options):
            Counting.sent += len(envelopes)
            return [e.id for e in envelopes]

    result = takes.options(client=Counting("UseDevelopmentStorage=true")).enqueue_many(
        [("\ud800",), ("fine",), (10**5000,)])
    assert Counting.sent == 1 and len(result.ids) == 1
    assert [(i, type(e)) for i, e in result.failures] == [(0, ArgumentError), (2, ArgumentError)]


BAD_DELAYS = [
    pytest.param(1e20, r"^delay 1e\+20 is too far in the future: a due time must be before the year 10000$", id="1e20"),
    pytest.param(10**5000, r"^delay <int of 16610 bits> is too far in the future", id="huge-int"),
    pytest.param(-(10**5000), r"^a delay must be zero or more seconds, got <int of 16610 bits>$", id="huge-negative"),
    pytest.param(float("inf"), r"^delay inf is too far in the future", id="inf"),
    pytest.param(timedelta.max, r"^delay datetime.timedelta\(days=999999999.* is too far in the future",
                 id="timedelta-max"),
]


@pytest.mark.parametrize("delay,message", BAD_DELAYS)
def test_bad_delay_raises_delay_error(job, delay, message):
    with pytest.raises(DelayError, match=message):
        job.enqueue_in(delay, "x")
    with pytest.raises(DelayError, match=message):
        asyncio.run(job.options(delay=delay).enqueue_async("x"))


def test_far_enqueue_at_raises_delay_error(job):
    with pytest.raises(DelayError, match=r"^enqueue_at time datetime.datetime\(9999, 12, 31.* too far in the future"):
        job.enqueue_at(datetime.max.replace(tzinfo=timezone.utc), "x")


def test_the_limits_leave_real_data_alone():
    deep = nested(MAX_NESTING - 1)
    envelope = Envelope.build("j", (deep, 10**4000, "ünïcødé ✓ 🎉"), {})
    assert Envelope.decode(envelope.encode()) == envelope
    # A delay far in the future but before year 10000 still works (it hops).
    assert takes.options(client=NoNetwork("UseDevelopmentStorage=true")).build(("x",), {}) is not None
    from azjobs.storage.delays import plan_delivery

    assert plan_delivery(timedelta(days=365 * 100)).due_at.startswith(str(datetime.now(timezone.utc).year + 100)[:2])
