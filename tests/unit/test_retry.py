"""Retry policies: back-off with jitter and a cap, fixed, none, exception filters, Fail."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

import azjobs
from azjobs.errors import ConfigurationError
from azjobs.model.retry import DEFAULT_MAX_RETRIES, Backoff, Fixed, NoRetry, build_policy


def test_default_backoff_gives_five_attempts_with_doubling_delays():
    policy = Backoff(jitter=0)
    assert DEFAULT_MAX_RETRIES == 4
    delays = [policy.decide(RuntimeError(), attempt).retry_in for attempt in range(1, 5)]
    assert delays == [1, 2, 4, 8]
    final = policy.decide(RuntimeError(), 5)
    assert not final.should_retry and "exhausted" in final.reason


@pytest.mark.parametrize("seed", range(20))
def test_jitter_stays_within_twenty_percent(seed):
    policy = Backoff(rng=random.Random(seed))
    for attempt in range(1, 5):
        nominal = 2 ** (attempt - 1)
        delay = policy.decide(RuntimeError(), attempt).retry_in
        assert nominal * 0.8 <= delay <= nominal * 1.2


def test_jitter_actually_varies():
    policy = Backoff(rng=random.Random(1))
    assert len({policy.delay_for(3) for _ in range(20)}) > 1


def test_delay_is_capped_even_with_jitter():
    policy = Backoff(100, base=60, cap=timedelta(hours=1), rng=random.Random(3))
    assert all(policy.delay_for(attempt) <= 3600 for attempt in range(1, 100))
    assert policy.delay_for(50) >= 3600 * 0.8
    # a cap beyond the 7-day visibility maximum is clamped to it
    assert Backoff(base=10, cap=timedelta(days=30), jitter=0).delay_for(60) == timedelta(days=7).total_seconds()


def test_fixed_and_no_retry():
    fixed = Fixed(5, max_retries=2)
    assert [fixed.decide(ValueError(), a).retry_in for a in (1, 2)] == [5, 5]
    assert not fixed.decide(ValueError(), 3).should_retry
    assert not NoRetry().decide(ValueError(), 1).should_retry
    with pytest.raises(ConfigurationError):
        Fixed(timedelta(days=8))


def test_fail_gives_up_whatever_the_policy():
    for policy in (Backoff(), Fixed(1, max_retries=10), Backoff(retry_on=Exception)):
        decision = policy.decide(azjobs.Fail("no"), 1)
        assert not decision.should_retry and "Fail" in decision.reason


def test_retry_on_and_give_up_on_filters():
    policy = Backoff(retry_on=(ConnectionError, TimeoutError), give_up_on=ConnectionRefusedError, jitter=0)
    assert policy.decide(TimeoutError(), 1).should_retry
    assert policy.decide(ConnectionResetError(), 1).should_retry  # a ConnectionError subclass
    assert not policy.decide(ConnectionRefusedError(), 1).should_retry  # give_up_on wins
    assert not policy.decide(ValueError(), 1).should_retry  # not in retry_on


def test_invalid_configuration_fails_at_declaration():
    for bad in (dict(max_retries=-1), dict(max_retries=True), dict(jitter=1.0), dict(factor=0.5),
                dict(retry_on="ValueError"), dict(base=-1)):
        with pytest.raises(ConfigurationError):
            Backoff(**bad)


def test_build_policy_applies_job_options():
    assert build_policy().max_retries == 4
    assert build_policy(max_retries=1).max_retries == 1
    fixed = build_policy(Fixed(3), max_retries=7, give_up_on=KeyError)
    assert isinstance(fixed, Fixed) and fixed.max_retries == 7 and fixed.give_up_on == (KeyError,)
    with pytest.raises(ConfigurationError):
        build_policy(retry="fast")


_REG = azjobs.Registry()


@azjobs.job(queue="retry-unit", registry=_REG, retry=Fixed(1, max_retries=5))
def task() -> None: ...


def test_per_call_max_retries_override_travels_in_the_envelope():
    definition = _REG.get(task.name)
    envelope = task.options(max_retries=1).build((), {})
    policy = definition.policy_for(envelope)
    assert isinstance(policy, Fixed) and policy.max_retries == 1 and policy.delay == 1
    assert definition.policy_for(task.options().build((), {})).max_retries == 5


class Job2(azjobs.Job):
    queue = "retry-unit"
    max_retries = 2
    retry = Fixed(4)
    registry = azjobs.Registry()

    def perform(self) -> None: ...


def test_class_attributes_set_the_policy():
    policy = Job2.job.retry_policy
    assert isinstance(policy, Fixed) and policy.max_retries == 2 and policy.delay == 4
