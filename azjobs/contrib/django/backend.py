"""``AzureQueueBackend``: Django's Tasks backend API on Azure Storage Queues.

::

    TASKS = {
        "default": {
            "BACKEND": "azjobs.contrib.django.AzureQueueBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {
                "connection": "AzureWebJobsStorage",    # the app setting (the default), or
                # "connection_string": "...",           # a connection string itself
                "queue_prefix": "",                     # Azure queue = prefix + Django queue name
                "queue_names": {"emails": "site-mail"}, # or one Azure name per Django queue
                "max_retries": 4,                       # the azjobs retry policy of every task
                # "retry": azjobs.Backoff(...), "retry_on": (...), "give_up_on": (...)
                "results": True,                        # get_result() through the job state store
                # "inline": True,                       # tests: each task runs at once, in memory
            },
        },
    }

With ``"inline": True`` (a test settings module's choice) nothing is sent: the backend's client is an
``azjobs.testing.InlineClient``, so ``task.enqueue()`` runs the task through the execution core before it
returns, with results, retries and poison records kept in memory (see ``azjobs.testing``).

A task becomes one azjobs envelope named ``django:<module path>`` on the Azure queue its
Django queue maps to, so the Functions host and the ``azjobs`` worker run it through the one
execution core. Storage Queues have no priority, so ``supports_priority`` is False and a
task with a priority is refused (``InvalidTask``), as Django specifies.
"""

from __future__ import annotations

from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskResult, TaskResultStatus
from django.tasks.exceptions import InvalidTask
from django.tasks.signals import task_enqueued

from ...errors import ConfigurationError
from ...model.envelope import Envelope, parse_time
from ...storage.aio import AsyncClient
from ...model.queue_names import validate_queue_name
from ...storage.client import Client, client_for
from ...storage.connection import DEFAULT_SETTING, Connection, connection_from_string, resolve_connection
from .checks import check_backend
from .discovery import discover_tasks
from .known import OPTION_NAMES, OPTIONS_KEY, job_name
from .results import forget_ready_record, read_result, with_ready_record
from .times import to_django

#: The OPTIONS an AzureQueueBackend understands.
RETRY_OPTIONS = ("max_retries", "retry", "retry_on", "give_up_on")


