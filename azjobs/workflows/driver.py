"""Off-cloud workflows: the worker drives the generated orchestrator with the Durable package's replay.

The driver plays the Durable extension's part, and only that part. For each workflow
it keeps the history in Table Storage (azjobs/workflows/history.py) and, per episode:

1. loads the history and appends ``OrchestratorStarted`` plus the new incoming events
   (the start, step completions and failures, fired timers), skipping any already there
   (a redelivered message);
2. replays the orchestrator function over it (``Orchestrator.handle``, azjobs/workflows/replay.py);
3. turns every task the orchestrator now waits on and that has no history yet into
   ``TaskScheduled``/``TimerCreated`` events, with the ids the SDK gave them; a failed
   ``call_activity_with_retry`` gets its retry timer, then its rescheduled attempt, as
   the extension does;
4. commits the episode as one insert-once row (another worker that committed first wins;
   this one reloads and replays again), then sends what the episode asked for: each
   step as an ordinary azjobs message on its job's queue (with a ``workflow`` reference,
   so the execution core reports its outcome to the workflows queue), each timer as a
   message to the workflows queue, visible when it fires (in hops of at most 7 days).

Which ids the orchestrator waits on is read from the replayed context (its open tasks, and
for ``call_activity_with_retry`` the retry task's attempt count and options): internals of
azure-functions-durable, one more reason its minor version is pinned; the unit tests
(tests/unit/test_workflow_orchestrator.py) pin the behaviour this relies on.

A step whose completion is in the history is never sent again, and a killed worker
loses nothing: the incoming message stays on the queue until its episode is committed
and what it asked for sent, and a redelivered message finds its episode and only sends
what was not yet marked sent. A workflow that fails gets a poison record (step, error,
traceback) on the workflows queue's poison queue, written where the generated activity writes
it on Azure: the orchestrator calls the activity once more with the failure.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ..errors import EnvelopeError
from ..model.envelope import decode_body, encode_text, format_time, utcnow
from ..model.poison_record import ErrorInfo, PoisonRecord
from ..model.queue_names import poison_queue_name
from ..model.secrets import describe, get_logger
from ..storage.payloads import PayloadError
from . import replay as events
from .history import (
    COMPLETED,
    FAILED,
    RUNNING,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_SCHEDULED,
    TIMER_CREATED,
    TIMER_FIRED,
    ENDED,
    Episode,
    History,
    HistoryStore,
    HistoryTooLarge,
    refused_for_good,
    table_answer,
)
from .orchestrator import ACTIVITY, ORCHESTRATOR, orchestrator, step_envelope, write_failure_record
from .spec import WORKFLOW_KEY, WORKFLOW_VERSION, load_spec, parse_message

log = get_logger("azjobs.workflows")

MAX_HOP = timedelta(days=7)  # a queue message's longest visibility
COMMIT_ATTEMPTS = 20


@dataclass(frozen=True)
class Incoming:
    """One message's worth of news for a workflow; ``key`` recognises it when it comes again."""

    key: str
    kind: str  # "start" or "event"
    spec: dict | None = None
    event: dict | None = None
    spec_ref: str | None = None  # a start whose spec waits in Blob Storage (too large for the message)

    @classmethod
    def from_message(cls, message: dict) -> "Incoming":
        if message["kind"] == "start":
            return cls("start", "start", spec=message.get("spec"), spec_ref=message.get("spec_ref"))
        event = message["event"]
        kind = event.get("EventType")
        if kind in (TASK_COMPLETED, TASK_FAILED) and isinstance(event.get("TaskScheduledId"), int):
            return cls(f"task:{event['TaskScheduledId']}", "event", event=event)
        if kind == TIMER_FIRED and isinstance(event.get("TimerId"), int):
            return cls(f"timer:{event['TimerId']}", "event", event=event)
        raise EnvelopeError(f"workflow event {event!r} is not a task completion, failure or fired timer",
                            "not_workflow")


@dataclass(frozen=True)
class Work:
    """Something the orchestrator waits on: a step to run or a timer to fire."""

    id: int
    activity: str | None = None
    input: str | None = None  # the activity input, JSON text
    fire_at: datetime | None = None


def event_message(workflow_id: str, event: dict) -> str:
    return json.dumps({WORKFLOW_KEY: WORKFLOW_VERSION, "kind": "event", "id": workflow_id, "event": event},
                      separators=(",", ":"), ensure_ascii=False)


