"""The Functions host's side of the language-worker protocol, played in-process against the real worker.

On Python 3.13+ the Python language worker is the PyPI package ``azure-functions-runtime``: the
host's gRPC stream ends in a small proxy that hands each ``StreamingMessage`` to
``azure_functions_runtime.handle_event`` (``worker_init_request``, ``functions_metadata_request``,
``function_load_request``, ``invocation_request``) as ``request.request``, with the compiled
FunctionRpc protos and the host address in ``request.properties``. ``LanguageWorker`` does what
that proxy does, with a fresh copy of the runtime's module state per app (one worker process per
app on the host), and these helpers build the messages the host sends, shaped as
azure-functions-host builds them (``ScriptInvocationContextExtensions.ToRpcInvocationRequest``,
``GrpcMessageConversionExtensions.ToRpc``):

- the trigger value is one ``ParameterBinding``: a queue message as ``bytes`` when the binding's
  ``dataType`` is ``binary`` (read ignoring case), else as a ``string``: the Storage Queues extension
  (5.x, ``StorageQueueMessageToStringConverter``) decodes the body with a strict UTF-8 decoder, so a body
  that is not UTF-8 fails the binding and the function is never called (a failed delivery); a timer's
  ``TimerInfo`` and an orchestration's or activity's payload as the host serializes them (``json`` /
  ``string``);
- every binding-data value becomes trigger metadata: strings as ``string``, anything else as
  Newtonsoft JSON (``ToRpcDefault``): the queue's ``DequeueCount`` (a long) as the JSON number,
  ``InsertionTime``/``ExpirationTime``/``NextVisibleTime`` (DateTimeOffset) as JSON strings
  (``"2026-03-01T12:00:00+00:00"``), ``Id`` and ``PopReceipt`` as strings, ``QueueTrigger`` the body
  as a string (left out when it is not UTF-8: the extension's ``TryGetAsString`` gives null, and the
  host skips null binding data), and ``sys`` (``MethodName``, ``UtcNow``, ``RandGuid``) as a JSON object;
- with ``messageEncoding: base64`` the host decodes the wire text first: a body that is not base64
  goes to ``<queue>-poison`` as it is and the function never runs; so does a message dequeued more
  than ``maxDequeueCount`` times. After the invocation, ``StatusResult.Success`` deletes the
  message; ``Failure`` poisons the bare body once ``DequeueCount >= maxDequeueCount`` (a queue named
  ``...-poison`` has no poison queue: released instead), else makes the message visible again after
  ``visibilityTimeout``.

The protos come from ``devtools/functionrpc_protos.py`` (downloaded into the test venv once).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import importlib
import json
import sys
import types
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from devtools import functionrpc_protos
from azjobs.model.queue_names import poison_queue_name
from tests.functions_support import _delete, _poison_raw

PROTOS_DIR = Path(sys.prefix) / "functionrpc"
HOST_VERSION = "4.1040.0"  # a host version string, as the host announces itself in WorkerInitRequest
BINARY = "binary"

_protos: types.ModuleType | None = None


def protos() -> types.ModuleType:
    """The FunctionRpc messages as one namespace, as the host's proxy hands them to the runtime."""
    global _protos
    if _protos is None:
        functionrpc_protos.ensure(PROTOS_DIR)
        if str(PROTOS_DIR) not in sys.path:
            sys.path.append(str(PROTOS_DIR))
        rpc = importlib.import_module(f"{functionrpc_protos.MODULE}.FunctionRpc_pb2")
        nullable = importlib.import_module(f"{functionrpc_protos.MODULE}.shared.NullableTypes_pb2")
        namespace = types.ModuleType("functionrpc_protos")
        for module in (rpc, nullable):
            for name in dir(module):
                if not name.startswith("_"):
                    setattr(namespace, name, getattr(module, name))
        _protos = namespace
    return _protos


class HostRequest:
    """What the host's proxy passes to each ``handle_event`` entry point."""

    def __init__(self, message: Any) -> None:
        self.name = message.WhichOneof("content")
        self.request = message
        self.properties = {"host": "127.0.0.1", "protos": protos()}