class AzureQueueBackend(BaseTaskBackend):
    supports_defer = True  # run_after at any distance: past 7 days the message carries its due time
    supports_async_task = True
    supports_get_result = True  # False with OPTIONS "results": False
    supports_priority = False  # Storage Queues are first-in, roughly first-out: no priority
    azjobs_backend = True  # how discovery tells azjobs' backends from others without importing this module

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        options = dict(self.options or {})
        self.unknown_options = sorted(set(options) - set(OPTION_NAMES))
        self.connection_setting: str = options.get("connection", DEFAULT_SETTING)
        self.connection_string: str | None = options.get("connection_string")
        self.queue_prefix: str = options.get("queue_prefix", "") or ""
        self.queue_names: dict[str, str] = dict(options.get("queue_names") or {})
        self.results: bool = bool(options.get("results", True))
        self.inline: bool = bool(options.get("inline", False))
        self.supports_get_result = self.results
        self._retry = {key: options[key] for key in RETRY_OPTIONS if key in options}
        self._connection: Connection | None = None
        self._client = None
        self._store = None

    # -- configuration -----------------------------------------------------
    def azure_queue(self, queue_name: str) -> str:
        """The Azure queue a Django queue name maps to (``queue_names``, else ``queue_prefix`` + name)."""
        return self.queue_names.get(queue_name, f"{self.queue_prefix}{queue_name}")

    def azure_queues(self) -> list[str]:
        """The Azure queues of this backend's QUEUES (valid names only; ``check()`` reports the others)."""
        names = []
        for queue_name in sorted(self.queues):
            try:
                names.append(validate_queue_name(self.azure_queue(queue_name)))
            except ConfigurationError:
                continue
        return names

    def retry_options(self) -> dict[str, Any]:
        """The azjobs retry options every task of this backend gets (``@azjobs.job`` keywords)."""
        return dict(self._retry)

    @property
    def connection(self) -> Connection:
        """The storage account: OPTIONS ``connection_string``, else the app setting ``connection``."""
        if self._connection is None:
            if self.connection_string:
                self._connection = connection_from_string(self.connection_string,
                                                          f"TASKS[{self.alias!r}] OPTIONS connection_string")
            else:
                self._connection = resolve_connection(self.connection_setting)
        return self._connection

    @property
    def client(self):
        """The azjobs ``Client`` this backend sends with (one per backend, built on first use): an
        ``azjobs.testing.InlineClient`` with OPTIONS ``"inline": True``; while ``azjobs.testing.inline()`` (or
        anything else routing the process's enqueues) is open, the routed client."""
        if self._client is None:
            if self.inline:
                from ...testing.engine import InlineClient

                self._client = InlineClient()
            else:
                self._client = Client(self.connection)
        return client_for(self._client)

    # -- the Django API ------------------------------------------------------
    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        try:
            validate_queue_name(self.azure_queue(task.queue_name))
        except ConfigurationError as exc:
            raise InvalidTask(f"Queue {task.queue_name!r} maps to an invalid Azure queue name: {exc}") from None

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        at = self._run_after(task)
        envelope = with_ready_record(self, self._envelope(task, args, kwargs), at)
        try:
            self.client.send(envelope, at=at)
        except BaseException:
            forget_ready_record(self, envelope)
            raise
        result = self._enqueued(task, envelope)
        task_enqueued.send(type(self), task_result=result)
        return self._ran(result)

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> TaskResult:
        """``enqueue`` on the event loop: the message goes out on azjobs' async client (``azjobs.storage.aio``);
        the READY record (results on) is one Table Storage write in a thread."""
        import asyncio

        self.validate_task(task)
        at = self._run_after(task)
        envelope = self._envelope(task, args, kwargs)
        if self.results:
            envelope = await asyncio.to_thread(with_ready_record, self, envelope, at)
        try:
            await AsyncClient(self.client).send(envelope, at=at)
        except BaseException:
            await asyncio.to_thread(forget_ready_record, self, envelope)
            raise
        result = self._enqueued(task, envelope)
        await task_enqueued.asend(type(self), task_result=result)
        return await asyncio.to_thread(self._ran, result) if self.inline else result

    def get_result(self, result_id: str) -> TaskResult:
        if not self.results:
            return super().get_result(result_id)
        return read_result(self, result_id, discover_tasks)

    def check(self, **kwargs: Any) -> list:
        return check_backend(self)

    # -- helpers -------------------------------------------------------------
    def _envelope(self, task: Any, args: Any, kwargs: Any) -> Envelope:
        options = {OPTIONS_KEY: {"backend": self.alias, "queue": task.queue_name}}
        return Envelope.build(job_name(task), tuple(args), dict(kwargs), queue=self.azure_queue(task.queue_name),
                              options=options)

    @staticmethod
    def _run_after(task: Any) -> datetime | None:
        run_after = task.run_after
        if run_after is None:
            return None
        if run_after.tzinfo is None:  # USE_TZ = False: naive times are in the project's time zone
            from django.utils import timezone

            run_after = timezone.make_aware(run_after, timezone.get_default_timezone())
        return run_after.astimezone(dt_timezone.utc)

    def _enqueued(self, task: Any, envelope: Envelope) -> TaskResult:
        return TaskResult(
            task=task, id=envelope.id, status=TaskResultStatus.READY,
            enqueued_at=to_django(parse_time(envelope.enqueued_at)), started_at=None, finished_at=None,
            last_attempted_at=None, args=list(envelope.args), kwargs=dict(envelope.kwargs), backend=self.alias,
            errors=[], worker_ids=[],
        )

    def _ran(self, result: TaskResult) -> TaskResult:
        """Inline (the task ran inside enqueue): the result as the store has it now (SUCCESSFUL, FAILED, ...)."""
        if not (self.inline and self.results):
            return result
        return self.get_result(result.id)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


__all__ = ["AzureQueueBackend", "OPTIONS_KEY", "OPTION_NAMES"]
