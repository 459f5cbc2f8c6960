"""``azjobs.testing.inline()`` and ``recording()``: every enqueue of the process runs at once, or is recorded.

Both route the process's enqueues to an ``InlineClient`` (azjobs/testing/engine.py) through
``azjobs.storage.client.routed_to``, the one seam every enqueue path asks for its client
(``job.enqueue`` and its family, ``enqueue_many``, ``enqueue_async``, ``flow.enqueue``, periodic
ticks, the Django backend). ``azjobs.result`` / ``azjobs.wait`` and ``WorkflowHandle`` read the
default client's stores, so they answer from memory while the block runs. Each is a context
manager and a decorator (of plain and ``async def`` functions)::

    with azjobs.testing.inline() as jobs:
        job_id = send_welcome_email.enqueue("ada@example.com")
        assert azjobs.result(job_id).status is azjobs.JobStatus.SUCCESSFUL
"""

from __future__ import annotations

import functools
import inspect
from contextlib import ExitStack
from datetime import datetime
from typing import Any, Callable

from ..errors import ConfigurationError
from ..model.envelope import utcnow
from ..model.poison_record import PoisonRecord
from ..model.registry import Registry
from ..schedules.declarations import schedules, time_zone
from ..storage.client import client_for, routed_to
from .engine import DEFAULT_MAX_DEPTH, Enqueued, InlineClient, Ran, _aware


class _Mode:
    """A context manager and decorator that routes the process's enqueues to one ``InlineClient``."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._stack: ExitStack | None = None
        self.client: InlineClient | None = None

    def __enter__(self) -> Any:
        if self._stack is not None:
            raise ConfigurationError(f"this {self._name}() block is already open; make a new one to nest")
        client = InlineClient(**self._options)
        stack = ExitStack()
        stack.callback(client.close)
        stack.enter_context(routed_to(client))
        self._stack, self.client = stack, client
        return self._session(client)

    def __exit__(self, *exc: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        options = self._options
        kind = type(self)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with kind(**options):
                    return await fn(*args, **kwargs)
            return run_async

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with kind(**options):
                return fn(*args, **kwargs)
        return run

    _name = "inline"

    def _session(self, client: InlineClient) -> Any:
        return Inline(client)


class Inline:
    """What ``with azjobs.testing.inline() as jobs`` gives: what ran, and the module functions' session."""

    def __init__(self, client: InlineClient) -> None:
        self.client = client

    @property
    def runs(self) -> list[Ran]:
        """Every delivery the core handled in this block, in order (retries and workflow steps included)."""
        return list(self.client.runs)

    @property
    def jobs(self) -> list[Enqueued]:
        """Every job enqueued in this block (by the test or by jobs), in order."""
        return list(self.client.enqueued)

    def poisoned(self, queue: str) -> list[PoisonRecord]:
        return self.client.poisoned(queue)

    def run_due(self, at: datetime | None = None) -> list[Ran]:
        return self.client.run_due(at)

    def fire(self, schedule_name: str, at: datetime | None = None) -> str:
        return fire(schedule_name, at)


class Recording(Inline):
    """What ``with azjobs.testing.recording() as jobs`` gives: ``jobs.jobs`` lists the enqueues; ``run_all()``."""

    def run_all(self) -> list[Ran]:
        """Run every recorded job through the core, and what they enqueue and retry, in order; returns what ran."""
        return self.client.run_all()


def inline(fn: Callable[..., Any] | None = None, *, retries: bool = True, delays: str = "skip",
           max_depth: int = DEFAULT_MAX_DEPTH, registry: Registry | None = None) -> Any:
    """Run every job enqueued in this process at once, through the real execution core, with no storage.

    - ``retries=False``: a failed attempt's retry copy is kept, not run (``run_due`` runs it);
    - ``delays="keep"``: a delayed message (``enqueue_in``/``enqueue_at``, retry back-off) waits for
      ``run_due(at=...)`` instead of running at once;
    - ``max_depth``: how deep jobs enqueued by jobs may nest before ``InlineRecursionError``;
    - ``registry``: where the core looks jobs up (the default registry otherwise).

    A context manager (``with inline() as jobs``) and a decorator (``@inline`` or ``@inline(...)``).
    """
    mode = _Mode(retries=retries, delays=delays, max_depth=max_depth, registry=registry)
    return mode(fn) if fn is not None else mode


class _RecordingMode(_Mode):
    _name = "recording"

    def _session(self, client: InlineClient) -> Any:
        return Recording(client)


def recording(fn: Callable[..., Any] | None = None, *, registry: Registry | None = None) -> Any:
    """Record every job enqueued in this process instead of running it: ``jobs.jobs`` lists them (job, args,
    kwargs, queue, options, delay); ``jobs.run_all()`` runs them through the core as ``inline()`` would."""
    mode = _RecordingMode(capture=True, registry=registry)
    return mode(fn) if fn is not None else mode


def current() -> InlineClient:
    """The ``InlineClient`` of the innermost open ``inline()``/``recording()`` block."""
    client = client_for(None)
    if not isinstance(client, InlineClient):
        raise ConfigurationError("no azjobs.testing.inline() or recording() block is open (this needs one: "
                                 "`with azjobs.testing.inline():`, or the azjobs_inline fixture)")
    return client


def poisoned(queue: str) -> list[PoisonRecord]:
    """The poison records written for ``queue`` in the open block (``PoisonRecord``s: ``.error``, ``.attempts``, ``.envelope``)."""
    return current().poisoned(queue)


def run_due(at: datetime | None = None) -> list[Ran]:
    """Run the waiting messages due at ``at`` (default now) in the open block; returns what ran."""
    return current().run_due(at)


def fire(schedule_name: str, at: datetime | None = None) -> str:
    """Fire periodic job ``schedule_name`` for its tick at ``at`` (the latest tick at or before it; default now)
    as the worker or the timer trigger would; returns the tick's job id (the job runs as any enqueue does)."""
    found = next((item for item in schedules if item.name == schedule_name), None)
    if found is None:
        known = ", ".join(item.name for item in schedules) or "none is declared (is its module imported?)"
        raise ConfigurationError(f"no periodic job named {schedule_name!r}; known: {known}")
    moment = _aware(at, "fire(at=...)") if at is not None else utcnow()
    tick = found.expression.previous_at_or_before(moment, time_zone())
    if tick is None:
        raise ConfigurationError(f"periodic job {schedule_name!r} has no tick at or before {moment.isoformat()}")
    return found.fire(tick, client=current()).id


__all__ = ["Inline", "Recording", "current", "fire", "inline", "poisoned", "recording", "run_due"]