class WorkerError(AssertionError):
    """The worker answered a lifecycle request with ``StatusResult.Failure``."""


@dataclass
class LoadedFunction:
    function_id: str
    metadata: Any  # RpcFunctionMetadata

    @property
    def name(self) -> str:
        return self.metadata.name

    def raw_bindings(self) -> list[dict]:
        return [json.loads(raw) for raw in self.metadata.raw_bindings]

    def binding(self, kind: str) -> dict:
        (found,) = [b for b in self.raw_bindings() if b["type"] == kind]
        return found

    def trigger(self) -> dict:
        (found,) = [b for b in self.raw_bindings() if b["type"].endswith("Trigger")]
        return found


class LanguageWorker:
    """One language worker for the app in ``app_dir``: ``azure_functions_runtime`` with fresh module state."""

    def __init__(self, app_dir: Path | str, script_file: str = "function_app.py") -> None:
        self.app_dir = Path(app_dir).resolve()
        self.script_module = Path(script_file).stem
        self.loop = asyncio.new_event_loop()
        self.functions: dict[str, LoadedFunction] = {}
        self.init_response: Any = None
        self._runtime: Any = None
        self._threadpool: Any = None

    # -- lifecycle, in the host's order ---------------------------------------------------------
    def start(self) -> "LanguageWorker":
        """WorkerInitRequest (the worker indexes the app), FunctionsMetadataRequest, a FunctionLoadRequest each."""
        for name in [m for m in sys.modules if m == "azure_functions_runtime" or m.startswith("azure_functions_runtime.")]:
            del sys.modules[name]
        sys.modules.pop(self.script_module, None)
        sys.path.insert(0, str(self.app_dir))
        self._runtime = importlib.import_module("azure_functions_runtime.handle_event")
        # The worker's pool for plain (sync) functions, which the process around the runtime starts and stops.
        self._threadpool = importlib.import_module("azure_functions_runtime.utils.threadpool")
        self._threadpool.start_threadpool_executor()
        p = protos()
        init = p.StreamingMessage(request_id=uuid.uuid4().hex, worker_init_request=p.WorkerInitRequest(
            host_version=HOST_VERSION, function_app_directory=str(self.app_dir), worker_directory=str(self.app_dir),
            capabilities={"HandlesWorkerTerminateMessage": "true", "HandlesInvocationCancelMessage": "true"}))
        self.init_response = self._call(self._runtime.worker_init_request, init)
        self._check(self.init_response.result, "WorkerInitRequest")
        metadata = self._call(self._runtime.functions_metadata_request, p.StreamingMessage(
            request_id=uuid.uuid4().hex,
            functions_metadata_request=p.FunctionsMetadataRequest(function_app_directory=str(self.app_dir))))
        self._check(metadata.result, "FunctionsMetadataRequest")
        if metadata.use_default_metadata_indexing:
            raise WorkerError("the worker asked the host to index function.json files: it found no function app")
        for item in metadata.function_metadata_results:
            loaded = self._call(self._runtime.function_load_request, p.StreamingMessage(
                request_id=uuid.uuid4().hex,
                function_load_request=p.FunctionLoadRequest(function_id=item.function_id, metadata=item)))
            self._check(loaded.result, f"FunctionLoadRequest {item.name}")
            self.functions[item.name] = LoadedFunction(item.function_id, item)
        return self

    def close(self) -> None:
        if self._threadpool is not None:
            self._threadpool.stop_threadpool_executor()
        try:
            sys.path.remove(str(self.app_dir))
        except ValueError:
            pass
        sys.modules.pop(self.script_module, None)
        self.loop.close()

    def __enter__(self) -> "LanguageWorker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- invocations ------------------------------------------------------------------------------
    def invoke(self, function: str, inputs: Mapping[str, Any], trigger_metadata: Mapping[str, Any] | None = None,
               invocation_id: str | None = None) -> Any:
        """An InvocationRequest for ``function`` (by name) with these TypedData inputs; the InvocationResponse."""
        p = protos()
        loaded = self.functions[function]
        request = p.InvocationRequest(
            invocation_id=invocation_id or str(uuid.uuid4()), function_id=loaded.function_id,
            input_data=[p.ParameterBinding(name=name, data=data) for name, data in inputs.items()],
            trigger_metadata=dict(trigger_metadata or {}),
            # No retry_context: the host sets one only for a function with a retry policy (not queue triggers).
            trace_context=p.RpcTraceContext(trace_parent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
                                            attributes={"OperationName": function}))
        return self._call(self._runtime.invocation_request,
                          p.StreamingMessage(request_id=uuid.uuid4().hex, invocation_request=request))

    def _call(self, entry: Any, message: Any) -> Any:
        return self.loop.run_until_complete(entry(HostRequest(message)))

    @staticmethod
    def _check(result: Any, what: str) -> None:
        if result.status != protos().StatusResult.Success:
            raise WorkerError(f"{what} failed: {result.exception.message}\n{result.exception.stack_trace}")


