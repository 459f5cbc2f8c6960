"""Limits as declared (checked when the job is declared), the rate window's arithmetic, and the weighted ready queue.

Storage behaviour (slots, windows, throttling, kill -9) is proven against Azurite in
tests/integration/test_limits.py.
"""

from __future__ import annotations

import json
import queue as queue_module
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

import azjobs
from azjobs.errors import ConfigurationError
from azjobs.limits import tokens
from azjobs.limits.slots import SKEW_S, live_rows
from azjobs.model.limits import Limit, key_value, parse_rate
from azjobs.runtime.weighted import WeightedReady, split_weight


def _declare(**options):
    def import_customers(customer_id, *, dry_run=False):
        return customer_id

    import_customers.__qualname__ = "import_customers"  # a module-level name, as the decorator requires
    return azjobs.job(queue="limits-unit", registry=azjobs.Registry(), **options)(import_customers)


@pytest.mark.parametrize("text, count, window", [("100/m", 100, 60), ("5/s", 5, 1), ("2/h", 2, 3600),
                                                 (" 7 / min ", 7, 60), ("1/second", 1, 1)])
def test_rate_limits_are_read_as_starts_per_window(text, count, window):
    rate = parse_rate(text, "job x")
    assert (rate.count, rate.window_s) == (count, window)


@pytest.mark.parametrize("options, message", [
    ({"rate_limit": "100"}, "is not N/s, N/m or N/h"),
    ({"rate_limit": "0/s"}, "must allow 1 to"),
    ({"rate_limit": 100}, "takes text such as"),
    ({"rate_limit": "5/d"}, "is not N/s, N/m or N/h"),
    ({"concurrency": 0}, "from 1 to 1000"),
    ({"concurrency": True}, "from 1 to 1000"),
    ({"concurrency": 2.5}, "from 1 to 1000"),
    ({"limit_key": "customer_id"}, "limit_key= needs a limit"),
    ({"concurrency": 1, "limit_key": "customer"}, "limit_key='customer' is not one of its arguments"),
    ({"concurrency": 1, "limit_key": 3}, "an argument's name or a callable"),
    ({"limit": "pay/ments"}, "a limit name is"),
])
def test_bad_limit_options_fail_when_the_job_is_declared(options, message):
    with pytest.raises(ConfigurationError, match=message):
        _declare(**options)


def test_limits_are_refused_per_call_because_they_are_declarations():
    job = _declare(concurrency=2)
    for option in ("concurrency", "rate_limit", "limit_key", "limit"):
        with pytest.raises(ConfigurationError, match="cannot be set per call .* limits are declarations"):
            job.options(**{option: 1})


class ImportCustomers(azjobs.Job, registry=azjobs.Registry()):
    queue = "limits-unit"
    concurrency = 1
    rate_limit = "10/m"
    limit_key = "customer_id"

    def perform(self, customer_id):
        return customer_id


def test_a_class_job_declares_limits_as_class_attributes():
    own = ImportCustomers.job.limits.own
    assert (own.name, own.concurrency, str(own.rate)) == (ImportCustomers.job.name, 1, "10/m")
    assert ImportCustomers.job.limits.key == "customer_id"


def test_the_limit_key_is_the_named_argument_however_it_was_passed_or_a_callables_value():
    job = _declare(concurrency=1, limit_key="customer_id")
    definition = job.job
    assert key_value(definition.limits, definition.signature, ("acme/🦄",), {}) == "acme/🦄"
    assert key_value(definition.limits, definition.signature, (), {"customer_id": 42}) == "42"
    by_call = _declare(concurrency=1, limit_key=lambda customer_id, dry_run=False: f"{customer_id}:{dry_run}").job
    assert key_value(by_call.limits, by_call.signature, ("acme",), {"dry_run": True}) == "acme:True"


def test_a_shared_limit_is_declared_once_and_a_job_naming_an_undeclared_one_says_how_to_declare_it():
    first = azjobs.limit("unit-payments", concurrency=5, rate_limit="50/s")
    assert azjobs.limit("unit-payments", concurrency=5, rate_limit="50/s") == first
    with pytest.raises(ConfigurationError, match="already declared as concurrency=5, rate_limit=50/s"):
        azjobs.limit("unit-payments", concurrency=6)
    with pytest.raises(ConfigurationError, match="needs concurrency=N"):
        azjobs.limit("unit-nothing")
    job = _declare(limit="unit-payments").job
    assert job.limits.resolve() == [first]
    orphan = _declare(limit="unit-never-declared").job
    with pytest.raises(ConfigurationError, match=r"azjobs.limit\('unit-never-declared', concurrency=\.\.\."):
        orphan.limits.resolve()