def waiting_on(replayed: events.Replayed, known: set[int], now: datetime) -> list[Work]:
    """The tasks the orchestrator waits on that have no TaskScheduled/TimerCreated yet."""
    from azure.durable_functions.models.actions.CreateTimerAction import CreateTimerAction
    from azure.durable_functions.models.actions.NoOpAction import NoOpAction

    work = []
    for task_id, task in sorted((k, t) for k, t in replayed.context.open_tasks.items() if isinstance(k, int)):
        if task_id in known or isinstance(task, list):
            continue
        action = task.action_repr[0] if isinstance(task.action_repr, list) else task.action_repr
        if isinstance(action, CreateTimerAction):
            work.append(Work(task_id, fire_at=_aware(action.fire_at)))
        elif isinstance(action, NoOpAction):
            parent = task.parent  # the RetryAbleTask of a call_activity_with_retry
            call = parent.actions[0] if isinstance(parent.actions, list) else parent.actions
            if action.metadata == "rescheduled task":
                work.append(Work(task_id, activity=call.function_name, input=call.input_))
            else:  # "-WithRetry timer": the retry interval, or at once when no attempt is left
                options = parent.retry_options
                exhausted = parent.num_attempts >= options.max_number_of_attempts
                delay = timedelta(0) if exhausted else timedelta(milliseconds=options.first_retry_interval_in_milliseconds)
                work.append(Work(task_id, fire_at=now + delay))
        else:
            work.append(Work(task_id, activity=action.function_name, input=action.input_))
    return work


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, events.TIME_FORMAT).replace(tzinfo=timezone.utc)