# -- what the host sends --------------------------------------------------------------------------
def json_data(value: Any) -> Any:
    """A value the host serializes with Newtonsoft (``ToRpcDefault``): TypedData.json."""
    return protos().TypedData(json=json.dumps(value, separators=(",", ":")))


def string_data(value: str) -> Any:
    return protos().TypedData(string=value)


def host_time(moment: datetime | None) -> str | None:
    """A DateTimeOffset as Newtonsoft writes it: ISO 8601 with the offset, fraction only when non-zero."""
    if moment is None:
        return None
    moment = moment.astimezone(timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "+00:00"


def sys_metadata(function: str) -> Any:
    now = datetime.now(timezone.utc)
    return json_data({"MethodName": function, "UtcNow": host_time(now), "RandGuid": str(uuid.uuid4())})


class BindingFailed(ValueError):
    """The host could not convert the message for the trigger's parameter: the invocation fails without a call."""


class NotBase64(ValueError):
    """The wire text is not base64: the host poisons the message without invoking the function."""


def decoded_body(content: str, encoding: str = "base64") -> bytes:
    """The message body the host hands on (``messageEncoding``); NotBase64 when base64 decoding fails."""
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise NotBase64(str(exc)) from None
    return content.encode("utf-8")


def queue_trigger_inputs(function: LoadedFunction, sdk_message: Any, encoding: str = "base64",
                         dequeue_count: int | None = None) -> tuple[dict, dict]:
    """(input data, trigger metadata) of a queue trigger invocation for a message received from storage.

    ``dequeue_count`` overrides the message's own (what the host read when it received it).
    """
    trigger = function.trigger()
    body = decoded_body(sdk_message.content, encoding)
    try:
        text: str | None = body.decode("utf-8")  # strict, as the extension's UTF8Encoding(false, true)
    except UnicodeDecodeError:
        text = None
    if str(trigger.get("dataType", "")).lower() == BINARY:
        value = protos().TypedData(bytes=body)
    elif text is None:
        raise BindingFailed(f"message {sdk_message.id}: the body is not UTF-8 and the binding asks for a string")
    else:
        value = string_data(text)
    count = sdk_message.dequeue_count if dequeue_count is None else dequeue_count
    metadata = {
        "Id": string_data(sdk_message.id),
        "PopReceipt": string_data(sdk_message.pop_receipt),
        "DequeueCount": json_data(count),
        "sys": sys_metadata(function.name),
    }
    if text is not None:
        metadata["QueueTrigger"] = string_data(text)
    for key, moment in (("InsertionTime", sdk_message.inserted_on), ("ExpirationTime", sdk_message.expires_on),
                        ("NextVisibleTime", sdk_message.next_visible_on)):
        if moment is not None:  # the host skips null binding data
            metadata[key] = json_data(host_time(moment))
    return {trigger["name"]: value}, metadata


def timer_inputs(function: LoadedFunction, *, past_due: bool = False,
                 schedule_status: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
    """A timer trigger's TimerInfo as the host serializes it; ``ScheduleStatus`` is null without the monitor."""
    trigger = function.trigger()
    info = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": dict(schedule_status) if schedule_status else None,
            "IsPastDue": past_due}
    return {trigger["name"]: json_data(info)}, {"sys": sys_metadata(function.name)}


def activity_inputs(function: LoadedFunction, input_json: str, instance_id: str) -> tuple[dict, dict]:
    """An activity invocation: the input the orchestrator scheduled, as the JSON text the extension stores."""
    trigger = function.trigger()
    return {trigger["name"]: string_data(input_json)}, {"instanceId": string_data(instance_id),
                                                        "sys": sys_metadata(function.name)}


def orchestration_inputs(function: LoadedFunction, payload: str) -> tuple[dict, dict]:
    """An orchestration invocation: the history payload (``azjobs.workflows.replay.body``) as a string."""
    trigger = function.trigger()
    return {trigger["name"]: string_data(payload)}, {"sys": sys_metadata(function.name)}


# -- what the host does with the answer -----------------------------------------------------------
class HostAction(enum.Enum):
    DELETED = "deleted"
    RELEASED = "released"
    POISONED = "poisoned"  # the host copied the bare body to <queue>-poison and deleted the message


@dataclass
class QueueDelivery:
    action: HostAction
    response: Any = None  # the InvocationResponse; None when the host never invoked the worker


def deliver_queue_message(worker: LanguageWorker, function: str, queue_client: Any, sdk_message: Any, *,
                          max_dequeue_count: int = 5, visibility_timeout_s: int = 0, encoding: str = "base64",
                          dequeue_count: int | None = None) -> QueueDelivery:
    """One host delivery of a received message through the worker, settled as the host settles it."""
    loaded = worker.functions[function]
    count = sdk_message.dequeue_count if dequeue_count is None else dequeue_count
    has_poison_queue = poison_queue_name(queue_client.queue_name) is not None
    response = None
    try:
        inputs, metadata = queue_trigger_inputs(loaded, sdk_message, encoding, count)
        too_many = count > max_dequeue_count
    except NotBase64:
        too_many = True
    except BindingFailed:
        too_many, inputs = count > max_dequeue_count, None
    if too_many:
        if not has_poison_queue:
            raise NotImplementedError("a message the host poisons before the run, on a queue without a poison twin: "
                                      "not modelled here")
        _poison_raw(queue_client, sdk_message.content)
        _delete(queue_client, sdk_message.id, sdk_message.pop_receipt)
        return QueueDelivery(HostAction.POISONED)
    if inputs is not None:
        response = worker.invoke(function, inputs, metadata)
    if response is not None and response.result.status == protos().StatusResult.Success:
        _delete(queue_client, sdk_message.id, sdk_message.pop_receipt)
        return QueueDelivery(HostAction.DELETED, response)
    if count >= max_dequeue_count and has_poison_queue:  # without a poison queue the host releases it
        _poison_raw(queue_client, sdk_message.content)
        _delete(queue_client, sdk_message.id, sdk_message.pop_receipt)
        return QueueDelivery(HostAction.POISONED, response)
    queue_client.update_message(sdk_message.id, sdk_message.pop_receipt, visibility_timeout=visibility_timeout_s)
    return QueueDelivery(HostAction.RELEASED, response)


def status_name(response: Any) -> str:
    return protos().StatusResult.Status.Name(response.result.status)


def returned_json(response: Any) -> Any:
    """The function's ``$return`` value (an orchestrator's state, an activity's result), decoded."""
    value = response.return_value
    kind = value.WhichOneof("data")
    if kind == "json":
        return json.loads(value.json)
    if kind == "string":
        return json.loads(value.string)
    raise AssertionError(f"unexpected return value type {kind!r}")


__all__ = ["BINARY", "BindingFailed", "HostAction", "HostRequest", "LanguageWorker", "LoadedFunction", "NotBase64", "QueueDelivery",
           "activity_inputs", "decoded_body", "deliver_queue_message", "host_time", "json_data",
           "orchestration_inputs", "protos", "queue_trigger_inputs", "returned_json", "status_name", "string_data",
           "timer_inputs"]