def test_no_window_of_the_rate_ever_holds_more_than_the_limit():
    limit = Limit("unit", rate=parse_rate("5/s", "unit"))
    entity = None
    admitted_ms = []
    for ms in range(1_000_000_000, 1_000_010_000, 10):  # a start tried every 10 ms for 10 s
        now = datetime.fromtimestamp(ms / 1000, timezone.utc)
        current, counted, _ = tokens.window_state(limit, entity, now)
        if sum(counted.values()) < 5:
            counted[current] = counted.get(current, 0) + 1
            entity = {"Buckets": json.dumps({str(k): v for k, v in counted.items()})}
            admitted_ms.append(ms)
    # Any closed window of 1 s, wherever it starts (every start of one is an admission, at worst).
    assert max(sum(1 for other in admitted_ms if first <= other <= first + 1000) for first in admitted_ms) <= 5
    assert len(admitted_ms) >= 40  # 5 per 1.1 s at most: the price of the guarantee


def test_a_full_rate_window_says_when_its_oldest_start_leaves():
    limit = Limit("unit", rate=parse_rate("2/s", "unit"))
    start = datetime.fromtimestamp(2_000_000.05, timezone.utc)  # sub-window 20_000_000
    current, _, width = tokens.window_state(limit, None, start)
    counted = {current: 2}
    later = datetime.fromtimestamp(2_000_000.5, timezone.utc)
    wait = tokens._room_in(counted, 2, current, width, later)
    assert wait == pytest.approx((current + 11) * width - later.timestamp())
    assert 0.5 <= wait <= 0.7


def test_a_slot_is_free_only_a_clock_margin_after_its_lease_ended():
    now = datetime.fromtimestamp(3_000_000, timezone.utc)
    just_ended = {"LeaseUntil": datetime.fromtimestamp(3_000_000 - SKEW_S + 1, timezone.utc)}
    long_ended = {"LeaseUntil": datetime.fromtimestamp(3_000_000 - SKEW_S - 1, timezone.utc)}
    assert live_rows([just_ended, long_ended], now) == [just_ended]


@dataclass
class _Delivery:
    queue: str
    n: int


def test_weighted_ready_hands_out_4_to_1_while_both_wait_and_lends_an_idle_share():
    ready = WeightedReady({"critical": 4, "default": 1})
    for n in range(40):
        ready.put(_Delivery("critical", n))
        ready.put(_Delivery("default", n))
    first = [ready.get().queue for _ in range(25)]
    assert first.count("critical") == 20 and first.count("default") == 5
    rest = [ready.get().queue for _ in range(55)]
    assert rest.count("critical") == 20 and rest[-30:] == ["default"] * 30  # critical ran dry: default takes all
    ready.put(None)
    ready.put(_Delivery("default", 99))
    assert ready.get().n == 99 and ready.get() is None  # a stop signal only once nothing waits
    with pytest.raises(queue_module.Empty):
        ready.get_nowait()


@pytest.mark.parametrize("text, expected", [("critical:4", ("critical", 4)), ("default", ("default", None)),
                                            ("%QUEUE:NAME%", ("%QUEUE:NAME%", None)), ("q:1000", ("q", 1000))])
def test_queue_weights_are_read_from_q(text, expected):
    assert split_weight(text) == expected


@pytest.mark.parametrize("text, message", [("critical:0", "must be 1 to 1000"), ("critical:x", "a whole number"),
                                           ("critical:1001", "must be 1 to 1000")])
def test_bad_queue_weights_are_refused(text, message):
    with pytest.raises(ConfigurationError, match=message):
        split_weight(text)


def test_a_limited_job_runs_under_a_test_double_client_that_has_no_storage_account():
    from azjobs.model.envelope import Envelope
    from azjobs.model.outcome import MessageInfo, Outcome
    from azjobs.testing import RecordingClient, RecordingExecutor

    job = _declare(concurrency=1, rate_limit="1/h", limit_key="customer_id")
    registry = azjobs.Registry()
    registry.register(job.job)
    executor = RecordingExecutor(registry=registry, client=RecordingClient())
    for _ in range(2):  # a second start within the hour: a real table would throttle it
        body = Envelope.build(job.job.name, ("acme",)).encode("base64")
        assert executor.execute(body, MessageInfo("limits-unit")).outcome is Outcome.SUCCEEDED