class Driver:
    """Advances workflows from their incoming messages. Thread-safe per workflow via the history store."""

    def __init__(self, client: Any, store: HistoryStore, queue: str, *,
                 fn: Callable[[Any], Any] = orchestrator, clock: Callable[[], datetime] = utcnow) -> None:
        self.client = client
        self.store = store
        self.queue = queue
        self.fn = fn
        self.clock = clock

    # -- one workflow, one episode -----------------------------------------
    def advance(self, workflow_id: str, incoming: list[Incoming]) -> str | None:
        """Apply ``incoming`` to the workflow; returns its status after (None: unknown workflow)."""
        for _ in range(COMMIT_ATTEMPTS):
            history = self.store.load(workflow_id)
            outcome = self._episode(workflow_id, history, incoming)
            if outcome is not _CONFLICT:
                return outcome
            log.debug("workflow %s: another worker committed first; replaying again", workflow_id,
                      extra={"action": "workflow_commit_conflict", "workflow_id": workflow_id})
        raise RuntimeError(f"workflow {workflow_id}: {COMMIT_ATTEMPTS} commit conflicts in a row")

    def _episode(self, workflow_id: str, history: History, incoming: list[Incoming]) -> Any:
        now = self.clock()
        seen = history.sources
        fresh = [item for item in incoming if item.key not in seen]
        self._resend_unsent(workflow_id, history, [item.key for item in incoming if item.key in seen])
        if history.status in ENDED:
            if fresh:
                log.info("workflow %s is %s; %d late event(s) ignored", workflow_id, history.status.lower(),
                         len(fresh), extra={"action": "workflow_late_event", "workflow_id": workflow_id})
            return history.status
        if not history.episodes:
            start = next((item for item in fresh if item.kind == "start"), None)
            if start is None:
                log.warning("events for workflow %s, which has no history; dropped", workflow_id,
                            extra={"action": "workflow_unknown", "workflow_id": workflow_id})
                return None
            fresh = [start]
            spec = start.spec
            if spec is None:
                try:
                    spec = load_spec(self.client.payloads, start.spec_ref)
                except (PayloadError, EnvelopeError) as exc:  # gone or not a spec: it can never start
                    return self._fail_now(workflow_id, history, fresh, now,
                                          f"the workflow's spec could not be read from {start.spec_ref}: {exc}")
            new = [events.orchestrator_started(now), events.execution_started(now, ORCHESTRATOR, spec)]
        else:
            fresh = [item for item in fresh if item.kind == "event"]
            if not fresh:
                return history.status
            new = [events.orchestrator_started(now)]
            new += [self._history_event(workflow_id, item.event, now) for item in fresh]
        past = history.events
        replayed = events.replay(self.fn, workflow_id, past + new)
        known = {e["EventId"] for e in past + new if e.get("EventType") in (TASK_SCHEDULED, TIMER_CREATED)}
        work = waiting_on(replayed, known, now)
        for item in work:
            if item.activity is not None:
                new.append(events.task_scheduled(now, item.id, item.activity, json.loads(item.input)))
            else:
                new.append(events.timer_created(now, item.id, events.stamp(item.fire_at)))
        status = RUNNING
        if replayed.failed:
            status = FAILED
            new.append(events.execution_completed(now, FAILED, reason=replayed.state.get("error")))
        elif replayed.done:
            status = COMPLETED
            new.append(events.execution_completed(now, COMPLETED, result=replayed.state.get("output")))
        new.append(events.orchestrator_completed(now))
        episode = Episode(seq=history.next_seq, events=new, sources=[item.key for item in fresh], sent=not work,
                          status=status)
        try:
            committed = self.store.commit(workflow_id, episode)
        except HistoryTooLarge as exc:  # it could never be committed: the workflow fails, and says why
            return self._fail_now(workflow_id, history, fresh, now, str(exc))
        except Exception as exc:
            if not refused_for_good(exc):
                raise  # storage trouble: the message comes again
            # Whatever the size checks missed (on Azure, an entity over 1 MiB): committing it again cannot succeed.
            return self._fail_now(workflow_id, history, fresh, now,
                                  f"Table Storage refused episode {episode.seq} of the workflow's history "
                                  f"({table_answer(exc)}); pass references, not large values")
        if not committed:
            return _CONFLICT
        self._forget_values(fresh)  # the history holds them now
        if work:
            self._send(workflow_id, work)
            self.store.mark_sent(workflow_id, episode.seq)
        log.info("workflow %s: episode %d, %d event(s) in, %d step(s) and %d timer(s) out, %s", workflow_id,
                 episode.seq, len(fresh), sum(1 for w in work if w.activity), sum(1 for w in work if not w.activity),
                 status.lower(), extra={"action": "workflow_episode", "workflow_id": workflow_id, "status": status,
                                        "episode": episode.seq})
        if status == FAILED:
            log.error("workflow %s failed: %s", workflow_id, (replayed.state.get("error") or "").splitlines()[0],
                      extra={"action": "workflow_failed", "workflow_id": workflow_id})
        return status

    def _fail_now(self, workflow_id: str, history: History, fresh: list[Incoming], now: datetime, why: str) -> Any:
        """Fail the workflow without its orchestrator, whose next episode can never be committed (or which can
        never start): an episode that calls the failure-record activity and completes the execution as Failed,
        then the record, as the orchestrator's own failure does (a crash in between: it is written when the
        message comes again)."""
        task_id = 1 + max((e["EventId"] for e in history.events
                           if e.get("EventType") in (TASK_SCHEDULED, TIMER_CREATED)), default=-1)
        failure = {"failure": {"workflow": workflow_id, "step": None, "error": why}}
        failed = [events.orchestrator_started(now), events.task_scheduled(now, task_id, ACTIVITY, failure),
                  events.execution_completed(now, FAILED, reason=why), events.orchestrator_completed(now)]
        episode = Episode(seq=history.next_seq, events=failed, sources=[item.key for item in fresh], sent=False,
                          status=FAILED)
        if not self.store.commit(workflow_id, episode):
            return _CONFLICT
        write_failure_record(self.client, self.queue, failure["failure"])
        self.store.mark_sent(workflow_id, episode.seq)
        log.error("workflow %s failed: %s", workflow_id, why, extra={"action": "workflow_failed",
                                                                     "workflow_id": workflow_id})
        return FAILED

    def _history_event(self, workflow_id: str, event: dict, now: datetime) -> dict:
        """An incoming event as the history keeps it; a step value that waited in Blob Storage is read in."""
        event = {**event, "Timestamp": events.stamp(now), "IsPlayed": False}
        ref = event.pop("ResultRef", None)
        if ref is None:
            return event
        try:
            text = self.client.payloads.get(ref).decode("utf-8")
            json.loads(text)
        except (PayloadError, ValueError) as exc:  # gone, not ours, not JSON: the attempt failed (it may be retried)
            log.error("workflow %s: the value of step %s could not be read from %s: %s", workflow_id,
                      event.get("TaskScheduledId"), ref, describe(exc),
                      extra={"action": "workflow_step_value_lost", "workflow_id": workflow_id})
            return {"EventType": TASK_FAILED, "EventId": -1, "TaskScheduledId": event.get("TaskScheduledId"),
                    "Timestamp": event["Timestamp"], "IsPlayed": False,
                    "Reason": f"{type(exc).__name__}: the step's return value could not be read from {ref}: {exc}",
                    "Details": ""}
        event["Result"] = text
        return event

    def _forget_values(self, fresh: list[Incoming]) -> None:
        """Delete the blobs of specs and step values now in the history (a failed delete leaves a blob behind)."""
        for item in fresh:
            ref = item.spec_ref or (item.event or {}).get("ResultRef")
            if not ref:
                continue
            try:
                self.client.payloads.delete(ref)
            except Exception as exc:
                log.warning("could not delete workflow blob %s (now in the history): %s", ref, describe(exc),
                            extra={"action": "payload_delete_failed", "queue": self.queue})

    def _resend_unsent(self, workflow_id: str, history: History, keys: list[str]) -> None:
        """A redelivered message whose episode committed but whose sends were not all confirmed."""
        done = {e.get("TaskScheduledId") for e in history.events if e.get("EventType") in (TASK_COMPLETED, TASK_FAILED)}
        fired = {e.get("TimerId") for e in history.events if e.get("EventType") == TIMER_FIRED}
        for key in keys:
            episode = history.episode_of(key)
            if episode is None or episode.sent:
                continue
            work = []
            for event in episode.events:
                if event.get("EventType") == TASK_SCHEDULED and event["EventId"] not in done:
                    work.append(Work(event["EventId"], activity=event["Name"], input=event["Input"]))
                elif event.get("EventType") == TIMER_CREATED and event["EventId"] not in fired:
                    work.append(Work(event["EventId"], fire_at=_parse_stamp(event["FireAt"])))
            log.warning("workflow %s: episode %d was committed but its sends not confirmed; sending %d again",
                        workflow_id, episode.seq, len(work),
                        extra={"action": "workflow_resend", "workflow_id": workflow_id, "episode": episode.seq})
            self._send(workflow_id, work)
            self.store.mark_sent(workflow_id, episode.seq)
            episode.sent = True

    # -- what an episode asks for ------------------------------------------
    def _send(self, workflow_id: str, work: list[Work]) -> None:
        steps = []
        for item in work:
            if item.activity is not None:
                call = json.loads(item.input)
                if "failure" in call:  # the activity's other duty, done here: the failed workflow's record
                    write_failure_record(self.client, self.queue, call["failure"])
                    done = {"EventType": TASK_COMPLETED, "EventId": -1, "TaskScheduledId": item.id, "Result": "null"}
                    self.client.send_text(self.queue, encode_text(event_message(workflow_id, done),
                                                                  self.client.encoding))
                    continue
                steps.append(step_envelope(call).evolve(
                    id=step_job_id(workflow_id, item.id),
                    workflow={"id": workflow_id, "task": item.id, "queue": self.queue}))
            else:
                self.send_timer(workflow_id, item.id, item.fire_at)
        if len(steps) == 1:
            self.client.send(steps[0])
        elif steps:
            failures = [r for r in self.client.send_many(steps) if isinstance(r, BaseException)]
            if failures:  # the incoming message is redelivered and the unsent episode sent again
                raise failures[0]

    def send_timer(self, workflow_id: str, timer_id: int, fire_at: datetime) -> None:
        remaining = (fire_at - self.clock()).total_seconds()
        hop = max(0, min(math.ceil(remaining), int(MAX_HOP.total_seconds()) - 1))
        event = {"EventType": TIMER_FIRED, "EventId": -1, "TimerId": timer_id, "FireAt": events.stamp(fire_at)}
        self.client.send_text(self.queue, encode_text(event_message(workflow_id, event), self.client.encoding),
                              visibility_timeout=hop)

