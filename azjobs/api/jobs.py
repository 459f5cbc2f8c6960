"""Job definitions: ``@azjobs.job(queue=...)`` functions and ``azjobs.Job`` classes."""

from __future__ import annotations

import functools
import inspect
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping

from .. import telemetry
from ..errors import ArgumentError, ConfigurationError
from ..model.envelope import Envelope
from ..model.queue_names import resolve_queue_name, validate_queue_name
from ..model.registry import Registry
from ..model.registry import registry as default_registry
from ..model.retry import RetryPolicy, accepts_max_retries, build_policy

# Options a job may declare (decorator keywords or class attributes).
JOB_OPTIONS = ("queue", "name", "max_retries", "retry", "retry_on", "give_up_on", "on_dead_letter", "registry",
               "track", "unique", "schedule")
# Options one call may override (``job.options(...)``); these travel with the message or steer the send.
CALL_OPTIONS = ("queue", "delay", "at", "max_retries", "trace", "client",
                "track", "unique", "unique_key", "unique_ttl")  # the last four: job state (azjobs.state)


class JobDefinition:
    """A registered job: its name, queue, target and failure policy."""

    def __init__(
        self,
        *,
        name: str,
        queue: str,
        call: Callable[..., Any],
        signature_of: Callable[..., Any],
        target_id: str,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        retry_on=None,
        give_up_on=None,
        on_dead_letter: Callable[..., Any] | None = None,
        track: bool | None = None,
        unique: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"job name must be a non-empty string, got {name!r}")
        self.name = name
        self.queue = validate_queue_name(queue)
        self.call = call
        self.target_id = target_id
        self.is_async = inspect.iscoroutinefunction(signature_of)
        try:
            self.signature = inspect.signature(signature_of)
        except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
            self.signature = None
        self.retry_policy = build_policy(retry, max_retries, retry_on, give_up_on)
        if on_dead_letter is not None and not callable(on_dead_letter):
            raise ConfigurationError(f"on_dead_letter must be callable, got {on_dead_letter!r}")
        self.on_dead_letter = on_dead_letter
        if track is not None and not isinstance(track, bool):
            raise ConfigurationError(f"track= takes True, False or None, got {track!r} (job {name})")
        if not isinstance(unique, bool):
            raise ConfigurationError(f"unique= takes True or False, got {unique!r} (job {name})")
        if unique and track is False:
            raise ConfigurationError(f"job {name}: unique=True needs job state; it cannot be track=False")
        # Job state for this job (azjobs.state): True always, False never (even with state on for the
        # process), None as the process says.
        self.track = track
        self.unique = unique  # one unfinished job per name and arguments (azjobs.state)

    def __repr__(self) -> str:
        return f"<job {self.name} queue={self.queue}>"

    def check_arguments(self, args: tuple, kwargs: Mapping[str, Any]) -> None:
        """Raise ArgumentError if the arguments do not bind to the job's signature."""
        if self.signature is None:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ArgumentError(f"arguments do not fit job {self.name}: {exc}") from None

    def run(self, args: tuple, kwargs: Mapping[str, Any]) -> Any:
        """Call the job (returns a coroutine for ``async def`` jobs)."""
        return self.call(*args, **kwargs)

    def policy_for(self, envelope: Envelope) -> RetryPolicy:
        """The retry policy for one message, with its per-call ``max_retries`` override."""
        override = envelope.options.get("max_retries") if envelope.options else None
        if isinstance(override, int) and not isinstance(override, bool) and override >= 0 \
                and accepts_max_retries(self.retry_policy):
            return build_policy(self.retry_policy, override)
        # A custom policy keeps its own limit (enqueue refuses the combination; an older
        # producer's message must not turn a failure into an immediate dead letter).
        return self.retry_policy

    # -- enqueue ---------------------------------------------------------
    def options(self, **overrides: Any) -> "BoundCall":
        """Per-call options kept apart from job arguments: ``job.options(delay=60).enqueue(x)``."""
        return BoundCall(self, overrides)

    def enqueue(self, *args: Any, **kwargs: Any) -> str:
        return BoundCall(self, {}).enqueue(*args, **kwargs)

    def enqueue_in(self, delay: float | timedelta, *args: Any, **kwargs: Any) -> str:
        return BoundCall(self, {}).enqueue_in(delay, *args, **kwargs)

    def enqueue_at(self, when: datetime, *args: Any, **kwargs: Any) -> str:
        return BoundCall(self, {}).enqueue_at(when, *args, **kwargs)

    def enqueue_many(self, calls: Iterable[Any], **send_options: Any):
        return BoundCall(self, {}).enqueue_many(calls, **send_options)

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> str:
        return await BoundCall(self, {}).enqueue_async(*args, **kwargs)

    # -- workflows -------------------------------------------------------
    def s(self, *args: Any, **kwargs: Any):
        """A workflow step (``azjobs.chain``/``azjobs.group``): the previous result comes first."""
        return BoundCall(self, {}).s(*args, **kwargs)

    def si(self, *args: Any, **kwargs: Any):
        """A workflow step that ignores the previous step's result."""
        return BoundCall(self, {}).si(*args, **kwargs)


