"""The Durable Functions side of workflows, added to ``azjobs.blueprint()`` (unless ``workflows=False``).

- ``azjobs_workflow_start``: a queue trigger on the workflows queue with a durable client
  binding. It starts the orchestration with the workflow id as instance id, after asking
  the client whether that instance exists: a redelivered start message (the host's
  at-least-once delivery) finds it and starts nothing (``start_new`` would replace it).
  A spec too large for the message is read from its blob (``spec_ref``).
- ``azjobs_workflow``: the one orchestrator (azjobs/workflows/orchestrator.py).
- ``azjobs_workflow_step``: the one activity; runs any registered job by name through
  the execution core.

This module imports ``azure.functions``; the rest of the subpackage does not need it.
"""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

from ..errors import ConfigurationError
from ..model.secrets import get_logger
from .orchestrator import ACTIVITY, ORCHESTRATOR, START, orchestrator, run_activity
from .spec import load_spec, parse_message, workflows_queue

log = get_logger("azjobs.workflows")

CLIENT_BINDING = "client"
ACTIVITY_BINDING = "call"
CONTEXT_BINDING = "context"


def add_workflow_functions(bp: func.Blueprint, source: Any, *, connection: str, queue: str | None = None) -> None:
    """Register the start trigger, the orchestrator and the activity on ``bp``.

    ``source`` gives the Executor (built on first use, so indexing never touches storage).
    """
    try:
        import azure.durable_functions  # noqa: F401
    except ImportError:
        raise ConfigurationError("azjobs.blueprint() generates the workflow functions on Durable Functions, which need "
                                 "azure-functions-durable (pip install 'azjobs[workflows]', or add it to "
                                 "requirements.txt); pass workflows=False to leave them out") from None
    name = workflows_queue(queue)

    async def azjobs_workflow_start(msg: func.QueueMessage, client) -> None:
        message = parse_message(msg.get_body())  # EnvelopeError: the host retries, then poisons it
        if message["kind"] != "start":
            log.warning("workflow message %s on %s is a %s event, which only the azjobs worker uses; dropped",
                        msg.id, name, message["kind"],
                        extra={"action": "workflow_event_dropped", "workflow_id": message["id"], "queue": name})
            return
        await start_once(client, message, source.get().payloads if "spec_ref" in message else None)

    bp.function_name(name=START)(
        bp.queue_trigger(arg_name="msg", queue_name=name, connection=connection, data_type=func.DataType.BINARY)(
            bp.durable_client_input(client_name=CLIENT_BINDING)(azjobs_workflow_start)))

    # The very function the off-cloud driver replays (azjobs/workflows/driver.py).
    bp.function_name(name=ORCHESTRATOR)(bp.orchestration_trigger(context_name=CONTEXT_BINDING)(orchestrator))

    async def azjobs_workflow_step(call: str) -> Any:
        return await run_activity(source.get(), json.loads(call) if isinstance(call, str) else call, name)

    bp.function_name(name=ACTIVITY)(bp.activity_trigger(input_name=ACTIVITY_BINDING)(azjobs_workflow_step))


async def start_once(client: Any, message: dict, payloads: Any = None) -> bool:
    """Start the workflow's orchestration unless its instance exists; True if started.

    A spec too large for the start message is read from its blob (``spec_ref``, in ``payloads``) and the
    blob deleted once the orchestration holds it as its input.
    """
    import asyncio

    workflow_id = message["id"]
    status = await client.get_status(workflow_id)
    if status is not None and getattr(status, "runtime_status", None) is not None:
        log.info("workflow %s already started (%s); redelivered start message ignored", workflow_id,
                 status.runtime_status.value if hasattr(status.runtime_status, "value") else status.runtime_status,
                 extra={"action": "workflow_start_duplicate", "workflow_id": workflow_id})
        return False
    ref = message.get("spec_ref")
    spec = message["spec"] if ref is None else await asyncio.to_thread(load_spec, payloads, ref)
    await client.start_new(ORCHESTRATOR, instance_id=workflow_id, client_input=spec)
    if ref is not None:
        try:
            await asyncio.to_thread(payloads.delete, ref)
        except Exception as exc:  # an orphan blob, nothing more
            log.warning("could not delete workflow spec blob %s: %s", ref, exc,
                        extra={"action": "payload_delete_failed", "workflow_id": workflow_id})
    log.info("workflow %s started", workflow_id, extra={"action": "workflow_started", "workflow_id": workflow_id})
    return True


__all__ = ["add_workflow_functions", "start_once"]
