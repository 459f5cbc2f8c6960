"""Draining queues with the real worker, in this process: what the pytest plugin's ``azjobs_worker`` does.

``QueueDrainer(client)`` runs ``azjobs.runtime.worker.Worker`` in burst mode (until the queues are
empty) with the standard hooks, and returns one ``Ran`` per delivery the core handled, value
included.
"""

from __future__ import annotations

import threading
from typing import Any

from ..execution.executor import Prepared
from ..model.outcome import JobRun, MessageInfo, Outcome, Result
from ..model.registry import Registry
from ..runtime.worker import Worker
from ..storage.client import Client
from .doubles import RecordingExecutor
from .engine import Ran


class _Watching(RecordingExecutor):
    """The real core with the standard hooks, keeping what each delivery came to and the value it returned."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ran: list[Ran] = []
        self._ran_lock = threading.Lock()

    def begin(self, body: bytes | str, info: MessageInfo, *, encoded: bool = True) -> Prepared | Result:
        step = super().begin(body, info, encoded=encoded)
        if isinstance(step, Result):
            self._note(step, info, None)
        return step

    def finish(self, step: Prepared, run: JobRun) -> Result:
        result = super().finish(step, run)
        self._note(result, step.info, run.value)
        return result

    def _note(self, result: Result, info: MessageInfo, value: Any) -> None:
        envelope = result.envelope
        ran = Ran(id=envelope.id if envelope else info.message_id, job=envelope.job if envelope else "",
                  queue=info.queue, attempt=envelope.attempt if envelope else 1, outcome=result.outcome.value,
                  value=value if result.outcome is Outcome.SUCCEEDED else None, error=result.error)
        with self._ran_lock:
            self.ran.append(ran)


class QueueDrainer:
    """``drain("emails", "reports")``: work those queues until they are empty; returns what ran, in order."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(self, *queues: str, registry: Registry | None = None, concurrency: int | None = None,
                 lease_s: float = 60.0) -> list[Ran]:
        if not queues:
            raise ValueError("azjobs_worker: name the queues to drain, e.g. azjobs_worker('emails')")
        settings = self.client.settings.for_environment()
        executor = _Watching(client=self.client, settings=settings, registry=registry)
        worker = Worker(list(queues), client=self.client, executor=executor, concurrency=concurrency,
                        lease=lease_s, burst=True)
        worker.run()
        return list(executor.ran)


__all__ = ["QueueDrainer"]
