"""Limits as declared: concurrency caps and rate limits that hold across every worker and instance.

A job declares its own (``@azjobs.job(queue=..., concurrency=2, rate_limit="100/m")``) or names a
shared one (``limit="payments"``) declared once with ``azjobs.limit("payments", concurrency=5,
rate_limit="50/s")``; ``limit_key`` (an argument's name, or a callable of the arguments) applies
them per value ("one import per customer at a time"). Everything is checked here, when the job
or the limit is declared; enforcing them is ``azjobs.limits`` (Table Storage), through a hook of
the execution core. Nothing here talks to Azure.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ConfigurationError

# A limit's name: letters, digits and ``. _ : -`` (it is part of a Table key, shown by ``azjobs limits``).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
MAX_CONCURRENCY = 1000  # slots are rows of one partition, read in one query page
MAX_RATE = 1_000_000
# How long a slot is held without renewal: a killed holder's slot comes back after this.
DEFAULT_LEASE_S = 60
MIN_LEASE_S = 5
MAX_LEASE_S = 3600


@dataclass(frozen=True)
class Rate:
    """At most ``count`` starts in any window of ``window_s`` seconds."""

    count: int
    window_s: int
    text: str

    def __str__(self) -> str:
        return self.text


def parse_rate(value: Any, where: str) -> Rate:
    """``"100/m"`` → Rate(100, 60); ``"N/s"``, ``"N/m"``, ``"N/h"``; anything else is a clear error."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{where}: rate_limit takes text such as \"100/m\" (N per s, m or h), "
                                 f"got {value!r}")
    match = _RATE.match(value)
    if match is None:
        raise ConfigurationError(f"{where}: rate_limit {value!r} is not N/s, N/m or N/h (e.g. \"100/m\")")
    count, unit = int(match.group(1)), match.group(2).lower()
    if not 1 <= count <= MAX_RATE:
        raise ConfigurationError(f"{where}: rate_limit {value!r} must allow 1 to {MAX_RATE:,} starts per window")
    return Rate(count, _UNITS[unit], f"{count}/{unit[0]}")


