"""Generated Azure Functions bindings: one queue trigger per queue, worked by the shared core.

``azjobs.blueprint()`` returns an ``azure.functions.Blueprint`` with one queue-triggered
function for each queue that registered jobs use. The Functions host fetches messages,
holds their leases and poisons what keeps failing; each generated function hands the
message to ``azjobs.execution.executor.Executor``, the same core the local runner uses, so a message
has one outcome wherever it is worked:

- the job succeeded, or azjobs durably wrote a retry copy, a poison record or a deferral:
  the function returns and the host deletes the message;
- azjobs could not write what it needed (``Redeliver``): the function raises, and the
  host makes the message visible again after host.json ``visibilityTimeout``, or copies
  it to ``<queue>-poison`` once ``maxDequeueCount`` is reached.

Retry copies and poison records go through the SDK, not output bindings: an output
binding cannot delay a message. This is the only module of the core that imports
``azure.functions`` (the dashboard's HTTP function, ``azjobs/dashboard/functions.py``, and the
Durable Functions workflow functions, ``azjobs/workflows/bindings.py``, are the others).
"""

import asyncio
import hashlib
import os
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Optional, Union

import azure.functions as func

from ..errors import ConfigurationError
from ..execution.executor import Executor, Redeliver
from ..model.outcome import MessageInfo
from ..hosting import executor as hosted_executor
from ..model.queue_names import is_app_setting_expression, resolve_queue_name, validate_queue_name
from ..model.registry import Registry
from ..model.registry import registry as default_registry
from ..model.secrets import get_logger
from ..model.settings import QueueSettings
from ..storage.client import Client
from ..storage.connection import DEFAULT_SETTING, resolve_connection

log = get_logger("azjobs.functions")

#: The trigger's argument (binding) name: letters only, which every host version accepts.
BINDING_NAME = "msg"
#: Every generated function's name starts with this, so they are easy to find in the portal.
FUNCTION_PREFIX = "azjobs_"
#: The queue trigger's ``dataType``: the host hands the worker the body's bytes as stored (after the base64 wire
#: decoding). Left undefined, the host decodes the body as strict UTF-8 for a string: a body that is not UTF-8
#: fails its binding before azjobs runs, again on each delivery, until the host poisons it bare, with no reason
#: recorded. As bytes it reaches azjobs, which dead-letters it at once with a record that keeps it (not_utf8).
QUEUE_DATA_TYPE = func.DataType.BINARY
#: The host's rule for function names (checked case-insensitively by the host).
FUNCTION_NAME_RULE = re.compile(r"^[a-z][a-z0-9_-]{0,127}$", re.IGNORECASE)
MAX_FUNCTION_NAME = 128


def function_name_for(queue: str) -> str:
    """The generated function's name for ``queue``: host-valid and stable across deploys.

    ``emails`` → ``azjobs_emails``, ``image-jobs`` → ``azjobs_image_jobs``; an app-setting
    expression ``%ORDERS_QUEUE%`` → ``azjobs__orders_queue`` (the double underscore cannot
    come from a literal queue name, so the two kinds never collide).
    """
    if is_app_setting_expression(queue):
        stem = "_" + re.sub(r"[^a-z0-9]+", "_", queue[1:-1].lower()).strip("_")
    else:
        stem = re.sub(r"[^a-z0-9]+", "_", queue.lower())
    name = FUNCTION_PREFIX + stem
    if len(name) > MAX_FUNCTION_NAME or not FUNCTION_NAME_RULE.match(name):
        name = f"{name[:MAX_FUNCTION_NAME - 9]}_{_digest(queue)}"
    return name


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def host_json_path(explicit: Union[str, "os.PathLike[str]", None] = None) -> Optional[Path]:
    """Which host.json the core reads: the one the host reads, so both use the same settings.

    ``explicit`` wins, then ``$AZJOBS_HOST_JSON``, then the app root the host announces
    (``$AzureWebJobsScriptRoot``), then ``./host.json``. None means the host's defaults.
    """
    if explicit is not None:
        return Path(explicit)
    if os.environ.get("AZJOBS_HOST_JSON"):
        return Path(os.environ["AZJOBS_HOST_JSON"])
    for root in (os.environ.get("AzureWebJobsScriptRoot"), "."):
        if root and (Path(root) / "host.json").is_file():
            return Path(root) / "host.json"
    return None


class _ExecutorSource:
    """Builds the Executor on first use, so indexing the app never touches storage."""

    def __init__(self, registry: Registry, connection: str, settings: QueueSettings,
                 executor: Optional[Executor]) -> None:
        self._registry = registry
        self._connection = connection
        self._settings = settings
        self._executor = executor
        self._lock = threading.Lock()

    def get(self) -> Executor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    client = Client(resolve_connection(self._connection), settings=self._settings)
                    self._executor = hosted_executor(registry=self._registry, client=client, settings=self._settings)
                    log.info("azjobs Functions dispatcher connected via %s", client.connection.description,
                             extra={"action": "functions_executor_ready", "connection": self._connection})
        return self._executor


