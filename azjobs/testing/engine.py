"""The in-process client behind ``azjobs.testing.inline()`` and ``recording()``: what it is sent, it runs.

``InlineClient`` stands in for ``azjobs.Client`` (the process's enqueues reach it through
``azjobs.storage.client.routed_to``). Every message it is sent is encoded as for the queue and
kept in a first-in, first-out list; a job message is handed to the real execution core
(``azjobs.hosting.executor``: job state, telemetry and workflow steps) exactly as the worker hands
it a message it received, and a workflows-queue message to the worker's workflow driver. Job
state lives in ``azjobs.state.testing.memory_store()``, workflow histories in memory tables,
claim-checked arguments in ``MemoryPayloads``, poison records in a dict: no storage is reached.

When a message runs:

- an enqueue from the test or from a job runs its job at once, before the enqueue returns (a job
  enqueued by a job runs inside it: depth first, at most ``max_depth`` levels);
- what the core itself writes while it settles a delivery (a retry copy, a deferral hop, a
  workflow step's report, the next steps of a workflow) runs after that delivery is settled, in
  the order written, before the enqueue that started it all returns;
- delays are skipped (``delays="skip"``): a delayed message runs at once, and while it runs the
  core's clock reads its due time, so it is not deferred again; with ``delays="keep"`` a message
  with a delay waits for ``run_due(at)``;
- ``retries=False`` keeps retry copies instead of running them (``run_due`` runs them);
- ``capture=True`` (recording) runs nothing until ``run_all()``.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

from ..errors import AzjobsError, ConfigurationError, PayloadTooLargeError
from ..execution.executor import Prepared
from ..hosting import executor as hosted_executor
from ..model.envelope import Envelope, decode_body, json_object, parse_time, utcnow
from ..model.outcome import MessageInfo, Outcome, Result
from ..model.poison_record import PoisonRecord
from ..model.registry import Registry
from ..model.settings import QueueSettings
from ..model.tracking import ETAG_OPTION, TRACK_OPTION
from ..state.testing import MemoryTableService, memory_store
from ..storage.delays import NEVER_EXPIRE, plan_delivery
from ..storage.memory import MemoryPayloads
from ..workflows.driver import Driver, Incoming
from ..workflows.history import TIMER_FIRED, HistoryStore
from ..workflows.spec import WORKFLOW_KEY, parse_message

DEFAULT_MAX_DEPTH = 25  # jobs enqueued by jobs, nested; deeper is taken for a job that enqueues itself
MAX_RUNS = 10_000  # deliveries for one enqueue (or one run_all/run_due): a runaway retry or workflow loop
DELAYS = ("skip", "keep")
INTERNAL_OPTIONS = (TRACK_OPTION, ETAG_OPTION)  # what job state adds to a message's options

# Inside the core's own steps (decode, settle, a workflow episode): what is sent then waits its turn.
_in_core: contextvars.ContextVar[bool] = contextvars.ContextVar("azjobs_inline_core", default=False)
# The jobs whose runs the current one is nested in (outermost first).
_chain: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("azjobs_inline_chain", default=())
# The core's clock while a delayed message runs early: its due time (None: the real time).
_floor: contextvars.ContextVar[datetime | None] = contextvars.ContextVar("azjobs_inline_floor", default=None)


class InlineRecursionError(AzjobsError, RecursionError):
    """Jobs enqueued jobs deeper than ``max_depth`` (or one enqueue ran more than ``MAX_RUNS`` deliveries):
    in inline mode a job that enqueues itself would never end. Raised by the enqueue that started it."""


@dataclass
class Message:
    """One message as a queue would hold it: its encoded text, and when it becomes visible."""

    seq: int
    queue: str
    text: str
    due: datetime  # visible at, or later: the envelope's due time (long delays), a timer's fire time
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    sent_at: datetime = field(default_factory=utcnow)
    by_core: bool = False  # written by the core while it settled a delivery (a retry copy, a deferral, ...)
    workflow: bool = False  # a workflows-queue message (start, step report, fired timer)


@dataclass(frozen=True)
class Ran:
    """One delivery the core handled: the job, its attempt and what came of it.

    ``outcome`` is ``"succeeded"``, ``"retry_scheduled"``, ``"dead_lettered"``, ``"deferred"`` or
    ``"skipped"``; ``value`` is what the job returned, ``error`` what it raised (None when it did not)."""

    id: str
    job: str
    queue: str
    attempt: int
    outcome: str
    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.SUCCEEDED.value


@dataclass(frozen=True)
class Enqueued:
    """One job enqueued while recording: ``recording().jobs``.

    ``options`` are the message's own (per-call ``max_retries``; job state's bookkeeping left out),
    ``delay`` how long after the enqueue it is due (zero for none), ``due_at`` when."""

    id: str
    job: str
    args: tuple
    kwargs: dict
    queue: str
    options: dict
    delay: timedelta
    due_at: datetime
    envelope: Envelope = field(repr=False, compare=False)


class InlineClient:
    """Stands in for ``azjobs.Client`` and runs what it is sent, in this process (see the module docstring)."""

    def __init__(self, *, retries: bool = True, delays: str = "skip", max_depth: int = DEFAULT_MAX_DEPTH,
                 capture: bool = False, registry: Registry | None = None, encoding: str = "base64") -> None:
        if delays not in DELAYS:
            raise ConfigurationError(f"delays= takes 'skip' (run delayed jobs at once) or 'keep' (run them with "
                                     f"run_due(at=...)), got {delays!r}")
        if not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth < 1:
            raise ConfigurationError(f"max_depth= takes a whole number of at least 1, got {max_depth!r}")
        self.retries = bool(retries)
        self.delays = delays
        self.max_depth = max_depth
        self.capture = capture
        self.settings = QueueSettings(message_encoding=encoding)
        self.encoding = encoding
        self.create_queues = True
        self.message_ttl = NEVER_EXPIRE
        self.send_threads = 1  # enqueue_many sends (and so runs) one job after another, in the caller's thread
        self.payloads = MemoryPayloads()
        self.state = True  # every job is tracked (unless it says track=False), so azjobs.result() answers
        self.state_store = memory_store(payloads=self.payloads)
        self.tables = MemoryTableService()
        self.workflow_history = HistoryStore(self.tables)
        self.executor = hosted_executor(client=self, settings=self.settings, registry=registry, clock=self.now,
                                        host="inline")
        self.runs: list[Ran] = []
        self.enqueued: list[Enqueued] = []
        self._pending: list[Message] = []
        self._poison: dict[str, list[str]] = {}
        self._seq = itertools.count(1)
        self._lock = threading.RLock()
        self._tripped: InlineRecursionError | None = None
        self._budget: list[int] = []  # deliveries left for the outermost enqueue running now
        self._drivers: dict[str, Driver] = {}

    # -- time --------------------------------------------------------------------
    def now(self) -> datetime:
        """The core's clock: the real time, or a delayed message's due time while it runs early."""
        floor = _floor.get()
        real = utcnow()
        return floor if floor is not None and floor > real else real

    # -- what the process sends ----------------------------------------------------
    def send(self, envelope: Envelope, *, delay: Any = None, at: Any = None) -> str:
        """Encode ``envelope`` as for the queue (arguments over the limit claim-checked) and run it (see module)."""
        delivery = plan_delivery(delay, at, self.now())
        if delivery.due_at is not None:
            envelope = envelope.evolve(due_at=delivery.due_at)
        try:
            text = envelope.encode(self.encoding)
        except PayloadTooLargeError:
            if envelope.payload_ref is not None or (not envelope.args and not envelope.kwargs):
                raise
            envelope = self.payloads.offload(envelope)
            text = envelope.encode(self.encoding)
        if envelope.queue is None:
            raise ConfigurationError(f"envelope for {envelope.job} names no queue")
        message = self._add(envelope.queue, text, delivery.visibility_timeout)
        if not _in_core.get():
            self._note_enqueued(message)
        self._maybe_run(message)
        return envelope.id

    def send_many(self, envelopes: Sequence[Envelope], *, delay: Any = None, at: Any = None,
                  max_workers: int = 8) -> list[Any]:
        """``send`` for each envelope in turn; each result is the job id or the exception."""
        results: list[Any] = []
        for envelope in envelopes:
            try:
                results.append(self.send(envelope, delay=delay, at=at))
            except InlineRecursionError:
                raise
            except Exception as exc:
                results.append(exc)
        return results

    def send_text(self, queue: str, text: str, *, visibility_timeout: int = 0, time_to_live: int | None = None,
                  create: bool | None = None) -> None:
        """Message text as the core writes it: a poison record is kept, anything else queued (and run)."""
        if queue.endswith("-poison"):
            with self._lock:
                self._poison.setdefault(queue, []).append(text)
            return
        message = self._add(queue, text, visibility_timeout)
        self._maybe_run(message)

    def close(self) -> None:
        self.executor.close()
        self.state_store.close()

    # -- reading back ---------------------------------------------------------------
    def poisoned(self, queue: str) -> list[PoisonRecord]:
        """The poison records written for ``queue`` (or its ``-poison`` twin named itself), oldest first."""
        name = queue if queue.endswith("-poison") else f"{queue}-poison"
        with self._lock:
            texts = list(self._poison.get(name, ()))
        records = []
        for text in texts:
            record = PoisonRecord.decode(text, self.encoding, name.removesuffix("-poison"))
            if record.record_ref is not None:  # too large for a message: the whole record waits in a blob
                record = PoisonRecord.from_dict(json.loads(self.payloads.get(record.record_ref).decode("utf-8")))
            records.append(record)
        return records

    def pending(self) -> list[Message]:
        """Messages waiting: kept delays (``delays="keep"``), kept retries (``retries=False``), recorded jobs."""
        with self._lock:
            return list(self._pending)

    # -- running ----------------------------------------------------------------
    def run_due(self, at: datetime | None = None) -> list[Ran]:
        """Run every waiting message due at ``at`` (default: now), and what they lead to; the core's clock reads
        ``at`` meanwhile. Returns what ran."""
        at = _aware(at, "run_due(at=...)") if at is not None else utcnow()
        token = _floor.set(at)
        try:
            return self._run_loop(lambda message: message.due <= at or self._runs_on_its_own(message))
        finally:
            _floor.reset(token)

    def run_all(self) -> list[Ran]:
        """Run every waiting message (recorded jobs, kept delays and retries) and what they lead to, in order."""
        return self._run_loop(lambda message: True)

    def _run_loop(self, eligible: Callable[[Message], bool]) -> list[Ran]:
        before = len(self.runs)
        fresh = not self._budget
        if fresh:
            self._budget.append(MAX_RUNS)
        try:
            while True:
                with self._lock:
                    message = next((m for m in self._pending if eligible(m)), None)
                    if message is None:
                        break
                    self._pending.remove(message)
                self._execute(message)
        finally:
            if fresh:
                self._budget.clear()
        self._raise_tripped(not _chain.get())
        return self.runs[before:]

    def _add(self, queue: str, text: str, visibility_s: int) -> Message:
        now = self.now()
        visible = now + timedelta(seconds=max(0, visibility_s or 0))
        message = Message(next(self._seq), queue, text, visible, sent_at=now, by_core=_in_core.get())
        _describe(message, self.encoding)
        with self._lock:
            self._pending.append(message)
        return message

    def _runs_on_its_own(self, message: Message) -> bool:
        """Whether a waiting message runs without being asked (``run_due``/``run_all``)."""
        if self.capture:
            return False
        if message.by_core and not message.workflow and not self.retries and _is_retry_copy(message, self.encoding):
            return False
        return self.delays == "skip" or message.due <= self.now()

    def _maybe_run(self, message: Message) -> None:
        if _in_core.get() or not self._runs_on_its_own(message):
            return  # the core's own writes run once the delivery that wrote them is settled
        self._run_now(message)

    def _run_now(self, message: Message) -> None:
        """Run ``message`` and everything it leads to before returning (a job enqueued by a job: nested)."""
        chain = _chain.get()
        name = _job_of(message, self.encoding)
        if len(chain) >= self.max_depth or self._tripped is not None:
            with self._lock:
                self._pending.remove(message)
            self._tripped = self._tripped or InlineRecursionError(_too_deep(chain + (name,), self.max_depth))
            raise self._tripped
        with self._lock:
            self._pending.remove(message)
        fresh = not self._budget
        if fresh:
            self._budget.append(MAX_RUNS)
        try:
            self._execute(message)
            while True:  # what this run led to: retry copies, a workflow's steps and reports
                with self._lock:
                    follow = next((m for m in self._pending if m.seq > message.seq and self._runs_on_its_own(m)),
                                  None)
                    if follow is None:
                        break
                    self._pending.remove(follow)
                self._execute(follow)
        finally:
            if fresh:
                self._budget.clear()
        self._raise_tripped(not chain)

    def _raise_tripped(self, outermost: bool) -> None:
        if outermost and self._tripped is not None:
            error, self._tripped = self._tripped, None
            raise error

    def _execute(self, message: Message) -> None:
        if self._tripped is not None:  # stop everything at once: each retry would run the whole tree again
            raise self._tripped
        if self._budget:
            self._budget[0] -= 1
            if self._budget[0] < 0:
                error = InlineRecursionError(
                    f"azjobs.testing: one enqueue led to more than {MAX_RUNS:,} deliveries (a retry policy that never "
                    "gives up, or jobs that keep enqueueing each other); the rest were not run")
                self._tripped = self._tripped or error
                raise error
        token = _floor.set(max(self.now(), message.due))
        nested = _chain.set(_chain.get() + (_job_of(message, self.encoding),))
        try:
            if _has_running_loop():  # an async test or view enqueued: the job's own event loop needs a thread
                with ThreadPoolExecutor(1, thread_name_prefix="azjobs-inline") as pool:
                    pool.submit(contextvars.copy_context().run, self._deliver, message).result()
            else:
                self._deliver(message)
        finally:
            _chain.reset(nested)
            _floor.reset(token)

    def _deliver(self, message: Message) -> None:
        if message.workflow:
            self._advance(message)
            return
        info = MessageInfo(queue=message.queue, message_id=message.id, dequeue_count=1,
                           insertion_time=message.sent_at)
        core = _in_core.set(True)
        try:
            step = self.executor.begin(message.text, info)
            value = None
            if isinstance(step, Prepared):
                job = _in_core.set(False)  # the job's own enqueues run at once
                try:
                    run = self.executor.run(step)
                finally:
                    _in_core.reset(job)
                value = run.value
                step = self.executor.finish(step, run)
        finally:
            _in_core.reset(core)
        self._record(step, message, value)

    def _record(self, result: Result, message: Message, value: Any) -> None:
        envelope = result.envelope
        self.runs.append(Ran(id=envelope.id if envelope else message.id, job=envelope.job if envelope else "",
                             queue=message.queue, attempt=envelope.attempt if envelope else 1,
                             outcome=result.outcome.value, value=value if result.outcome is Outcome.SUCCEEDED else None,
                             error=result.error))

    def _advance(self, message: Message) -> None:
        """A workflows-queue message: one episode of the worker's workflow driver, over the memory history."""
        try:
            import azure.durable_functions  # noqa: F401
        except ImportError:
            raise ConfigurationError("workflows run inline with azure-functions-durable, as on the worker: "
                                     "pip install 'azjobs[workflows]'") from None
        parsed = parse_message(decode_body(message.text, self.encoding))
        incoming = Incoming.from_message(parsed)
        driver = self._drivers.get(message.queue)
        if driver is None:
            driver = self._drivers[message.queue] = Driver(self, self.workflow_history, message.queue,
                                                            clock=self.now)
        core = _in_core.set(True)
        try:
            if incoming.kind == "event" and incoming.event.get("EventType") == TIMER_FIRED:
                fire_at = parse_time(incoming.event["FireAt"])
                if fire_at > self.now():  # a long timer's next hop (delays kept)
                    driver.send_timer(parsed["id"], incoming.event["TimerId"], fire_at)
                    return
            driver.advance(parsed["id"], [incoming])
        finally:
            _in_core.reset(core)

    def _note_enqueued(self, message: Message) -> None:
        if message.workflow:
            return
        envelope = Envelope.decode(message.text, self.encoding)
        args, kwargs = envelope.args, dict(envelope.kwargs)
        if envelope.payload_ref is not None:
            args, kwargs = self.payloads.load_arguments(envelope.payload_ref)
        options = {k: v for k, v in dict(envelope.options or {}).items() if k not in INTERNAL_OPTIONS}
        with self._lock:
            self.enqueued.append(Enqueued(id=envelope.id, job=envelope.job, args=tuple(args), kwargs=dict(kwargs),
                                          queue=message.queue, options=options,
                                          delay=max(timedelta(0), message.due - message.sent_at),
                                          due_at=message.due, envelope=envelope))