def check_concurrency(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        raise ConfigurationError(f"{where}: concurrency takes a whole number from 1 to {MAX_CONCURRENCY}, "
                                 f"got {value!r}")
    return value


def check_limit_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(f"{where}: a limit name is 1-100 letters, digits and . _ : - (starting with a "
                                 f"letter or digit), got {value!r}")
    return value


@dataclass(frozen=True)
class Limit:
    """One limit: a concurrency cap, a rate, or both, under one name (a job's own limit is named after the job)."""

    name: str
    concurrency: int | None = None
    rate: Rate | None = None
    lease_s: int = DEFAULT_LEASE_S
    shared: bool = False  # declared with azjobs.limit(...)

    def describe(self) -> str:
        parts = []
        if self.concurrency is not None:
            parts.append(f"concurrency={self.concurrency}")
        if self.rate is not None:
            parts.append(f"rate_limit={self.rate}")
        return ", ".join(parts)


def make_limit(name: str, *, concurrency: Any = None, rate_limit: Any = None, lease_s: Any = DEFAULT_LEASE_S,
               shared: bool, where: str) -> Limit:
    if shared:  # a job's own limit is named after the job (its storage key is a hash: any name will do)
        check_limit_name(name, where)
    if concurrency is None and rate_limit is None:
        raise ConfigurationError(f"{where}: a limit needs concurrency=N, rate_limit=\"N/m\", or both")
    if isinstance(lease_s, bool) or not isinstance(lease_s, int) or not MIN_LEASE_S <= lease_s <= MAX_LEASE_S:
        raise ConfigurationError(f"{where}: lease_s takes whole seconds from {MIN_LEASE_S} to {MAX_LEASE_S}, "
                                 f"got {lease_s!r}")
    return Limit(name, None if concurrency is None else check_concurrency(concurrency, where),
                 None if rate_limit is None else parse_rate(rate_limit, where), lease_s, shared)


_shared: dict[str, Limit] = {}
_shared_lock = threading.Lock()


def limit(name: str, *, concurrency: int | None = None, rate_limit: str | None = None,
          lease_s: int = DEFAULT_LEASE_S) -> Limit:
    """Declare a limit several jobs share (``@azjobs.job(..., limit="payments")``), once per process.

    ``concurrency``: at most that many runs at once; ``rate_limit``: at most N starts per second,
    minute or hour (``"50/s"``); ``lease_s``: how long a slot outlives a holder that stopped renewing
    it (a worker killed with ``kill -9``). Declaring the same name again with other values is an error.
    """
    declared = make_limit(name, concurrency=concurrency, rate_limit=rate_limit, lease_s=lease_s, shared=True,
                          where=f"azjobs.limit({name!r})")
    with _shared_lock:
        existing = _shared.get(name)
        if existing is not None and existing != declared:
            raise ConfigurationError(f"limit {name!r} is already declared as {existing.describe()}; "
                                     f"it cannot also be {declared.describe()}")
        _shared[name] = declared
    return declared


def shared_limit(name: str) -> Limit | None:
    with _shared_lock:
        return _shared.get(name)


def shared_limits() -> list[Limit]:
    with _shared_lock:
        return sorted(_shared.values(), key=lambda item: item.name)


@dataclass(frozen=True)
class JobLimits:
    """A job's limits as declared: its own (named after the job), the shared one it names, and the key."""

    own: Limit | None
    shared_name: str | None
    key: str | Callable[..., Any] | None

    def resolve(self) -> list[Limit]:
        """The limits in force, the shared one first; a shared name not declared here is a clear error."""
        found: list[Limit] = []
        if self.shared_name is not None:
            shared = shared_limit(self.shared_name)
            if shared is None:
                raise ConfigurationError(
                    f"limit {self.shared_name!r} is not declared in this process: declare it with "
                    f"azjobs.limit({self.shared_name!r}, concurrency=..., rate_limit=...) in a module the worker "
                    "or function app imports")
            found.append(shared)
        if self.own is not None:
            found.append(self.own)
        return found


def job_limits(job_name: str, options: Mapping[str, Any], signature: inspect.Signature | None) -> JobLimits | None:
    """Check a job's limit options when it is declared; None when it has none."""
    concurrency, rate_limit = options.get("concurrency"), options.get("rate_limit")
    shared, key = options.get("limit"), options.get("limit_key")
    where = f"job {job_name}"
    if concurrency is None and rate_limit is None and shared is None:
        if key is not None:
            raise ConfigurationError(f"{where}: limit_key= needs a limit (concurrency=, rate_limit= or limit=)")
        return None
    own = None
    if concurrency is not None or rate_limit is not None:
        own = make_limit(job_name, concurrency=concurrency, rate_limit=rate_limit, shared=False, where=where)
    if shared is not None:
        check_limit_name(shared, where)
    if key is not None:
        if isinstance(key, str):
            if signature is not None and not _names_parameter(signature, key):
                raise ConfigurationError(f"{where}: limit_key={key!r} is not one of its arguments "
                                         f"({', '.join(signature.parameters) or 'it takes none'})")
        elif not callable(key):
            raise ConfigurationError(f"{where}: limit_key takes an argument's name or a callable of the arguments, "
                                     f"got {key!r}")
    return JobLimits(own, shared, key)


def key_value(limits: JobLimits, signature: inspect.Signature | None, args: tuple, kwargs: Mapping[str, Any]) -> str:
    """The limit key of one call as text ("" without a key): the named argument's value, or the callable's."""
    key = limits.key
    if key is None:
        return ""
    if callable(key):
        value = key(*args, **kwargs)
    else:
        if signature is None:
            value = kwargs.get(key)
        else:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            value = bound.arguments.get(key)
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _names_parameter(signature: inspect.Signature, name: str) -> bool:
    params = signature.parameters
    if name in params and params[name].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        return True
    return False


__all__ = ["DEFAULT_LEASE_S", "JobLimits", "Limit", "Rate", "job_limits", "key_value", "limit", "parse_rate",
           "shared_limit", "shared_limits"]
