"""Test doubles for code that uses azjobs: fast unit tests of pure logic, with no storage.

- ``MemoryPayloads``: the real claim-check store (reference checks, argument parsing,
  consumed markers) over a dict instead of Blob Storage.
- ``RecordingClient``: stands in for ``azjobs.Client``; keeps every message the core
  writes (retry copies, poison records, deferrals) and every envelope a job sends.
- ``RecordingExecutor``: the real execution core; also keeps each ``Result`` it returned.

Behaviour that touches storage is proven against Azurite; these are for the logic around it::

    client = RecordingClient()
    executor = RecordingExecutor(registry=my_registry, client=client, settings=client.settings)
    executor.execute(Envelope.build("my.job", (1,)).encode(), MessageInfo(queue="jobs"))
    assert client.writes == []
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple, Sequence

from ..execution.executor import Executor, Prepared
from ..model.outcome import JobRun, MessageInfo, Result
from ..hosting import standard_hooks
from ..model.envelope import Envelope, decode_body
from ..model.poison_record import PoisonRecord
from ..model.settings import QueueSettings
from ..storage.connection import Connection, azurite_connection_string
from ..storage.memory import MemoryPayloads


class Write(NamedTuple):
    """One message the core sent through a ``RecordingClient`` (a tuple: queue, text, visibility, ttl)."""

    queue: str
    text: str
    visibility_timeout: int = 0
    time_to_live: int | None = None

    def envelope(self, encoding: str = "base64") -> Envelope:
        return Envelope.decode(self.text, encoding)

    def poison_record(self, encoding: str = "base64") -> PoisonRecord:
        return PoisonRecord.decode(self.text, encoding, self.queue.removesuffix("-poison"))


class RecordingClient:
    """Stands in for ``azjobs.Client``: keeps what is sent, in order, and sends nothing.

    ``fail_with`` makes the next sends raise (one exception per send) to test what a
    storage failure leads to.
    """

    def __init__(self, encoding: str = "base64", settings: QueueSettings | None = None) -> None:
        self.settings = settings or QueueSettings(message_encoding=encoding)
        # Where a real Client would send (Azurite's defaults); nothing is ever sent there.
        self.connection = Connection(connection_string=azurite_connection_string(), source="azjobs.testing")
        self.encoding = self.settings.message_encoding
        self.create_queues = True
        self.writes: list[Write] = []
        self.sent: list[tuple[Envelope, Any, Any]] = []
        self.fail_with: list[BaseException] = []
        self.payloads = MemoryPayloads()
        # Job state (azjobs.state): set ``state_store = azjobs.state.testing.memory_store()`` to track jobs.
        self.state: bool | None = None
        self.state_store: Any = None
        # Workflows: the history store flow.enqueue() records a workflow in as Pending (None: none is written).
        self.workflow_history: Any = None
        self._lock = threading.Lock()

    # -- what the core uses ----------------------------------------------------
    def send_text(self, queue: str, text: str, *, visibility_timeout: int = 0, time_to_live: int | None = None,
                  create: bool | None = None) -> None:
        with self._lock:
            if self.fail_with:
                raise self.fail_with.pop(0)
            self.writes.append(Write(queue, text, visibility_timeout, time_to_live))

    # -- what jobs use to enqueue -------------------------------------------
    def send(self, envelope: Envelope, *, delay: Any = None, at: Any = None) -> str:
        with self._lock:
            if self.fail_with:
                raise self.fail_with.pop(0)
            self.sent.append((envelope, delay, at))
        return envelope.id

    def send_many(self, envelopes: Sequence[Envelope], *, delay: Any = None, at: Any = None,
                  max_workers: int = 8) -> list[Any]:
        results: list[Any] = []
        for envelope in envelopes:
            try:
                results.append(self.send(envelope, delay=delay, at=at))
            except Exception as exc:
                results.append(exc)
        return results

    # -- reading back ----------------------------------------------------------
    def to(self, queue: str) -> list[Write]:
        """The writes to one queue."""
        return [write for write in self.writes if write.queue == queue]

    def decoded(self, write: Write) -> bytes:
        return decode_body(write.text, self.encoding)

    def close(self) -> None:
        pass


class RecordingExecutor(Executor):
    """The real execution core with the standard hooks (job state, telemetry, workflow steps); also keeps every
    Result it returned (from any entry point), in order."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("hooks", standard_hooks())
        super().__init__(**kwargs)
        self.results: list[Result] = []
        self._results_lock = threading.Lock()

    def _keep(self, result: Result) -> Result:
        with self._results_lock:
            self.results.append(result)
        return result

    def begin(self, body: bytes | str, info: MessageInfo, *, encoded: bool = True) -> Prepared | Result:
        step = super().begin(body, info, encoded=encoded)
        return self._keep(step) if isinstance(step, Result) else step

    def finish(self, step: Prepared, run: JobRun) -> Result:
        return self._keep(super().finish(step, run))


__all__ = ["MemoryPayloads", "RecordingClient", "RecordingExecutor", "Write"]