def _describe(message: Message, encoding: str) -> None:
    """Fill what the text says: a workflow message, the due time of a long delay or of a fired timer."""
    data = json_object(decode_body(message.text, encoding))
    if data is None:
        return
    if WORKFLOW_KEY in data:
        message.workflow = True
        event = data.get("event") or {}
        if event.get("EventType") == TIMER_FIRED and isinstance(event.get("FireAt"), str):
            message.due = max(message.due, _parse_any(event["FireAt"]) or message.due)
        return
    due_at = data.get("due_at")
    if isinstance(due_at, str):
        message.due = max(message.due, _parse_any(due_at) or message.due)


def _is_retry_copy(message: Message, encoding: str) -> bool:
    data = json_object(decode_body(message.text, encoding)) or {}
    return isinstance(data.get("attempt"), int) and data["attempt"] > 1


def _job_of(message: Message, encoding: str) -> str:
    data = json_object(decode_body(message.text, encoding)) or {}
    if message.workflow:
        return f"workflow {data.get('id')}"
    return str(data.get("job") or "(not a job)")


def _parse_any(text: str) -> datetime | None:
    try:
        return parse_time(text)
    except (ValueError, TypeError):
        return None


def _too_deep(chain: tuple[str, ...], limit: int) -> str:
    shown = chain if len(chain) <= 8 else chain[:4] + ("…",) + chain[-3:]
    return (f"azjobs.testing.inline(): jobs enqueued jobs more than {limit} levels deep ({' → '.join(shown)}); "
            "each enqueue runs its job at once, so a job that enqueues itself (or a cycle of jobs) never ends. "
            "If the nesting is meant, give inline(max_depth=...) more levels; to see the enqueues without running "
            "them, use azjobs.testing.recording()")


def _aware(moment: Any, where: str) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ConfigurationError(f"{where} takes a timezone-aware datetime (e.g. datetime.now(timezone.utc) + "
                                 f"timedelta(hours=1)), got {moment!r}")
    return moment.astimezone(timezone.utc)


def _has_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


__all__ = ["DEFAULT_MAX_DEPTH", "Enqueued", "InlineClient", "InlineRecursionError", "MAX_RUNS", "Message", "Ran"]
