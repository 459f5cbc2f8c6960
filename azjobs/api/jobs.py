"""Declaring jobs: ``@azjobs.job(queue=...)`` functions and ``azjobs.Job`` classes.

A declaration registers a ``JobDefinition`` (``azjobs.model.definition``) and gives the
function or class its ``enqueue`` family and workflow steps (``azjobs.api.calls``). A
``schedule=`` option declares a periodic job too (``azjobs.schedules``, imported only then).
"""

from __future__ import annotations

import functools
import inspect
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from ..errors import ConfigurationError
from ..model import definition as model_definition
from ..model.definition import JOB_OPTIONS, check_job_options
from ..model.registry import Registry
from ..model.registry import registry as default_registry
from .calls import BoundCall


class JobDefinition(model_definition.JobDefinition):
    """``azjobs.JobDefinition``: a job's definition (``azjobs.model.definition``) plus enqueueing it.

    ``@azjobs.job`` and ``azjobs.Job`` register one; a definition made directly (and registered with
    ``Registry.register``) can be enqueued the same way.
    """

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
    check_job_options(options, "@azjobs.job")
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
        check_job_options(class_options, f"class {cls.__qualname__}")
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