class _QueueName:
    """A trigger's queue name, with ``%AppSetting%`` resolved the way the host resolves it."""

    def __init__(self, declared: str) -> None:
        self.declared = declared
        self._resolved: Optional[str] = None if is_app_setting_expression(declared) else declared

    def resolve(self) -> str:
        if self._resolved is None:
            self._resolved = resolve_queue_name(self.declared)
        return self._resolved


def _make_handler(queue: _QueueName, source: _ExecutorSource) -> Callable[[func.QueueMessage], Awaitable[None]]:
    """The user function for one queue: the message is its only argument."""

    # ``context`` (left unannotated, as the Python worker requires of a non-binding parameter) is the
    # invocation's func.Context: its invocation id is the worker id in job state (azjobs.state).
    async def handler(msg: func.QueueMessage, context=None) -> None:
        ended = threading.Event()
        limit = source.get().settings.function_timeout
        deadline = None if limit is None else time.monotonic() + limit.total_seconds()
        info = MessageInfo(
            queue=queue.resolve(),
            message_id=msg.id or "",
            dequeue_count=msg.dequeue_count or 1,
            insertion_time=msg.insertion_time,
            pop_receipt=msg.pop_receipt,
            worker_id=getattr(context, "invocation_id", None) or None,
            # The host keeps the message hidden until the invocation ends or functionTimeout passes.
            held=lambda: not ended.is_set() and (deadline is None or time.monotonic() < deadline),
        )
        try:
            # The host has already undone the base64 wire encoding.
            result = await source.get().execute_async(msg.get_body(), info, encoded=False)
        except Redeliver as exc:
            log.warning("message %s on %s released for redelivery (dequeue count %d): %s",
                        info.message_id, info.queue, info.dequeue_count, exc,
                        extra={"action": "functions_message_released", "queue": info.queue,
                               "message_id": info.message_id, "dequeue_count": info.dequeue_count})
            # The Python worker reports the whole exception chain to the host, which logs it: the
            # chained SDK error carries request URLs (a SAS signature), so the host gets the
            # redacted message alone.
            raise Redeliver(str(exc), exc.envelope) from None
        finally:
            ended.set()
        if result.payload_ref is not None:
            # The host deletes the message after this returns: leave a marker so a redelivery
            # (its delete failed) is skipped rather than poisoned for a missing payload.
            executor = source.get()
            try:
                await asyncio.to_thread(executor.payloads.consume, result.payload_ref)
            except Exception as exc:
                log.warning("could not mark payload %s consumed: %s", result.payload_ref, exc,
                            extra={"action": "payload_delete_failed", "queue": info.queue})
        log.debug("message %s on %s settled: %s", info.message_id, info.queue, result.outcome.value,
                  extra={"action": "functions_message_settled", "queue": info.queue,
                         "message_id": info.message_id, "outcome": result.outcome.value})

    return handler


