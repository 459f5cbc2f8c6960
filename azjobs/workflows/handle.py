"""A handle on an enqueued workflow: its id, status and result (read from the history store)."""

from __future__ import annotations

import time
from typing import Any

from ..errors import AzjobsError
from .cancel import REASON, terminate
from .history import COMPLETED, FAILED, PENDING, TERMINATED, HistoryStore, find, id_problem


class WorkflowFailed(AzjobsError):
    """The workflow failed: ``error`` is the failing step's recorded error (type, message, traceback)."""

    def __init__(self, workflow_id: str, error: str | None) -> None:
        super().__init__(f"workflow {workflow_id} failed: {error}")
        self.workflow_id = workflow_id
        self.error = error


class WorkflowCancelled(AzjobsError):
    """The workflow was cancelled (``handle.cancel()``, ``azjobs cancel ID``): its status is ``Terminated``."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id} was cancelled (Terminated)")
        self.workflow_id = workflow_id


class WorkflowTimeout(AzjobsError, TimeoutError):
    """``result(timeout=...)`` ran out before the workflow finished."""


class WorkflowNotFoundError(AzjobsError, LookupError):
    """No workflow has this id in the history table: it was never enqueued there (``flow.enqueue()`` records
    every workflow as Pending before sending it), it lives in another table or account, or the id is wrong.
    ``why`` says why no workflow can have the id at all (``/ \\ # ?``, a control character, over 1 KiB)."""

    def __init__(self, workflow_id: str, table: str | None = None, *, why: str | None = None) -> None:
        if why:
            text = f"no workflow can have the id {workflow_id!r}: {why} (workflow ids are what enqueue returned)"
        else:
            where = f" in table {table!r}" if table else ""
            text = (f"no workflow {workflow_id!r}{where}: it was never enqueued there (flow.enqueue() records each "
                    "workflow as Pending before sending it), it lives in another table or account, or the id is wrong")
        super().__init__(text)
        self.workflow_id = workflow_id
        self.why = why


class WorkflowHandle:
    """``flow.enqueue()`` returns one; ``WorkflowHandle(id)`` finds a workflow again.

    ``id`` must be a non-empty string (``ValueError`` otherwise); an id no workflow can have (it
    holds ``/ \\ # ?`` or a control character, or is over 1 KiB) raises ``WorkflowNotFoundError``
    at the first lookup, without a call to storage.
    """

    def __init__(self, id: str, *, client: Any = None, queue: str | None = None, table: str | None = None,
                 durable_client: Any = None) -> None:
        if not isinstance(id, str) or not id:
            raise ValueError(f"a workflow id is a non-empty string (handle.id, what enqueue returned), got {id!r}")
        self.id = id
        self.queue = queue
        self._client = client
        self._table = table
        self._store: HistoryStore | None = None
        # Set by flow.enqueue(): the start message was sent, so "no history at all" means Pending even
        # when the pending row could not be written.
        self._sent = False
        # Inside a function app: the DurableOrchestrationClient of a durable client binding.
        self.durable_client = durable_client

    def __repr__(self) -> str:
        return f"<workflow {self.id}>"

    @property
    def store(self) -> HistoryStore:
        if self._store is None:
            from ..storage.client import default_client

            self._store = HistoryStore.for_client(self._client or default_client(), self._table)
        return self._store

    def status(self) -> dict[str, Any]:
        """Status, steps done/running/failed with results, history length, output or error.

        ``status`` is ``Pending`` until a worker has started the workflow. Raises
        ``WorkflowNotFoundError`` for an id that was never enqueued (or can be no workflow's).
        """
        why = id_problem(self.id)
        if why is not None:
            raise WorkflowNotFoundError(self.id, why=why)
        info = find(self.store, self.id)
        if info is None:
            if not self._sent:
                raise WorkflowNotFoundError(self.id, self.store.table)
            info = {"id": self.id, "status": PENDING, "steps": [], "done": 0, "running": 0, "failed": 0,
                    "timers": 0, "history_length": 0, "output": None, "error": None}
        return info

    async def status_async(self) -> dict[str, Any]:
        """The status from the Durable task hub when the handle has a ``durable_client`` (inside a
        function app: ``WorkflowHandle(id, durable_client=client)`` with the client of a
        ``durable_client_input`` binding), else from the worker's history, as ``status()``.

        An instance the task hub does not know is ``Pending`` if it was enqueued (its pending
        row, read from the history table), else ``WorkflowNotFoundError``.
        """
        import asyncio

        if self.durable_client is None:
            return await asyncio.to_thread(self.status)
        why = id_problem(self.id)
        if why is not None:
            raise WorkflowNotFoundError(self.id, why=why)
        found = await self.durable_client.get_status(self.id)
        runtime = getattr(found, "runtime_status", None)
        if runtime is None:  # not started: enqueued (the start trigger has not run yet), or never
            await asyncio.to_thread(self.status)  # WorkflowNotFoundError unless enqueued
        status = getattr(runtime, "value", runtime) or PENDING
        output = getattr(found, "output", None)
        return {"id": self.id, "status": status, "output": output if status == COMPLETED else None,
                "error": output if status == FAILED else None,
                "created": _iso(getattr(found, "created_time", None)),
                "updated": _iso(getattr(found, "last_updated_time", None)), "source": "durable"}

    def cancel(self) -> str:
        """Cancel the workflow (run by the azjobs worker): steps not started never run, running ones are
        cancelled as jobs are, and its status becomes ``Terminated``; returns the status after (a workflow that
        had already ended keeps its status). ``WorkflowNotFoundError`` for an id that was never enqueued."""
        why = id_problem(self.id)
        if why is not None:
            raise WorkflowNotFoundError(self.id, why=why)
        answer = terminate(self.store, self.id)
        if answer is None:
            raise WorkflowNotFoundError(self.id, self.store.table)
        return answer[0]

    async def cancel_async(self) -> str:
        """``cancel()`` for asyncio apps; with a ``durable_client`` (inside a function app), the Durable
        orchestration is terminated instead (its status becomes ``Terminated``)."""
        import asyncio

        if self.durable_client is None:
            return await asyncio.to_thread(self.cancel)
        await self.durable_client.terminate(self.id, REASON)
        return TERMINATED

    def result(self, timeout: float | None = None, interval: float = 0.2) -> Any:
        """Wait for the workflow's output; raise WorkflowFailed (its recorded error), WorkflowCancelled,
        WorkflowTimeout, or WorkflowNotFoundError (an id that was never enqueued)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.status()
            if info["status"] == COMPLETED:
                return info["output"]
            if info["status"] == FAILED:
                raise WorkflowFailed(self.id, info["error"])
            if info["status"] == TERMINATED:
                raise WorkflowCancelled(self.id)
            if deadline is not None and time.monotonic() >= deadline:
                raise WorkflowTimeout(f"workflow {self.id} did not finish within {timeout}s "
                                      f"(status {info['status']}, {info['done']} step(s) done)")
            time.sleep(interval)


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


__all__ = ["WorkflowCancelled", "WorkflowFailed", "WorkflowHandle", "WorkflowNotFoundError", "WorkflowTimeout"]
