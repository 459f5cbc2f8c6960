"""The workflow spec: chains, groups and sleeps of registered jobs, as plain JSON.

``azjobs.chain(fetch.s(url), parse.s(), store.s())`` runs the steps in order, each step's
return value becoming the next step's first argument (``.si(...)`` makes a step ignore
it). ``azjobs.group(resize.s(1), resize.s(2))`` runs its steps in parallel; its result is
the list of their results, in order. A group followed by a step in a chain is a fan-in:
the step gets that list. ``azjobs.sleep(timedelta(days=3))`` waits (any length) and passes
the previous value on.

A workflow travels as one message on the workflows queue (default ``azjobs-workflows``):
``{"azjobs_workflow": 1, "kind": "start", "id": ..., "spec": {"id": ..., "root": node}}``; a spec
too large for a message (large step arguments) waits in Blob Storage and the message carries
``"spec_ref"`` (``<payload container>/workflow-specs/<uuid>.json``) instead of ``"spec"``.
Nodes: ``{"step": job, "args", "kwargs", "queue", "ignore_input", "retry"}``,
``{"chain": [node, ...]}``, ``{"group": [step, ...]}``, ``{"sleep_s": seconds}``.
Each step carries its job's retry policy as Durable ``RetryOptions`` fields, fixed when
the workflow is built, so replaying the workflow never depends on a later deploy.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
import weakref
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ArgumentError, ConfigurationError, EnvelopeError, PayloadTooLargeError
from ..model.envelope import encode_text, format_time, json_object, to_json_value, utcnow
from ..model.queue_names import resolve_queue_name, validate_queue_name
from ..model.retry import Backoff, Fixed, NoRetry
from ..model.secrets import describe, get_logger
from .history import HistoryStore, id_problem

if TYPE_CHECKING:
    from ..model.definition import JobDefinition
    from ..storage.client import Client
    from .handle import WorkflowHandle

log = get_logger("azjobs.workflows")

WORKFLOW_KEY = "azjobs_workflow"
WORKFLOW_VERSION = 1
DEFAULT_QUEUE = "azjobs-workflows"
QUEUE_SETTING = "AZJOBS_WORKFLOWS_QUEUE"
# Durable RetryOptions need a first interval above zero.
MIN_RETRY_MS = 1
# A job with a custom retry policy: one attempt (its own limit cannot be expressed as RetryOptions).
CUSTOM_POLICY_RETRY = {"first_retry_ms": 1000, "attempts": 1}
SPECS_PREFIX = "workflow-specs/"  # specs too large for the start message, in the payload container


def workflows_queue(name: str | None = None) -> str:
    """The workflows queue: ``name``, else ``$AZJOBS_WORKFLOWS_QUEUE``, else ``azjobs-workflows``."""
    chosen = name or os.environ.get(QUEUE_SETTING) or DEFAULT_QUEUE
    return validate_queue_name(resolve_queue_name(chosen))


def retry_options_for(definition: "JobDefinition", max_retries: int | None = None) -> dict[str, int]:
    """The job's retry policy as Durable ``RetryOptions`` fields (first interval, attempts).

    Durable retries at a fixed interval (the Python SDK has no back-off coefficient): a
    ``Backoff`` policy retries every ``base`` seconds; ``Fixed`` every ``delay``; ``NoRetry``
    once only. ``retry_on``/``give_up_on``/``azjobs.Fail`` cannot be expressed as
    RetryOptions: every failure of a step is retried up to the limit.
    """
    policy = definition.retry_policy
    if max_retries is not None and hasattr(policy, "with_max_retries"):
        policy = policy.with_max_retries(max_retries)
    if isinstance(policy, NoRetry):
        return {"first_retry_ms": 1000, "attempts": 1}
    if isinstance(policy, Fixed):
        return {"first_retry_ms": max(MIN_RETRY_MS, round(policy.delay * 1000)), "attempts": policy.max_retries + 1}
    if isinstance(policy, Backoff):
        return {"first_retry_ms": max(MIN_RETRY_MS, round(policy.base * 1000)), "attempts": policy.max_retries + 1}
    return dict(CUSTOM_POLICY_RETRY)


class Flow:
    """A workflow node. ``enqueue()`` sends the whole flow as one message."""

    def to_node(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, has_input: bool, path: str = "0") -> bool:
        """Check arguments against signatures; returns whether a value flows out. ``path`` is the step's name in
        ``azjobs workflow status`` (``0.1``: the root chain's second step), for the error."""
        raise NotImplementedError  # pragma: no cover

    def spec(self, workflow_id: str | None = None) -> dict[str, Any]:
        """The JSON spec the orchestrator interprets (arguments checked against each job).

        ``workflow_id`` (default: a new uuid4) keys the workflow's history in Table Storage:
        ConfigurationError if it cannot (not a non-empty string; ``/ \\ # ?`` or a control
        character; over 1 KiB of UTF-16)."""
        if workflow_id is not None:
            why = id_problem(workflow_id)
            if why is not None:
                raise ConfigurationError(f"workflow id {workflow_id!r} cannot be used: {why} (a workflow id keys its "
                                         "history in Table Storage)")
        self._check(False)
        return {"id": workflow_id if workflow_id is not None else str(uuid.uuid4()), "root": self.to_node()}

    def enqueue(self, *, client: "Client | None" = None, queue: str | None = None,
                id: str | None = None) -> "WorkflowHandle":
        """Send the workflow to the workflows queue; returns a handle (``.id``, ``.status()``, ``.result()``).

        The workflows queue and every step's queue are created when missing, unless the client
        was configured with ``create_queues=False``.

        The workflow is first recorded as Pending in the history table, so ``WorkflowHandle(id)``
        tells it from an id that was never enqueued; a table that cannot be reached does not stop
        the enqueue (logged as ``workflow_pending_unavailable``)."""
        from ..storage.client import client_for
        from .handle import WorkflowHandle

        client = client_for(client)
        spec = self.spec(id)
        name = workflows_queue(queue)
        from ..telemetry import tracing

        trace = tracing.produced_trace(name, "azjobs.workflow", spec["id"])  # every step continues it
        if trace:
            spec["trace"] = trace
        spec_ref = None
        try:
            text = encode_text(start_message(spec), client.encoding)
        except PayloadTooLargeError:  # large step arguments: the spec waits in Blob Storage
            spec_ref = client.payloads.put(f"{SPECS_PREFIX}{uuid.uuid4()}.json",
                                           json.dumps(spec, ensure_ascii=False).encode("utf-8"))
            text = encode_text(start_message(spec, spec_ref=spec_ref), client.encoding)
        _record_pending(client, spec["id"], name)
        # As job.enqueue() creates its queue: no worker meets a missing step queue (a recording
        # test client has nothing to create).
        ensure = getattr(client, "ensure_queue", None)
        if getattr(client, "create_queues", False) and ensure is not None:
            for step_queue in sorted(step_queues(spec["root"]) - getattr(client, "_known_queues", set())):
                ensure(step_queue)
        try:
            client.send_text(name, text)
        except BaseException:
            if spec_ref is not None:
                _forget(client, spec_ref)
            raise
        handle = WorkflowHandle(spec["id"], client=client, queue=name)
        handle._sent = True
        return handle


def step_queues(node: Mapping[str, Any]) -> set[str]:
    """The queues of every step in a spec node (chains and groups walked)."""
    if "step" in node:
        return {node["queue"]}
    found: set[str] = set()
    for child in node.get("chain") or node.get("group") or ():
        found |= step_queues(child)
    return found


class Step(Flow):
    """One call of a registered job inside a workflow: ``job.s(*args, **kwargs)``."""

    def __init__(self, definition: "JobDefinition", args: tuple, kwargs: Mapping[str, Any], *, queue: str,
                 ignore_input: bool = False, max_retries: int | None = None) -> None:
        self.definition = definition
        self.args = tuple(to_json_value(a, f"args[{i}]") for i, a in enumerate(args))
        self.kwargs = {k: to_json_value(v, f"kwargs[{k!r}]") for k, v in kwargs.items()}
        self.queue = validate_queue_name(queue)
        self.ignore_input = ignore_input
        self.max_retries = max_retries

    def __repr__(self) -> str:
        return f"{self.definition.name}.{'si' if self.ignore_input else 's'}{self.args!r}"

    def _check(self, has_input: bool, path: str = "0") -> bool:
        args = self.args if (self.ignore_input or not has_input) else (None, *self.args)
        try:
            self.definition.check_arguments(args, self.kwargs)
        except ArgumentError as exc:
            after = " with the previous step's result first" if args is not self.args else ""
            raise ArgumentError(f"workflow step {path}, {self!r}{after}: {exc}") from None
        return True

    def to_node(self) -> dict[str, Any]:
        return {"step": self.definition.name, "args": list(self.args), "kwargs": dict(self.kwargs),
                "queue": resolve_queue_name(self.queue), "ignore_input": self.ignore_input,
                "retry": retry_options_for(self.definition, self.max_retries)}


class Chain(Flow):
    def __init__(self, *steps: Flow) -> None:
        if not steps:
            raise ConfigurationError("azjobs.chain() needs at least one step")
        self.steps = [_flow(s, "azjobs.chain") for s in steps]

    def _check(self, has_input: bool, path: str = "0") -> bool:
        for index, step in enumerate(self.steps):
            has_input = step._check(has_input, f"{path}.{index}") or has_input
        return has_input

    def to_node(self) -> dict[str, Any]:
        return {"chain": [s.to_node() for s in self.steps]}


class Group(Flow):
    def __init__(self, *steps: Step) -> None:
        if len(steps) == 1 and isinstance(steps[0], (list, tuple)):
            steps = tuple(steps[0])
        if not steps:
            raise ConfigurationError("azjobs.group() needs at least one step")
        for step in steps:
            if not isinstance(step, Step):
                raise ConfigurationError(
                    f"azjobs.group() takes job steps (job.s(...)), got {step!r}; chain a group with a step for a fan-in")
        self.steps = list(steps)

    def _check(self, has_input: bool, path: str = "0") -> bool:
        for index, step in enumerate(self.steps):
            step._check(has_input, f"{path}.{index}")
        return True

    def to_node(self) -> dict[str, Any]:
        return {"group": [s.to_node() for s in self.steps]}


class Sleep(Flow):
    def __init__(self, delay: float | timedelta) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ConfigurationError(f"azjobs.sleep() takes seconds or a timedelta of zero or more, got {delay!r}")
        self.seconds = float(seconds)

    def _check(self, has_input: bool, path: str = "0") -> bool:
        return False

    def to_node(self) -> dict[str, Any]:
        return {"sleep_s": self.seconds}


def _flow(item: Any, where: str) -> Flow:
    if not isinstance(item, Flow):
        raise ConfigurationError(f"{where}() takes job steps (job.s(...)), groups and sleeps, got {item!r}")
    return item


def chain(*steps: Flow) -> Chain:
    """Run ``steps`` in order; each step's result is the next step's first argument (unless ``.si``)."""
    return Chain(*steps)


def group(*steps: Step) -> Group:
    """Run ``steps`` in parallel; the result is the list of their results, in order."""
    return Group(*steps)


def sleep(delay: float | timedelta) -> Sleep:
    """Wait ``delay`` (seconds or a timedelta, days included) inside a chain; the value passes through."""
    return Sleep(delay)


# -- the start message -------------------------------------------------------
def start_message(spec: Mapping[str, Any], *, spec_ref: str | None = None) -> str:
    """The start message: the spec inline, or ``spec_ref`` naming the blob that holds it."""
    carried = {"spec_ref": spec_ref} if spec_ref is not None else {"spec": dict(spec)}
    return json.dumps({WORKFLOW_KEY: WORKFLOW_VERSION, "kind": "start", "id": spec["id"], **carried,
                       "enqueued_at": format_time(utcnow())}, separators=(",", ":"), ensure_ascii=False)


def load_spec(payloads: Any, ref: str) -> dict[str, Any]:
    """The spec a start message's ``spec_ref`` names; PayloadError (gone, not ours) or EnvelopeError (not a spec)."""
    try:
        spec = json.loads(payloads.get(ref).decode("utf-8"))
    except ValueError as exc:
        raise EnvelopeError(f"workflow spec blob {ref} does not hold JSON: {exc}", "bad_spec") from None
    check_spec(spec)
    return spec


# One short-retry table client per Client (its connections are reused from one enqueue to the next).
_table_services: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_table_services_lock = threading.Lock()


def _record_pending(client: Any, workflow_id: str, queue: str) -> None:
    """Write the workflow's pending row (see azjobs/workflows/history.py) before its start message is sent."""
    try:
        if hasattr(client, "workflow_history"):
            store = client.workflow_history  # a test double's (azjobs.testing.RecordingClient): None for none
        else:
            with _table_services_lock:
                service = _table_services.get(client)
                if service is None:
                    from ..storage.http import table_service

                    service = _table_services[client] = table_service(client.connection)
            store = HistoryStore(service)  # the table $AZJOBS_WORKFLOWS_TABLE names now (the worker reads it too)
        if store is not None:
            store.record_pending(workflow_id, queue, utcnow())
    except Exception as exc:  # a duplicate or a lookup that says "not found" is preferred to a lost workflow
        log.warning("workflow %s: could not record it as Pending in the history table (%s); sending it anyway: "
                    "WorkflowHandle(%r) will not find it until a worker starts it", workflow_id, describe(exc),
                    workflow_id, extra={"action": "workflow_pending_unavailable", "workflow_id": workflow_id})


def _forget(client: Any, ref: str) -> None:
    try:
        client.payloads.delete(ref)
    except Exception:  # an orphan blob, nothing more
        pass


def parse_message(data: bytes | str) -> dict[str, Any]:
    """A workflows-queue message (already wire-decoded) as a dict; EnvelopeError if it is not one."""
    message = json_object(data)
    if message is None or WORKFLOW_KEY not in message:
        raise EnvelopeError("the body is not an azjobs workflow message (no azjobs_workflow key)", "not_workflow")
    if message[WORKFLOW_KEY] != WORKFLOW_VERSION:
        raise EnvelopeError(f"workflow message version {message[WORKFLOW_KEY]!r} is not supported "
                            f"(this azjobs reads {WORKFLOW_VERSION})", "unknown_version")
    if not isinstance(message.get("id"), str) or not message["id"]:
        raise EnvelopeError("workflow message has no id", "not_workflow")
    why = id_problem(message["id"])
    if why is not None:  # poisoned at once: it could never key a history
        raise EnvelopeError(f"workflow id {message['id']!r} cannot be used: {why}", "bad_id")
    kind = message.get("kind")
    if kind == "start":
        if "spec_ref" in message:
            if not isinstance(message["spec_ref"], str) or not message["spec_ref"]:
                raise EnvelopeError("workflow start message has a spec_ref that is not a blob reference", "bad_spec")
        else:
            check_spec(message.get("spec"))
    elif kind != "event" or not isinstance(message.get("event"), dict):
        raise EnvelopeError(f"workflow message kind {kind!r} is not start or event", "not_workflow")
    return message


def check_spec(spec: Any) -> None:
    """Raise EnvelopeError unless ``spec`` is a well-formed workflow spec."""
    if not isinstance(spec, dict) or not isinstance(spec.get("id"), str):
        raise EnvelopeError("workflow spec must be an object with an id", "bad_spec")
    _check_node(spec.get("root"))


def _check_node(node: Any) -> None:
    if not isinstance(node, dict):
        raise EnvelopeError(f"workflow node must be an object, got {node!r}", "bad_spec")
    if "step" in node:
        if not isinstance(node["step"], str) or not isinstance(node.get("args", []), list) \
                or not isinstance(node.get("kwargs", {}), dict) or not isinstance(node.get("retry"), dict):
            raise EnvelopeError(f"bad workflow step {node!r}", "bad_spec")
    elif "chain" in node or "group" in node:
        children = node.get("chain", node.get("group"))
        if not isinstance(children, list) or not children:
            raise EnvelopeError(f"bad workflow node {node!r}", "bad_spec")
        for child in children:
            _check_node(child)
    elif "sleep_s" in node:
        if not isinstance(node["sleep_s"], (int, float)) or node["sleep_s"] < 0:
            raise EnvelopeError(f"bad workflow sleep {node!r}", "bad_spec")
    else:
        raise EnvelopeError(f"unknown workflow node {node!r}", "bad_spec")


def step_count(node: Mapping[str, Any]) -> int:
    if "step" in node:
        return 1
    return sum(step_count(child) for child in node.get("chain", node.get("group", [])))


__all__ = ["DEFAULT_QUEUE", "Chain", "Flow", "Group", "Sleep", "Step", "chain", "check_spec", "group", "load_spec",
           "parse_message", "retry_options_for", "sleep", "start_message", "workflows_queue"]