_CONFLICT = object()


def step_job_id(workflow_id: str, task_id: int) -> str:
    """The job id of a workflow's step message (the same for every send of it)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"azjobs-workflow:{workflow_id}:{task_id}"))


class WorkflowRunner:
    """The worker's thread on the workflows queue: receive, group by workflow, advance, delete."""

    def __init__(self, client: Any, queue: str, stopping: threading.Event, *, store: HistoryStore | None = None,
                 lease_s: int = 60, max_dequeue_count: int = 5, max_poll_s: float = 2.0) -> None:
        self.client = client
        self.queue = queue
        self.stopping = stopping
        self._store = store
        self._driver: Driver | None = None
        self.lease_s = lease_s
        self.max_dequeue_count = max_dequeue_count
        self.max_poll_s = max_poll_s
        self.advanced = 0
        self._ready = False

    @property
    def store(self) -> HistoryStore:
        if self._store is None:
            self._store = HistoryStore.for_client(self.client)
        return self._store

    @property
    def driver(self) -> Driver:
        if self._driver is None:
            self._driver = Driver(self.client, self.store, self.queue)
        return self._driver

    def run(self) -> None:
        try:
            import azure.durable_functions  # noqa: F401
        except ImportError:
            log.info("workflows queue %s is not worked: workflows need azure-functions-durable "
                     "(pip install 'azjobs[workflows]'); --no-workflows turns this line off", self.queue,
                     extra={"action": "workflows_off", "queue": self.queue})
            return
        try:
            self.driver
        except Exception as exc:  # no Table Storage in this connection (a queue-only SAS, say): a setting, not a fault
            log.info("workflows queue %s is not worked: workflow history needs Table Storage in the same account (%s)",
                     self.queue, describe(exc), extra={"action": "workflows_off", "queue": self.queue})
            return
        log.info("working workflows queue %s (history in table %s)", self.queue, self.store.table,
                 extra={"action": "workflows_on", "queue": self.queue, "table": self.store.table})
        delay, failing = 0.05, False
        while not self.stopping.is_set():
            try:
                found = self.once()
                failing = False
            except Exception as exc:  # storage problems: the worker's own receivers say them to the user
                log.log(logging.DEBUG if failing else logging.INFO, "workflows queue %s: %s", self.queue,
                        describe(exc), extra={"action": "workflow_runner_error", "queue": self.queue})
                found, failing = 0, True
            delay = 0.05 if found else min(self.max_poll_s, delay * 2)
            if not found:
                self.stopping.wait(delay)

    def once(self) -> int:
        """Receive one batch and work it; returns how many messages it received."""
        if not self._ready:
            try:
                self.client.ensure_queue(self.queue)
            except Exception as exc:  # e.g. a SAS without create permission on an existing queue
                log.debug("could not create workflows queue %s: %s", self.queue, describe(exc),
                          extra={"action": "workflows_queue_create_failed", "queue": self.queue})
            self.store.ensure()
            self._ready = True
        messages = list(self.client.queue(self.queue).receive_messages(messages_per_page=32, max_messages=32,
                                                                         visibility_timeout=self.lease_s))
        by_workflow: dict[str, list[tuple[Any, Incoming]]] = {}
        for message in messages:
            try:
                parsed = parse_message(decode_body(message.content, self.client.encoding))
                incoming = Incoming.from_message(parsed)
            except EnvelopeError as exc:
                self._poison_message(message, exc)
                continue
            if incoming.kind == "event" and incoming.event.get("EventType") == TIMER_FIRED:
                fire_at = _parse_stamp(incoming.event["FireAt"])
                if fire_at > self.driver.clock():  # a long timer's next hop
                    self.driver.send_timer(parsed["id"], incoming.event["TimerId"], fire_at)
                    self._delete(message)
                    continue
            by_workflow.setdefault(parsed["id"], []).append((message, incoming))
        for workflow_id, items in by_workflow.items():
            try:
                self.driver.advance(workflow_id, [incoming for _, incoming in items])
            except Exception as exc:
                log.error("workflow %s could not advance: %s; its messages will be redelivered", workflow_id,
                          describe(exc), exc_info=True,
                          extra={"action": "workflow_advance_failed", "workflow_id": workflow_id})
                for message, _ in items:
                    if (message.dequeue_count or 1) >= self.max_dequeue_count:
                        self._poison_message(message, exc)
                continue
            self.advanced += 1
            for message, _ in items:
                self._delete(message)
        return len(messages)

    def _delete(self, message: Any) -> None:
        try:
            self.client.queue(self.queue).delete_message(message.id, message.pop_receipt)
        except Exception as exc:  # it comes back; its event is recognised in the history
            log.warning("could not delete workflow message %s: %s", message.id, describe(exc),
                        extra={"action": "workflow_delete_failed", "queue": self.queue})

    def _poison_message(self, message: Any, error: BaseException) -> None:
        poison = poison_queue_name(self.queue)
        record = PoisonRecord(queue=self.queue, error=ErrorInfo.from_exception(
            error, reason=getattr(error, "reason", "workflow_message_failed")),
            raw_body=message.content if isinstance(message.content, str) else None, raw_form="wire",
            attempts=message.dequeue_count or 1, last_failed_at=format_time(utcnow()), message_id=message.id,
            dequeue_count=message.dequeue_count or 1)
        try:
            self.client.send_text(poison, record.encode(self.client.encoding, trim=True), create=True)
        except Exception as exc:
            log.error("could not poison workflow message %s: %s", message.id, describe(exc),
                      extra={"action": "workflow_poison_failed", "queue": self.queue})
            return
        log.error("workflow message %s on %s poisoned: %s", message.id, self.queue, error,
                  extra={"action": "workflow_message_poisoned", "queue": self.queue, "message_id": message.id})
        self._delete(message)


__all__ = ["Driver", "Incoming", "Work", "WorkflowRunner", "event_message", "step_job_id", "waiting_on"]