def _chosen_queues(queues: Union[Iterable[str], str, None], registry: Registry) -> list:
    declared = registry.queues()
    if not declared:
        raise ConfigurationError(
            "no jobs are registered: import the modules that declare your jobs before calling azjobs.blueprint()"
        )
    if queues is None:
        return declared
    wanted = [queues] if isinstance(queues, str) else list(queues)
    chosen = []
    for name in wanted:
        validate_queue_name(name)
        if name not in declared:
            raise ConfigurationError(
                f"no registered job uses queue {name!r}; jobs use: {', '.join(declared)}"
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ConfigurationError("queues= is empty: name at least one queue, or pass None for all")
    return chosen


def blueprint(
    queues: Union[Iterable[str], str, None] = None,
    *,
    registry: Optional[Registry] = None,
    connection: str = DEFAULT_SETTING,
    executor: Optional[Executor] = None,
    host_json: Union[str, "os.PathLike[str]", None] = None,
    schedules: bool = True,
    workflows: bool = True,
    workflows_queue: Optional[str] = None,
) -> func.Blueprint:
    """A Blueprint with one queue-triggered function per queue that registered jobs use.

    Register it with ``app.register_functions(azjobs.blueprint())`` after importing the
    modules that declare jobs. ``queues`` restricts it to some of those queues (to split
    queues across function apps). ``connection`` names the app setting (or
    ``<name>__queueServiceUri`` identity settings) both the trigger and azjobs' own writes
    use. ``host_json`` is the host.json the host reads (see ``host_json_path``); its
    ``extensions.queues`` (maxDequeueCount, messageEncoding) steer the core too.
    ``executor`` replaces the core built from those (tests, custom clients).
    ``schedules=False`` leaves out the timer triggers of periodic jobs (when workers fire them).
    ``workflows`` adds the Durable Functions workflow functions (a start trigger on
    ``workflows_queue``, one orchestrator, one activity; see azjobs/workflows/bindings.py).
    """
    registry = registry if registry is not None else default_registry
    if not isinstance(connection, str) or not connection.strip():
        raise ConfigurationError(f"connection must name an app setting, got {connection!r}")
    chosen = _chosen_queues(queues, registry)
    settings = executor.settings if executor is not None else QueueSettings.load(host_json_path(host_json))
    source = _ExecutorSource(registry, connection, settings, executor)

    bp = func.Blueprint()
    names: dict = {}
    for queue in chosen:
        name = function_name_for(queue)
        if name in names:
            name = f"{name[:MAX_FUNCTION_NAME - 9]}_{_digest(queue)}"
            if name in names:
                raise ConfigurationError(f"queues {names[name]!r} and {queue!r} map to the same function name")
        names[name] = queue
        handler = _make_handler(_QueueName(queue), source)
        handler.__name__ = handler.__qualname__ = name
        bp.function_name(name=name)(bp.queue_trigger(arg_name=BINDING_NAME, queue_name=queue, connection=connection,
                                                     data_type=QUEUE_DATA_TYPE)(handler))
        log.debug("generated function %s for queue %s", name, queue,
                  extra={"action": "functions_binding_generated", "function": name, "queue": queue})
    if schedules:
        _add_timers(bp, registry, chosen, source, names)
    if workflows:
        from ..workflows.bindings import add_workflow_functions

        add_workflow_functions(bp, source, connection=connection, queue=workflows_queue)
    return bp


#: The timer trigger's argument (binding) name.
TIMER_BINDING_NAME = "timer"


def timer_function_name_for(schedule_name: str) -> str:
    """The generated timer function's name for a periodic job: ``azjobs_timer_<name>``, host-valid."""
    name = "azjobs_timer_" + re.sub(r"[^a-z0-9]+", "_", schedule_name.lower()).strip("_")
    if len(name) > MAX_FUNCTION_NAME or not FUNCTION_NAME_RULE.match(name):
        name = f"{name[:MAX_FUNCTION_NAME - 9]}_{_digest(schedule_name)}"
    return name


def _make_timer_handler(item, source: _ExecutorSource) -> Callable[[func.TimerRequest], Awaitable[None]]:
    """The user function for one periodic job: enqueue the job with the tick, as the worker's scheduler does."""
    from ..model.envelope import utcnow
    from ..schedules.declarations import timer_tick

    async def handler(timer: func.TimerRequest) -> None:
        now = utcnow()
        status = getattr(timer, "schedule_status", None) or {}
        tick = timer_tick(item, now, status)
        past_due = bool(timer.past_due)
        client = source.get().client
        from ..telemetry import tracing

        envelope = tracing.produced(item.envelope(tick, past_due=past_due))  # each tick starts a trace
        await asyncio.to_thread(client.send, envelope)
        log.log(30 if past_due else 20, "schedule %s: tick %s enqueued job %s %s%s", item.name,
                envelope.scheduled_at, item.job.name, envelope.id, " (past due)" if past_due else "",
                extra={"action": "schedule_past_due" if past_due else "schedule_fired", "schedule": item.name,
                       "job": item.job.name, "job_id": envelope.id, "tick": envelope.scheduled_at,
                       "past_due": past_due})

    return handler


def use_monitor_for(item) -> Optional[bool]:
    """The timer's ``useMonitor``, stated in its metadata: the host's default made explicit (on when the schedule's
    occurrences are at least a minute apart, off for more frequent ones). A ``%AppSetting%`` schedule is only known
    on the host: None leaves the default to it."""
    if is_app_setting_expression(item.schedule):
        return None
    upcoming = item.expression.upcoming(datetime.now(timezone.utc), 8)
    gaps = [later - earlier for earlier, later in zip(upcoming, upcoming[1:])]
    return all(gap >= timedelta(minutes=1) for gap in gaps)


def _add_timers(bp: func.Blueprint, registry: Registry, chosen: list, source: _ExecutorSource, names: dict) -> None:
    """One timer trigger per periodic job on the chosen queues (azjobs.schedules), ``useMonitor`` as the host's
    default would set it (``use_monitor_for``)."""
    from ..schedules.declarations import schedules

    for item in schedules.for_queues(registry, chosen):
        name = timer_function_name_for(item.name)
        if name in names:
            name = f"{name[:MAX_FUNCTION_NAME - 9]}_{_digest('timer:' + item.name)}"
            if name in names:
                raise ConfigurationError(f"periodic job {item.name!r} maps to the function name {name!r} twice")
        names[name] = item.name
        handler = _make_timer_handler(item, source)
        handler.__name__ = handler.__qualname__ = name
        bp.function_name(name=name)(bp.timer_trigger(arg_name=TIMER_BINDING_NAME, schedule=item.schedule,
                                                     use_monitor=use_monitor_for(item))(handler))
        log.debug("generated timer function %s for periodic job %s", name, item.name,
                  extra={"action": "functions_binding_generated", "function": name, "schedule": item.name})


__all__ = ["BINDING_NAME", "FUNCTION_NAME_RULE", "FUNCTION_PREFIX", "QUEUE_DATA_TYPE", "TIMER_BINDING_NAME", "blueprint",
           "function_name_for", "host_json_path", "timer_function_name_for", "use_monitor_for"]
