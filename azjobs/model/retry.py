"""Retry policies: given a failure and the attempt number, retry after a delay or give up.

The Functions host has no back-off for queue triggers; azjobs owns it, so a job retries
the same way on Functions and in the local runner.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, Union, runtime_checkable

from ..errors import ConfigurationError, Fail

Seconds = Union[int, float, timedelta]
DEFAULT_MAX_RETRIES = 4  # 5 attempts in all, like the host's maxDequeueCount
MAX_RETRY_DELAY = timedelta(days=7)


def to_seconds(value: Seconds, what: str) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(f"{what} must be seconds (int/float) or a timedelta, got {value!r}")
    if seconds < 0:
        raise ConfigurationError(f"{what} must not be negative, got {value!r}")
    return seconds


@dataclass(frozen=True)
class RetryDecision:
    """``retry_in`` seconds until the next attempt, or None to give up; ``reason`` says why."""

    retry_in: float | None
    reason: str = ""

    @property
    def should_retry(self) -> bool:
        return self.retry_in is not None


@runtime_checkable
class RetryPolicy(Protocol):
    def decide(self, error: BaseException, attempt: int) -> RetryDecision:
        """Decide after ``attempt`` (1-based) failed with ``error``."""


class _Limited:
    """Common limit and exception filters."""

    max_retries: int
    retry_on: tuple[type[BaseException], ...]
    give_up_on: tuple[type[BaseException], ...]

    def _init_limits(self, max_retries, retry_on, give_up_on) -> None:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        self.max_retries = max_retries
        self.retry_on = _exception_types(retry_on, "retry_on")
        self.give_up_on = _exception_types(give_up_on, "give_up_on")

    def _give_up(self, error: BaseException, attempt: int) -> RetryDecision | None:
        if isinstance(error, Fail):
            return RetryDecision(None, "the job raised azjobs.Fail")
        if self.give_up_on and isinstance(error, self.give_up_on):
            return RetryDecision(None, f"{type(error).__name__} is in give_up_on")
        if self.retry_on and not isinstance(error, self.retry_on):
            return RetryDecision(None, f"{type(error).__name__} is not in retry_on")
        if attempt > self.max_retries:
            return RetryDecision(None, f"retries exhausted after {attempt} attempt(s) (max_retries={self.max_retries})")
        return None

    def with_max_retries(self, max_retries: int):
        import copy

        clone = copy.copy(self)
        clone._init_limits(max_retries, self.retry_on, self.give_up_on)
        return clone


def _exception_types(value, what: str) -> tuple[type[BaseException], ...]:
    if value is None:
        return ()
    items = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError(f"{what} takes exception classes, got {item!r}")
    return tuple(items)


class Backoff(_Limited):
    """Exponential back-off with jitter and a cap: about base, 2·base, 4·base … ± jitter."""

    def __init__(
        self,
        max_retries: int = DEFAULT_MAX_RETRIES,
        *,
        base: Seconds = 1.0,
        factor: float = 2.0,
        cap: Seconds = timedelta(hours=1),
        jitter: float = 0.2,
        retry_on=None,
        give_up_on=None,
        rng: random.Random | None = None,
    ) -> None:
        self._init_limits(max_retries, retry_on, give_up_on)
        self.base = to_seconds(base, "base")
        self.cap = min(to_seconds(cap, "cap"), MAX_RETRY_DELAY.total_seconds())
        if not isinstance(factor, (int, float)) or factor < 1:
            raise ConfigurationError(f"factor must be >= 1, got {factor!r}")
        if not 0 <= jitter < 1:
            raise ConfigurationError(f"jitter must be in [0, 1), got {jitter!r}")
        self.factor = float(factor)
        self.jitter = jitter
        self._rng = rng or random.Random()

    def delay_for(self, attempt: int) -> float:
        exponent = min(attempt - 1, 64)
        delay = min(self.base * self.factor**exponent, self.cap)
        if self.jitter:
            delay *= 1 + self._rng.uniform(-self.jitter, self.jitter)
        return max(0.0, min(delay, self.cap))

    def decide(self, error: BaseException, attempt: int) -> RetryDecision:
        return self._give_up(error, attempt) or RetryDecision(self.delay_for(attempt), "back-off")

    def __repr__(self) -> str:
        return f"Backoff(max_retries={self.max_retries}, base={self.base}, factor={self.factor}, cap={self.cap})"


class Fixed(_Limited):
    """The same delay before every retry (what host.json visibilityTimeout gives, but counted)."""

    def __init__(self, delay: Seconds, max_retries: int = DEFAULT_MAX_RETRIES, *, retry_on=None, give_up_on=None):
        self._init_limits(max_retries, retry_on, give_up_on)
        self.delay = to_seconds(delay, "delay")
        if self.delay > MAX_RETRY_DELAY.total_seconds():
            raise ConfigurationError("a retry delay cannot exceed 7 days")

    def decide(self, error: BaseException, attempt: int) -> RetryDecision:
        return self._give_up(error, attempt) or RetryDecision(self.delay, "fixed delay")

    def __repr__(self) -> str:
        return f"Fixed({self.delay}, max_retries={self.max_retries})"


class NoRetry(_Limited):
    """Never retry: the first failure goes to the poison queue."""

    def __init__(self) -> None:
        self._init_limits(0, None, None)

    def decide(self, error: BaseException, attempt: int) -> RetryDecision:
        return self._give_up(error, attempt) or RetryDecision(None, "the job does not retry")

    def __repr__(self) -> str:
        return "NoRetry()"


def accepts_max_retries(policy: RetryPolicy) -> bool:
    """Whether a per-call ``max_retries`` can apply to ``policy`` (the built-in policies only)."""
    return isinstance(policy, _Limited)


def build_policy(retry=None, max_retries=None, retry_on=None, give_up_on=None) -> RetryPolicy:
    """The policy a job declared: ``retry=`` wins; otherwise Backoff with the given limits."""
    if retry is not None:
        if not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a retry policy (Backoff, Fixed, NoRetry), got {retry!r}")
        if any(v is not None for v in (max_retries, retry_on, give_up_on)) and not isinstance(retry, _Limited):
            raise ConfigurationError("max_retries/retry_on/give_up_on apply to built-in policies only")
        if isinstance(retry, _Limited):
            if max_retries is not None:
                retry = retry.with_max_retries(max_retries)
            if retry_on is not None or give_up_on is not None:
                import copy

                retry = copy.copy(retry)
                retry._init_limits(retry.max_retries, retry_on or retry.retry_on, give_up_on or retry.give_up_on)
        return retry
    return Backoff(
        DEFAULT_MAX_RETRIES if max_retries is None else max_retries, retry_on=retry_on, give_up_on=give_up_on
    )
