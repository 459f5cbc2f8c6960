"""Jobs for the failure-handling tests (issue 5), in a private registry.

Each job records its calls under a ``token`` argument so a test sees only its own runs.
Tests re-register these definitions on their unique queue (see ``registry_for``).
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from collections import defaultdict

import azjobs
from azjobs.model.retry import Backoff, Fixed, NoRetry

REGISTRY = azjobs.Registry()
QUEUE = "azj-failure-tests"

_lock = threading.Lock()
CALLS: dict[str, list[tuple[float, tuple]]] = defaultdict(list)
DEAD: dict[str, list] = defaultdict(list)


def _record(token: str, *details) -> int:
    with _lock:
        CALLS[token].append((time.monotonic(), details))
        return len(CALLS[token])


def calls(token: str) -> list[tuple[float, tuple]]:
    with _lock:
        return list(CALLS.get(token, []))


def _hook(record) -> None:
    token = record.envelope.args[0] if record.envelope and record.envelope.args else "?"
    with _lock:
        DEAD[token].append(record)


@azjobs.job(queue=QUEUE, registry=REGISTRY, retry=Backoff(4, base=1, factor=2, jitter=0))
def flaky(token: str, failures: int) -> None:
    """Fails ``failures`` times, then succeeds."""
    if _record(token) <= failures:
        raise RuntimeError(f"flaky failure for {token}")


@azjobs.job(queue=QUEUE, registry=REGISTRY, retry=Fixed(0, max_retries=2), on_dead_letter=_hook)
def always_fails(token: str) -> None:
    _record(token)
    raise ValueError(f"boom {token}")


@azjobs.job(queue=QUEUE, registry=REGISTRY, on_dead_letter=_hook)
def gives_up(token: str) -> None:
    _record(token)
    raise azjobs.Fail(f"cannot ever work for {token}")


@azjobs.job(queue=QUEUE, registry=REGISTRY)
def record(token: str, value: int = 0) -> None:
    _record(token, value)


@azjobs.job(queue=QUEUE, registry=REGISTRY)
def big(token: str, data: str) -> None:
    """Records the size and hash of a large argument."""
    _record(token, len(data), hashlib.sha256(data.encode("utf-8")).hexdigest())


@azjobs.job(queue=QUEUE, registry=REGISTRY, retry=NoRetry())
def big_fails_once(token: str, data: str) -> None:
    """Fails (straight to poison) on its first call; succeeds when replayed."""
    if _record(token, len(data), hashlib.sha256(data.encode("utf-8")).hexdigest()) == 1:
        raise RuntimeError("first call fails")


@azjobs.job(queue=QUEUE, registry=REGISTRY, retry=NoRetry())
async def async_fails(token: str) -> None:
    _record(token)
    raise KeyError(token)


def registry_for(queue: str) -> azjobs.Registry:
    """A registry with every job above declared on ``queue`` (same names)."""
    reg = azjobs.Registry()
    for definition in REGISTRY:
        clone = copy.copy(definition)
        clone.queue = queue
        reg.register(clone)
    return reg
