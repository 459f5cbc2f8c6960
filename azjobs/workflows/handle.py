"""A handle on an enqueued workflow: its id, status and result (read from the history store)."""

from __future__ import annotations

import time
from typing import Any

from ..errors import AzjobsError
from .history import COMPLETED, FAILED, HistoryStore, summary


class WorkflowFailed(AzjobsError):
    """The workflow failed: ``error`` is the failing step's recorded error (type, message, traceback)."""

    def __init__(self, workflow_id: str, error: str | None) -> None:
        super().__init__(f"workflow {workflow_id} failed: {error}")
        self.workflow_id = workflow_id
        self.error = error


class WorkflowTimeout(AzjobsError, TimeoutError):
    """``result(timeout=...)`` ran out before the workflow finished."""


class WorkflowHandle:
    """``flow.enqueue()`` returns one; ``WorkflowHandle(id)`` finds a workflow again."""

    def __init__(self, id: str, *, client: Any = None, queue: str | None = None, table: str | None = None,
                 durable_client: Any = None) -> None:
        self.id = id
        self.queue = queue
        self._client = client
        self._table = table
        self._store: HistoryStore | None = None
        # Inside a function app: the DurableOrchestrationClient of a durable client binding.
        self.durable_client = durable_client

    def __repr__(self) -> str:
        return f"<workflow {self.id}>"

    @property
    def store(self) -> HistoryStore:
        if self._store is None:
            from ..client import default_client

            self._store = HistoryStore.for_client(self._client or default_client(), self._table)
        return self._store

    def status(self) -> dict[str, Any]:
        """Status, steps done/running/failed with results, history length, output or error.

        ``status`` is ``Pending`` until a worker has started the workflow.
        """
        info = summary(self.store.load(self.id))
        if info["status"] == "Unknown":
            info["status"] = "Pending"
        return info

    async def status_async(self) -> dict[str, Any]:
        """The status from the Durable task hub when the handle has a ``durable_client`` (inside a
        function app: ``WorkflowHandle(id, durable_client=client)`` with the client of a
        ``durable_client_input`` binding), else from the worker's history, as ``status()``."""
        if self.durable_client is None:
            import asyncio

            return await asyncio.to_thread(self.status)
        found = await self.durable_client.get_status(self.id)
        runtime = getattr(found, "runtime_status", None)
        status = getattr(runtime, "value", runtime) or "Pending"
        output = getattr(found, "output", None)
        return {"id": self.id, "status": status, "output": output if status == COMPLETED else None,
                "error": output if status == FAILED else None,
                "created": _iso(getattr(found, "created_time", None)),
                "updated": _iso(getattr(found, "last_updated_time", None)), "source": "durable"}

    def result(self, timeout: float | None = None, interval: float = 0.2) -> Any:
        """Wait for the workflow's output; raise WorkflowFailed (its recorded error) or WorkflowTimeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.status()
            if info["status"] == COMPLETED:
                return info["output"]
            if info["status"] == FAILED:
                raise WorkflowFailed(self.id, info["error"])
            if deadline is not None and time.monotonic() >= deadline:
                raise WorkflowTimeout(f"workflow {self.id} did not finish within {timeout}s "
                                      f"(status {info['status']}, {info['done']} step(s) done)")
            time.sleep(interval)


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


__all__ = ["WorkflowFailed", "WorkflowHandle", "WorkflowTimeout"]
