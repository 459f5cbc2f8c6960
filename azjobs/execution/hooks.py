"""Hooks: how features take part in the life of a message without the core importing them.

The executor announces each step of a delivery to its hooks, in the order they were given
(as dramatiq's middleware). A feature subclasses ``Hook`` and overrides what it needs; every
method here does nothing. Job state (``azjobs.state.tracker.StateTracker``), telemetry
(``azjobs.telemetry.hook.TelemetryHook``) and workflow steps (``azjobs.workflows.hook.StepHook``)
are hooks, wired into every host's executor by ``azjobs.hosting.standard_hooks()`` in that order.

For one delivery (a ``Handling``: the queue's facts, then the envelope and the job once
decoded), in this order; each method is called on every hook, first to last, unless it says
otherwise:

``delivered(handling)``
    every delivery, before it is decoded (telemetry starts its clock).
``finished_before(handling) -> bool``
    only for a delivery past ``maxDequeueCount``: True when the job already succeeded, so the
    message is settled without a poison record (job state). Any True wins.
``before_run(handling) -> Verdict | None``
    the job is registered and its arguments fit: a ``Verdict`` vetoes the run, ``skip`` (settle
    without running), ``defer`` (send the message on, seconds later), ``cancel`` (the job was
    cancelled: settled without running, outcome ``cancelled``) or ``throttle`` (as ``defer``, for a
    limit with no room: outcome ``throttled``; no attempt is used, and the copy's dequeue count
    starts again, so it never counts toward ``maxDequeueCount``). The first verdict wins
    and the hooks after it are not asked (job state's duplicate check; cancellation and limits
    belong here too).
``owns_retries(handling) -> bool``
    asked of a message whose job is not registered here: True when the hook's feature retries
    it itself, so the core writes no retry copy (a workflow step's workflow). Any True wins.
``started(handling)``
    the run is allowed (telemetry opens its span and counts the start).
``running(handling)`` (a context manager)
    around the job's run, on the thread or task that runs it (telemetry's current span).
``succeeded(handling, value)``
    the job returned; before its message is deleted (job state: SUCCESSFUL).
``cancelled(handling)``
    the run ended after ``handling.cancellation`` was set (whatever it returned or raised): the
    outcome is ``cancelled``, not retried, not poisoned; before its message is deleted (job
    state: CANCELLED).
``settle(handling, run) -> Result | None``
    after any run, before the retry policy: a ``Result`` takes the outcome over and the hooks
    after it are not asked (a workflow step reports to its workflow instead of retrying).
``retrying(handling, error, next_attempt, attempted=...)``
    after the retry copy is on the queue (job state: RETRYING).
``not_run(handling, decision, error) -> Result | None``
    instead of writing a poison record; the first ``Result`` wins (a workflow step that will not
    run reports to its workflow, whose own record holds the failure).
``dead_lettered(handling, decision, record, error)``
    after the poison record is written, or after ``not_run`` took the decision over (then
    ``record`` is None); job state writes FAILED or DEAD_LETTERED.
``settled(handling, result)``
    every ``Result`` the core returns (telemetry ends its span and counts the outcome).
``raised(handling, error, kind)``
    the core raised instead of returning a result (``Redeliver``, a bug), or the host gave up
    on the run (``kind`` "cancelled" by the Functions host, "timed_out" by the worker's watchdog).

``close(deadline)`` is called when the host stops (job state tries the outcome writes it kept
during a Table outage, until ``deadline``). An observer (``delivered``, ``started``,
``running``'s exit, ``settled``, ``raised``) that raises is logged and ignored: watching must
never change an outcome. The others are part of the outcome and raise through the core like
any storage error (the message is then released for redelivery).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..model.context import Cancellation
from ..model.definition import JobDefinition
from ..model.envelope import Envelope
from ..model.outcome import JobRun, MessageInfo, Result
from ..model.secrets import get_logger

if TYPE_CHECKING:
    from ..model.poison_record import PoisonRecord
    from .executor import Executor
    from .recorder import DeadLetter

log = get_logger("azjobs")


@dataclass
class Handling:
    """One delivery of a message as the core handles it: what the queue said, then what decoding found.

    ``notes`` is the hooks' own per-delivery scratch space (telemetry keeps its span there), keyed
    by whatever a hook chooses. ``cancellation`` is set by a hook that learns the job was cancelled
    while it runs (job state); the job sees it as ``current_job().cancelled``.
    """

    info: MessageInfo
    envelope: Envelope | None = None
    definition: JobDefinition | None = None
    notes: dict[Any, Any] = field(default_factory=dict)
    cancellation: Cancellation = field(default_factory=Cancellation)
    # The call's (args, kwargs) once loaded and checked (claim-checked ones included): set before ``before_run``.
    arguments: tuple[tuple, dict] | None = None


ACTIONS = ("skip", "defer", "cancel", "throttle")


@dataclass(frozen=True)
class Verdict:
    """A hook's veto of a run: ``skip`` (settle the message without running), ``defer`` (send it on),
    ``cancel`` (settle it without running, outcome ``cancelled``) or ``throttle`` (send it on, outcome
    ``throttled``, no attempt used)."""

    action: str  # "skip", "defer", "cancel" or "throttle"
    why: str = ""
    defer_s: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"a verdict is one of {', '.join(map(repr, ACTIONS))}, got {self.action!r}")


class Hook:
    """One feature's part in the life of a message; every method is a no-op here (see the module docstring).

    A hook is made for one executor: ``Executor(hooks=[StateTracker, ...])`` calls each factory with itself.
    """

    def __init__(self, executor: "Executor") -> None:
        self.executor = executor

    def delivered(self, handling: Handling) -> None:
        pass

    def finished_before(self, handling: Handling) -> bool:
        return False

    def before_run(self, handling: Handling) -> Verdict | None:
        return None

    def owns_retries(self, handling: Handling) -> bool:
        """True when this hook's feature retries the delivery itself, so the core writes no retry copy of a
        message it cannot run (a workflow step: its workflow retries, or fails at once)."""
        return False

    def started(self, handling: Handling) -> None:
        pass

    def running(self, handling: Handling) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def succeeded(self, handling: Handling, value: Any) -> None:
        pass

    def cancelled(self, handling: Handling) -> None:
        pass

    def settle(self, handling: Handling, run: JobRun) -> Result | None:
        return None

    def retrying(self, handling: Handling, error: BaseException, next_attempt: int, *, attempted: bool) -> None:
        pass

    def not_run(self, handling: Handling, decision: "DeadLetter", error: BaseException | None) -> Result | None:
        """Instead of a poison record: a ``Result`` takes the decision over (a workflow step reports to its
        workflow); the first one wins."""
        return None

    def dead_lettered(self, handling: Handling, decision: "DeadLetter", record: "PoisonRecord | None",
                      error: BaseException | None) -> None:
        pass

    def settled(self, handling: Handling, result: Result) -> None:
        pass

    def raised(self, handling: Handling, error: BaseException, kind: str) -> None:
        pass

    def close(self, deadline: float | None = None) -> None:
        """The host is stopping; ``deadline`` (time.monotonic()) is when it must be done."""


HookFactory = Callable[["Executor"], Hook]


class Hooks:
    """The hooks of one executor, called in order; see the module docstring for who answers what.

    Only the hooks that override a method are called for it (the bound methods are listed once,
    when the executor is made), so a feature costs nothing at the steps it takes no part in.
    """

    _METHODS = ("delivered", "finished_before", "before_run", "owns_retries", "started", "running", "succeeded",
                "cancelled", "settle", "retrying", "not_run", "dead_lettered", "settled", "raised", "close")

    def __init__(self, executor: "Executor", factories: Sequence[HookFactory]) -> None:
        self.all: tuple[Hook, ...] = tuple(make(executor) for make in factories)
        self._calls: dict[str, tuple[Callable[..., Any], ...]] = {
            name: tuple(getattr(hook, name) for hook in self.all
                        if getattr(type(hook), name, None) is not getattr(Hook, name))
            for name in self._METHODS
        }

    def __iter__(self) -> Iterator[Hook]:
        return iter(self.all)

    def of(self, kind: type) -> Any:
        """The hook of class ``kind`` (or a subclass); None if this executor has none."""
        for hook in self.all:
            if isinstance(hook, kind):
                return hook
        return None

    # -- observers: a failure is logged, never allowed to change an outcome --------------------
    def _observe(self, method: str, *args: Any) -> None:
        for call in self._calls[method]:
            try:
                call(*args)
            except Exception:
                log.exception("hook %s.%s failed", type(call.__self__).__name__, method,
                              extra={"action": "hook_failed", "hook": type(call.__self__).__name__, "step": method})

    def delivered(self, handling: Handling) -> None:
        self._observe("delivered", handling)

    def started(self, handling: Handling) -> None:
        self._observe("started", handling)

    def settled(self, handling: Handling, result: Result) -> None:
        self._observe("settled", handling, result)

    def raised(self, handling: Handling, error: BaseException, kind: str) -> None:
        self._observe("raised", handling, error, kind)

    def running(self, handling: Handling) -> contextlib.AbstractContextManager[Any]:
        calls = self._calls["running"]
        if not calls:
            return _NOTHING
        if len(calls) == 1:
            return calls[0](handling)
        return _nested([call(handling) for call in calls])

    # -- deciders: the first answer wins -------------------------------------------------------
    def finished_before(self, handling: Handling) -> bool:
        return any(call(handling) for call in self._calls["finished_before"])

    def owns_retries(self, handling: Handling) -> bool:
        return any(call(handling) for call in self._calls["owns_retries"])

    def before_run(self, handling: Handling) -> Verdict | None:
        for call in self._calls["before_run"]:
            verdict = call(handling)
            if verdict is not None:
                return verdict
        return None

    def settle(self, handling: Handling, run: JobRun) -> Result | None:
        for call in self._calls["settle"]:
            result = call(handling, run)
            if result is not None:
                return result
        return None

    def not_run(self, handling: Handling, decision: "DeadLetter", error: BaseException | None) -> Result | None:
        for call in self._calls["not_run"]:
            result = call(handling, decision, error)
            if result is not None:
                return result
        return None

    # -- part of the outcome: raised through the core like any storage error -------------------
    def succeeded(self, handling: Handling, value: Any) -> None:
        for call in self._calls["succeeded"]:
            call(handling, value)

    def cancelled(self, handling: Handling) -> None:
        for call in self._calls["cancelled"]:
            call(handling)

    def retrying(self, handling: Handling, error: BaseException, next_attempt: int, *, attempted: bool) -> None:
        for call in self._calls["retrying"]:
            call(handling, error, next_attempt, attempted=attempted)

    def dead_lettered(self, handling: Handling, decision: "DeadLetter", record: "PoisonRecord | None",
                      error: BaseException | None) -> None:
        for call in self._calls["dead_lettered"]:
            call(handling, decision, record, error)

    def close(self, deadline: float | None = None) -> None:
        for call in self._calls["close"]:
            try:
                call(deadline)
            except Exception:
                log.exception("hook %s could not close", type(call.__self__).__name__,
                              extra={"action": "hook_failed", "hook": type(call.__self__).__name__, "step": "close"})


_NOTHING = contextlib.nullcontext()


@contextlib.contextmanager
def _nested(managers: list[contextlib.AbstractContextManager[Any]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield


__all__ = ["Handling", "Hook", "HookFactory", "Hooks", "Verdict"]
