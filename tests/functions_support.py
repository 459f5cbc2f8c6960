"""Drive queue messages through the generated Azure Functions the way the host does.

Core Tools cannot run here, so tests play the host's part with the real pieces:
messages are received from Azurite, turned into ``azure.functions.queue.QueueMessage``
objects exactly as the Python worker builds them, handed to the generated function,
and then settled as the host settles them (see /work/shared/HOST_SEMANTICS.md).

- ``fresh_app(...)``: a new ``FunctionApp`` with ``azjobs.blueprint(...)`` registered
  (``get_functions()`` may run only once per app; ``functions_of`` caches it).
- ``queue_message_from(sdk_message)``: the ``QueueMessage`` the worker would pass.
- ``invoke(app, queue, qmsg)``: call the function for ``queue`` as the worker would.
- ``host_like_settle(app, queue_client, sdk_message)``: one full host delivery:
  decode, pre-run poison check, run, then delete / release / poison.
- ``RecordingExecutor`` (from ``azjobs.testing``): the real core, keeping each ``Result``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import inspect
import weakref
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

import azjobs
from azjobs.testing import RecordingExecutor  # noqa: F401  (re-exported for the tests)
from azjobs.model.queue_names import poison_queue_name, resolve_queue_name
from azjobs.model.settings import QueueSettings

_functions: "weakref.WeakKeyDictionary[func.FunctionApp, list]" = weakref.WeakKeyDictionary()


def fresh_app(queues: Any = None, **blueprint_kwargs: Any) -> func.FunctionApp:
    """A new FunctionApp with ``azjobs.blueprint(queues, **blueprint_kwargs)`` registered."""
    app = func.FunctionApp()
    app.register_functions(azjobs.blueprint(queues, **blueprint_kwargs))
    return app


def functions_of(app: func.FunctionApp) -> list:
    """``app.get_functions()``, computed once per app (a second call raises in azure-functions)."""
    if app not in _functions:
        _functions[app] = app.get_functions()
    return _functions[app]


def job_functions_of(app: func.FunctionApp) -> list:
    """The generated job queue triggers: every function but the workflow ones (azjobs.workflows)."""
    from azjobs.workflows.orchestrator import ACTIVITY, ORCHESTRATOR, START

    return [f for f in functions_of(app) if f.get_function_name() not in (ACTIVITY, ORCHESTRATOR, START)]


def function_for(app: func.FunctionApp, queue: str) -> Any:
    """The generated function whose queueTrigger watches ``queue`` (``%Setting%`` resolved)."""
    matches = []
    for function in functions_of(app):
        trigger = function.get_trigger()
        if trigger is None or trigger.get_binding_name() != "queueTrigger":
            continue
        declared = trigger.queue_name
        try:
            resolved = resolve_queue_name(declared)
        except azjobs.ConfigurationError:
            resolved = None
        if queue in (declared, resolved):
            matches.append(function)
    if len(matches) != 1:
        raise LookupError(f"expected one function for queue {queue!r}, found {len(matches)}")
    return matches[0]


class NotBase64(ValueError):
    """The body is not base64: the host poisons such a message without running the function."""


def queue_message_from(sdk_message: Any, encoding: str = "base64") -> QueueMessage:
    """The ``QueueMessage`` the Python worker builds for a message received from the queue.

    The host undoes the base64 wire encoding before the worker sees the body.
    """
    content = sdk_message.content
    if encoding == "base64":
        try:
            body = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise NotBase64(f"message {sdk_message.id} is not base64: {exc}") from None
    else:
        body = content.encode("utf-8") if isinstance(content, str) else content
    return QueueMessage(
        id=sdk_message.id,
        body=body,
        dequeue_count=sdk_message.dequeue_count,
        expiration_time=sdk_message.expires_on,
        insertion_time=sdk_message.inserted_on,
        time_next_visible=sdk_message.next_visible_on,
        pop_receipt=sdk_message.pop_receipt,
    )


class InvocationContext(func.Context):
    """The ``context`` the Python worker passes to a function that declares it (its invocation id)."""

    def __init__(self, invocation_id: str, function_name: str = "") -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name

    invocation_id = property(lambda self: self._invocation_id)
    function_name = property(lambda self: self._function_name)
    function_directory = property(lambda self: "")
    thread_local_storage = property(lambda self: None)
    trace_context = property(lambda self: None)
    retry_context = property(lambda self: None)


def _call(function: Any, qmsg: QueueMessage, context: Any = None) -> Any:
    user_function = function.get_user_function()
    binding = function.get_trigger().name
    extra = {"context": context} if context is not None else {}
    return user_function(**{binding: qmsg}, **extra)


def invoke(app: func.FunctionApp, queue: str, qmsg: QueueMessage, context: Any = None) -> Any:
    """Call the function for ``queue`` with ``qmsg`` (and ``context``, as the worker passes it) as the worker does;
    returns or raises as it does."""
    value = _call(function_for(app, queue), qmsg, context)
    if inspect.isawaitable(value):
        value = asyncio.run(value)
    return value


async def invoke_async(app: func.FunctionApp, queue: str, qmsg: QueueMessage) -> Any:
    """``invoke`` on a running event loop (the worker runs async functions on its loop)."""
    value = _call(function_for(app, queue), qmsg)
    if inspect.isawaitable(value):
        value = await value
    return value


class HostAction(enum.Enum):
    DELETED = "deleted"  # the function returned: the host deleted the message
    RELEASED = "released"  # the function raised: visible again after visibilityTimeout
    POISONED = "poisoned"  # the host copied the bare body to <queue>-poison and deleted it


@dataclass
class HostDelivery:
    action: HostAction
    error: BaseException | None = None
    ran: bool = False  # whether the function was called


def sibling_queue(queue_client: QueueClient, name: str) -> QueueClient:
    """A QueueClient for another queue in the same account, with the same credential."""
    base = queue_client.url.rsplit("/", 1)[0]
    return QueueClient.from_queue_url(f"{base}/{name}", credential=queue_client.credential)


def _poison_raw(queue_client: QueueClient, content: str) -> None:
    poison = poison_queue_name(queue_client.queue_name)
    if poison is None:
        return
    target = sibling_queue(queue_client, poison)
    try:
        target.create_queue()
    except ResourceExistsError:
        pass
    target.send_message(content)


def _delete(queue_client: QueueClient, message_id: str, pop_receipt: str) -> None:
    try:
        queue_client.delete_message(message_id, pop_receipt)
    except (ResourceNotFoundError, HttpResponseError) as exc:
        # The host ignores pop-receipt mismatch, 404 and 409 on delete.
        if getattr(exc, "status_code", None) not in (400, 404, 409):
            raise


def host_like_settle(
    app: func.FunctionApp,
    queue_client: QueueClient,
    sdk_message: Any,
    settings: QueueSettings | None = None,
    context: Any = None,
) -> HostDelivery:
    """Deliver one received message through the app as the Functions host would, and settle it.

    ``queue_client`` is a plain SDK client (no encode policy) for the queue the message
    came from; ``sdk_message`` was received from it. Mirrors the host: a body that is not
    base64, or a message dequeued more than maxDequeueCount times, goes to poison without
    running; a normal return deletes; an exception releases the message with
    ``visibilityTimeout``, or poisons the bare body once dequeueCount ≥ maxDequeueCount.
    """
    settings = settings or QueueSettings()
    content = sdk_message.content
    try:
        qmsg = queue_message_from(sdk_message, settings.message_encoding)
    except NotBase64:
        _poison_raw(queue_client, content)
        _delete(queue_client, sdk_message.id, sdk_message.pop_receipt)
        return HostDelivery(HostAction.POISONED)
    if sdk_message.dequeue_count > settings.max_dequeue_count:
        _poison_raw(queue_client, content)
        _delete(queue_client, sdk_message.id, sdk_message.pop_receipt)
        return HostDelivery(HostAction.POISONED)
    try:
        invoke(app, queue_client.queue_name, qmsg, context)
    except Exception as error:
        if sdk_message.dequeue_count >= settings.max_dequeue_count:
            _poison_raw(queue_client, content)
            _delete(queue_client, sdk_message.id, sdk_message.pop_receipt)
            return HostDelivery(HostAction.POISONED, error, ran=True)
        queue_client.update_message(
            sdk_message.id, sdk_message.pop_receipt,
            visibility_timeout=int(settings.visibility_timeout.total_seconds()),
        )
        return HostDelivery(HostAction.RELEASED, error, ran=True)
    _delete(queue_client, sdk_message.id, sdk_message.pop_receipt)
    return HostDelivery(HostAction.DELETED, ran=True)


def receive_one(queue_client: QueueClient, visibility_timeout: int = 60) -> Any:
    """Receive one message with a lease, as the host does (None if the queue is empty)."""
    for message in queue_client.receive_messages(max_messages=1, visibility_timeout=visibility_timeout):
        return message
    return None