class Call:
    """Arguments for one job call in ``enqueue_many``: ``azjobs.Call(1, to="x")``."""

    __slots__ = ("args", "kwargs")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    @classmethod
    def coerce(cls, item: Any) -> "Call":
        if isinstance(item, Call):
            return item
        if isinstance(item, (tuple, list)):
            return cls(*item)
        if isinstance(item, dict):
            return cls(**item)
        return cls(item)

    def __repr__(self) -> str:
        return f"Call(args={self.args!r}, kwargs={self.kwargs!r})"


class BoundCall:
    """A job with per-call options; built by ``job.options(...)``."""

    def __init__(self, definition: JobDefinition, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(CALL_OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown call option(s) {', '.join(unknown)} for job {definition.name}; known: {', '.join(CALL_OPTIONS)}"
            )
        if "delay" in options and "at" in options:
            raise ConfigurationError("give either delay= or at=, not both")
        if "queue" in options:
            validate_queue_name(options["queue"])
        if "max_retries" in options:
            build_policy(max_retries=options["max_retries"])  # validates
            if not accepts_max_retries(definition.retry_policy):
                raise ConfigurationError(
                    f"job {definition.name} uses the custom retry policy {definition.retry_policy!r}; per-call "
                    "max_retries applies to the built-in policies (Backoff, Fixed, NoRetry) only: give the policy "
                    "its own limit, or enqueue through a job declared with another policy"
                )
        if any(key in options for key in ("track", "unique", "unique_key", "unique_ttl")):
            from ..state.enqueue import check_call_options

            check_call_options(options)
        self.definition = definition
        self._options = dict(options)

    def options(self, **overrides: Any) -> "BoundCall":
        return BoundCall(self.definition, {**self._options, **overrides})

    @property
    def queue(self) -> str:
        """The concrete queue (a ``%AppSetting%`` name is resolved from the environment at send time)."""
        return resolve_queue_name(self._options.get("queue", self.definition.queue))

    def _client(self):
        from ..storage.client import default_client

        return self._options.get("client") or default_client()

    def build(self, args: tuple, kwargs: Mapping[str, Any]) -> Envelope:
        """The envelope for one call: arguments checked against the signature and as JSON."""
        self.definition.check_arguments(args, kwargs)
        options: dict[str, Any] = {}
        if "max_retries" in self._options:
            options["max_retries"] = self._options["max_retries"]
        if self._options.get("track") is False or (self.definition.track is False and "track" not in self._options):
            options["track"] = False  # the worker must not track it either, whatever its process says
        envelope = Envelope.build(
            self.definition.name, args, kwargs, queue=self.queue, options=options,
            trace=dict(self._options.get("trace") or {}),
        )
        return telemetry.produced(envelope)  # the caller's trace context travels in the message

    def enqueue(self, *args: Any, **kwargs: Any) -> str:
        """Send one message; returns the job id."""
        envelope = self.build(args, kwargs)
        client = self._client()
        if self._tracked(client):
            from ..state.enqueue import enqueue_tracked

            return enqueue_tracked(client, self.definition, self._options, envelope)
        client.send(envelope, delay=self._options.get("delay"), at=self._options.get("at"))
        return envelope.id

    def _tracked(self, client: Any) -> bool:
        """Whether this call writes job state (azjobs.state)."""
        from ..state.enqueue import wants_state

        return wants_state(self.definition, self._options, client)

    def _timed(self, **when: Any) -> "BoundCall":
        rest = {k: v for k, v in self._options.items() if k not in ("delay", "at")}
        return BoundCall(self.definition, {**rest, **when})

    def enqueue_in(self, delay: float | timedelta, *args: Any, **kwargs: Any) -> str:
        """Send one message that becomes visible after ``delay`` (seconds or timedelta)."""
        return self._timed(delay=delay).enqueue(*args, **kwargs)

    def enqueue_at(self, when: datetime, *args: Any, **kwargs: Any) -> str:
        """Send one message that becomes visible at ``when`` (timezone-aware)."""
        return self._timed(at=when).enqueue(*args, **kwargs)

    def enqueue_many(self, calls: Iterable[Any], *, max_workers: int = 8):
        """Send many messages concurrently; returns an EnqueueManyResult with per-item failures.

        Each item is an ``azjobs.Call``, a tuple/list of positional arguments, a dict of
        keyword arguments, or a single argument. An item whose arguments are invalid is
        reported as a failure; the others are still sent.
        """
        from ..storage.client import EnqueueManyResult

        items: list[Envelope | BaseException] = []
        for item in calls:
            call = Call.coerce(item)
            try:
                items.append(self.build(call.args, call.kwargs))
            except ArgumentError as exc:
                items.append(exc)
        envelopes = [e for e in items if isinstance(e, Envelope)]
        client = self._client()
        if self._tracked(client):
            from ..state.enqueue import send_many_tracked

            sent = send_many_tracked(client, self.definition, self._options, envelopes, max_workers)
        else:
            sent = client.send_many(
                envelopes, delay=self._options.get("delay"), at=self._options.get("at"), max_workers=max_workers
            )
        sent_iter = iter(sent)
        results = [item if isinstance(item, BaseException) else next(sent_iter) for item in items]
        return EnqueueManyResult(envelopes=[e if isinstance(e, Envelope) else None for e in items], results=results)

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> str:
        from ..storage.client import async_client

        envelope = self.build(args, kwargs)
        client = self._options.get("client")
        if self._tracked(client or _default_client()):
            import asyncio

            from ..state.enqueue import enqueue_tracked

            return await asyncio.to_thread(enqueue_tracked, client or _default_client(), self.definition,
                                           self._options, envelope)
        sender = client.aio() if client is not None else async_client()
        await sender.send(envelope, delay=self._options.get("delay"), at=self._options.get("at"))
        return envelope.id

    def s(self, *args: Any, **kwargs: Any):
        """A workflow step on this call's queue (``queue=``/``max_retries=`` options apply)."""
        from ..workflows.spec import Step

        return Step(self.definition, args, kwargs, queue=self._options.get("queue", self.definition.queue),
                    max_retries=self._options.get("max_retries"))

    def si(self, *args: Any, **kwargs: Any):
        """A workflow step that ignores the previous step's result."""
        from ..workflows.spec import Step

        return Step(self.definition, args, kwargs, queue=self._options.get("queue", self.definition.queue),
                    ignore_input=True, max_retries=self._options.get("max_retries"))


def _default_client():
    from ..storage.client import default_client

    return default_client()


def _check_options(options: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(options) - set(JOB_OPTIONS))
    if unknown:
        raise ConfigurationError(f"unknown job option(s) {', '.join(unknown)} on {where}; known: {', '.join(JOB_OPTIONS)}")


class JobFunction:
    """A function declared with ``@azjobs.job``: still callable, plus ``enqueue`` and friends."""

    def __init__(self, fn: Callable[..., Any], definition: JobDefinition) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.job = definition

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<azjobs job {self.job.name} queue={self.job.queue}>"

    name = property(lambda self: self.job.name)
    queue = property(lambda self: self.job.queue)

    def options(self, **overrides: Any) -> BoundCall:
        return self.job.options(**overrides)

    def enqueue(self, *args: Any, **kwargs: Any) -> str:
        return self.job.enqueue(*args, **kwargs)

    def enqueue_in(self, delay: float | timedelta, *args: Any, **kwargs: Any) -> str:
        return self.job.enqueue_in(delay, *args, **kwargs)

    def enqueue_at(self, when: datetime, *args: Any, **kwargs: Any) -> str:
        return self.job.enqueue_at(when, *args, **kwargs)

    def enqueue_many(self, calls: Iterable[Any], **send_options: Any):
        return self.job.enqueue_many(calls, **send_options)

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> str:
        return await self.job.enqueue_async(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any):
        return self.job.s(*args, **kwargs)

    def si(self, *args: Any, **kwargs: Any):
        return self.job.si(*args, **kwargs)


def _register(definition_kwargs: dict[str, Any], reg: Registry | None) -> JobDefinition:
    schedule = definition_kwargs.pop("schedule", None)
    target = default_registry if reg is None else reg
    known = definition_kwargs.get("name") in target
    definition = target.register(JobDefinition(**definition_kwargs))
    if schedule is not None:  # periodic: checked now, like every other option (azjobs.schedules)
        from ..schedules.declarations import declare_from_option

        try:
            declare_from_option(definition, schedule)
        except Exception:
            if not known:
                target.unregister(definition.name)
            raise
    return definition


def job(fn: Callable[..., Any] | None = None, **options: Any):
    """Declare a job: ``@azjobs.job(queue="emails")`` on a module-level function."""
    _check_options(options, "@azjobs.job")
    if "queue" not in options:
        raise ConfigurationError("@azjobs.job needs queue=, e.g. @azjobs.job(queue=\"emails\")")

    def decorate(target: Callable[..., Any]) -> JobFunction:
        if isinstance(target, JobFunction) or not callable(target) or isinstance(target, type):
            raise ConfigurationError(f"@azjobs.job decorates a function, got {target!r} (use azjobs.Job for classes)")
        qualname = getattr(target, "__qualname__", "")
        if "<locals>" in qualname or "<lambda>" in qualname:
            raise ConfigurationError(
                f"job {qualname} must be a module-level function so every worker can find it by name"
            )
        target_id = f"{target.__module__}.{qualname}"
        opts = dict(options)
        reg = opts.pop("registry", None)
        definition = _register(
            dict(name=opts.pop("name", None) or target_id, queue=opts.pop("queue"), call=target,
                 signature_of=target, target_id=target_id, **opts),
            reg,
        )
        return JobFunction(target, definition)

    if fn is not None:
        return decorate(fn)
    return decorate


class Job:
    """Base class for class-style jobs (the seed's worker class).

    ::

        class SendEmail(azjobs.Job):
            queue = "emails"
            max_retries = 3

            def perform(self, to, subject):
                ...

        SendEmail.enqueue("a@example.com", subject="hi")

    Set ``abstract = True`` on an intermediate base class to keep it out of the registry.
    """

    job: JobDefinition  # set on each concrete subclass

    def __init_subclass__(cls, **class_options: Any) -> None:
        super().__init_subclass__()
        _check_options(class_options, f"class {cls.__qualname__}")
        if cls.__dict__.get("abstract", False):
            return
        qualname = cls.__qualname__
        if "<locals>" in qualname:
            raise ConfigurationError(f"job class {qualname} must be defined at module level")
        perform = getattr(cls, "perform", None)
        if perform is None or not callable(perform) or perform is Job.__dict__.get("perform"):
            raise ConfigurationError(f"job class {qualname} must define perform(self, ...)")
        options = {key: getattr(cls, key) for key in JOB_OPTIONS if hasattr(cls, key)}
        if isinstance(options.get("name"), property):
            options.pop("name")
        options.update(class_options)
        if "queue" not in options or options["queue"] is None:
            raise ConfigurationError(f"job class {qualname} must set queue = \"...\"")
        if inspect.isfunction(inspect.getattr_static(cls, "on_dead_letter", None)):
            # an instance method: called on a fresh instance, like perform
            options["on_dead_letter"] = lambda record: cls().on_dead_letter(record)
        target_id = f"{cls.__module__}.{qualname}"
        reg = options.pop("registry", None)

        def call(*args: Any, **kwargs: Any) -> Any:
            return cls().perform(*args, **kwargs)

        static = inspect.getattr_static(cls, "perform")
        bound_perform = functools.partial(perform, None) if inspect.isfunction(static) else perform
        cls.job = _register(
            dict(name=options.pop("name", None) or target_id, queue=options.pop("queue"), call=call,
                 signature_of=bound_perform, target_id=target_id, **options),
            reg,
        )

    @classmethod
    def options(cls, **overrides: Any) -> BoundCall:
        return cls.job.options(**overrides)

    @classmethod
    def enqueue(cls, *args: Any, **kwargs: Any) -> str:
        return cls.job.enqueue(*args, **kwargs)

    @classmethod
    def enqueue_in(cls, delay: float | timedelta, *args: Any, **kwargs: Any) -> str:
        return cls.job.enqueue_in(delay, *args, **kwargs)

    @classmethod
    def enqueue_at(cls, when: datetime, *args: Any, **kwargs: Any) -> str:
        return cls.job.enqueue_at(when, *args, **kwargs)

    @classmethod
    def enqueue_many(cls, calls: Iterable[Any], **send_options: Any):
        return cls.job.enqueue_many(calls, **send_options)

    @classmethod
    async def enqueue_async(cls, *args: Any, **kwargs: Any) -> str:
        return await cls.job.enqueue_async(*args, **kwargs)

    @classmethod
    def s(cls, *args: Any, **kwargs: Any):
        return cls.job.s(*args, **kwargs)

    @classmethod
    def si(cls, *args: Any, **kwargs: Any):
        return cls.job.si(*args, **kwargs)
