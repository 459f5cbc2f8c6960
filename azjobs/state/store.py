"""The job state store: one Table Storage entity per job id.

RowKey is the job id and PartitionKey one of ``PARTITIONS`` shards (``jobs-0`` to ``jobs-7``,
by a hash of the id), so every read is a point read, every transition an ETag-conditional
write on one entity, and the writes of concurrent jobs can share a transaction: the RUNNING
and SUCCESSFUL writes go through ``azjobs.state.writer``, which sends those waiting for one
partition as one request. Eight partitions keep Table Storage's per-partition target (2,000
entities a second) above what one storage account's request target leaves for tracked jobs.

The entity holds the status, the job and queue, the times, attempts and worker ids, the JSON
return value (in Blob Storage, beside claim-checked arguments, when it is over a Table
property's 32K characters) and the errors of failed attempts (redacted). Unique-job keys live in the same table under their own
partition (``unique-<sha256>``).

Entities carry ``ExpiresAt``: ``prune()`` deletes those past it (Table Storage has no TTL of
its own). Every write sets it to now + retention.

Transitions (what ``azjobs.state.tracker`` calls from the execution core):

- ``enqueued``: READY, a conditional insert; its ETag travels in the message, so the first
  start is one conditional write (no read);
- ``start``: RUNNING, conditional on that ETag; on a mismatch (a redelivery, a retry copy,
  another worker) the entity is read and the decision made on what it says
  (``azjobs.state.decide``): run, skip a finished job, defer a message whose job runs under
  another live lease, or cancel a cancelled job;
- ``cancel`` (``azjobs.state.cancels``): CANCELLED, or a running job's cancel request;
- ``succeeded`` / ``retrying`` / ``dead_lettered``: the outcome, written after the queue
  write that makes it true.

The store never decides whether a job runs when it cannot be reached: it raises
``StateUnavailable`` and the tracker runs the job (a Table outage must not fail one). After a
failure to connect or a lost answer (after the SDK's retries), calls are skipped for
``OUTAGE_PAUSE_S`` so an outage does not slow every job by a timeout; a throttled call (503,
429, 500 answers, retried with back-off by the SDK) pauses nothing.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from ..model.envelope import parse_time, to_json_value, utcnow
from ..model.secrets import describe, get_logger, redact
from ..storage.http import table_service
from ..storage.payloads import PayloadStore
from ..storage.table_rules import fits, utf16_units
from .batch import Write, transactions_for
from .entities import (_FINISHED_VALUES, _RUNNING_CHANGES, DEFAULT_RETENTION, DEFAULT_TABLE, MAX_NOTE_UNITS,
                        MAX_PROPERTY_UNITS, MAX_WORKER_ID_UNITS, MAX_WORKER_IDS, OUTAGE_PAUSE_S, OWN_WRITE,
                        PARTITIONS, POOL_SIZE, RESULTS_PREFIX, RUNNING_LEASE, START_TRIES, Start, _append_error,
                        _aware, _clip, _dumps, _is, _loads, _merge, _refused_error, _replace, _table_missing,
                        default_table, error_of, id_problem, is_permanent, partition_of, unique_key_for)
from .errors import StateRejected, StateUnavailable
from .cancels import Cancels
from .decide import CANCEL_PENDING, CANCELLED, decide
from .queries import Prunable, Queries
from .record import FINISHED, JobError, JobStatus
from .unique import UniqueKeys
from .writer import StateWriter

if TYPE_CHECKING:
    from ..model.envelope import Envelope
    from ..storage.connection import Connection
    from ..storage.payloads import PayloadStore

log = get_logger("azjobs.state")


class StateStore(Queries, UniqueKeys, Cancels):
    """Job records in one table of the storage account. Thread-safe.

    ``table`` is a ``TableClient`` (or anything with its methods, like the in-memory double in
    ``azjobs.state.testing``); ``payloads`` holds return values too large for the entity.
    """

    def __init__(self, table: Any, *, payloads: "PayloadStore | None" = None,
                 retention: timedelta = DEFAULT_RETENTION, clock: Callable[[], datetime] = utcnow,
                 service: Any = None) -> None:
        if not isinstance(retention, timedelta) or retention <= timedelta(0):
            raise ValueError(f"retention must be a positive timedelta, got {retention!r}")
        self.table = table
        self.table_name = getattr(table, "table_name", None)
        self.payloads = payloads
        self.retention = retention
        self.clock = clock
        self._service = service
        self._lock = threading.Lock()
        self._table_ready = False
        self._outage_until = 0.0
        self._transactions = transactions_for(table)
        self.writer = StateWriter(self._send)

    @classmethod
    def from_connection(cls, connection: "Connection", table: str | None = None,
                        retention: timedelta = DEFAULT_RETENTION, *,
                        payloads: "PayloadStore | None" = None) -> "StateStore":
        """The store in ``table`` of the account ``connection`` names (Azurite, a key or an identity)."""
        table = table or default_table()
        # The queue client's transport: a pool for many job threads, no per-call proxy/netrc look-ups.
        service = table_service(connection, pool=POOL_SIZE)
        if payloads is None:
            payloads = PayloadStore(connection)
        return cls(service.get_table_client(table), payloads=payloads, retention=retention, service=service)

    def close(self) -> None:
        self.writer.close()
        for closable in (self.table, self._service):
            close = getattr(closable, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass

    # -- calls -------------------------------------------------------------
    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One table call. 404/409/412 come back as they are; anything else is ``StateUnavailable``."""
        return self._guarded(getattr(self.table, method), *args, **kwargs)

    def _guarded(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.in_outage():
            raise StateUnavailable("the state table was unreachable a moment ago; not trying again yet")
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if _is(exc, 404, 409, 412) or isinstance(exc, StateUnavailable):
                raise
            from azure.core.exceptions import ServiceRequestError, ServiceResponseError

            # The pause is for an unreachable table only: no connection, or no answer, after the SDK's retries.
            # An answer (503 ServerBusy, 500, 429: throttling) is not an outage: the SDK retried it with
            # back-off, and the next call tries again at once.
            if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
                self._outage_until = time.monotonic() + OUTAGE_PAUSE_S
            raise self._refusal(exc) from exc

    def _refusal(self, exc: BaseException) -> StateUnavailable:
        kind = StateRejected if is_permanent(exc) else StateUnavailable
        return kind(f"state table {self.table_name!r}: {describe(exc)}")

    def in_outage(self) -> bool:
        """True while calls are paused after a failure to reach the table."""
        return time.monotonic() < self._outage_until

    def _send(self, writes: Any) -> list[Any]:
        """One transaction (the writer's thread calls this), guarded as every call is."""
        return self._guarded(self._transactions.send, writes)

    def _merge(self, entity: dict[str, Any], etag: str | None = None) -> str | None:
        """Merge ``entity`` (insert it if missing, unless ``etag`` is given) through the writer."""
        def write() -> str | None:
            try:
                return self.writer.write(Write(entity, etag))
            except Exception as exc:  # the service's answer to this write alone (its transaction's others went on)
                if _is(exc, 404, 409, 412) or isinstance(exc, StateUnavailable):
                    raise
                raise self._refusal(exc) from exc

        return self._creating_table(write)

    def _write(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A single write call."""
        return self._creating_table(lambda: self._call(method, *args, **kwargs))

    def _creating_table(self, write: Callable[[], Any]) -> Any:
        """``write()``, after creating the table if the first try says it is missing."""
        try:
            return write()
        except Exception as exc:
            if not _table_missing(exc):
                raise
        self.ensure_table()
        return write()

    def ensure_table(self) -> None:
        with self._lock:
            if self._table_ready:
                return
            try:
                self._call("create_table")
            except Exception as exc:
                if not _is(exc, 409):
                    raise
            self._table_ready = True

    def _get(self, job_id: str) -> Any | None:
        return self._get_key(partition_of(job_id), job_id)

    def _get_key(self, partition: str, row: str) -> Any | None:
        try:
            return self._call("get_entity", partition, row)
        except Exception as exc:
            if _is(exc, 404):
                return None
            raise

    def _expires(self, now: datetime) -> datetime:
        return now + self.retention


    # -- transitions ---------------------------------------------------------
    def _identity(self, envelope: "Envelope", now: datetime) -> dict[str, Any]:
        """What every write carries, so any one of them can (re)create a whole entity after an outage."""
        why = id_problem(envelope.id)
        if why is not None:  # a message from elsewhere: its id cannot be a RowKey, so it has no record
            raise StateRejected(f"job id {envelope.id!r} cannot key a record: {why}")
        entity: dict[str, Any] = {"PartitionKey": partition_of(envelope.id), "RowKey": envelope.id, "Job": envelope.job,
                                  "Queue": envelope.queue or "", "UpdatedAt": now, "ExpiresAt": self._expires(now)}
        try:
            entity["EnqueuedAt"] = parse_time(envelope.enqueued_at)
        except (TypeError, ValueError):
            pass
        return entity

    def enqueued(self, envelope: "Envelope", *, visible_at: datetime | None = None) -> str | None:
        """Insert the READY record; its ETag (for the message to carry), or None if the id has a record."""
        now = self.clock()
        entity = self._identity(envelope, now)
        entity["ExpiresAt"] = self._expires(max(now, visible_at or now))
        arguments = _dumps({"args": list(envelope.args), "kwargs": dict(envelope.kwargs)})
        entity.update(Status=JobStatus.READY.value, Attempt=envelope.attempt, Attempts=0, WorkerIds="[]",
                      Errors="[]", Arguments=arguments if fits(arguments, MAX_PROPERTY_UNITS) else "",
                      ArgumentsRef=envelope.payload_ref or "")
        try:
            answer = self._write("create_entity", entity)
        except Exception as exc:
            if _is(exc, 409):
                return None
            raise
        return answer.get("etag") if isinstance(answer, dict) else None

    def forget(self, job_id: str, etag: str | None = None) -> None:
        """Remove a record written for a message that was never sent."""
        from azure.core import MatchConditions

        if id_problem(job_id) is not None:
            return

        kwargs = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        try:
            self._call("delete_entity", partition_of(job_id), job_id, **kwargs)
        except Exception as exc:
            if not _is(exc, 404, 412):
                raise

    def start(self, envelope: "Envelope", *, message_id: str, dequeue_count: int, worker_id: str,
              etag: str | None = None) -> Start:
        """Mark the job RUNNING for this delivery, or say why it must not run now."""
        from azure.core import MatchConditions

        now = self.clock()
        worker_id = _clip(worker_id, MAX_WORKER_ID_UNITS)
        running = self._identity(envelope, now)
        running.update(Status=JobStatus.RUNNING.value, LastAttemptedAt=now, Attempt=envelope.attempt,
                       MessageId=message_id, DequeueCount=dequeue_count, LeaseUntil=now + RUNNING_LEASE)
        if etag and envelope.attempt == 1:
            # The READY entity as enqueued: nothing ran yet. (A retry copy carries the same ETag, surely stale.)
            # The ETag proves that entity is there, with the job's identity: only what changes is sent.
            fast = {key: running[key] for key in _RUNNING_CHANGES}
            fast.update(StartedAt=now, Attempts=1, WorkerIds=_dumps([worker_id]))
            try:
                return Start("run", etag=self._merge(fast, etag), lease_until=running["LeaseUntil"])
            except Exception as exc:
                if not _is(exc, 404, 412):
                    raise
        for _ in range(START_TRIES):
            entity = self._get(envelope.id)
            if entity is None:
                fresh = dict(running, StartedAt=now, Attempts=1, WorkerIds=_dumps([worker_id]), Errors="[]")
                try:
                    answer = self._write("create_entity", fresh)
                    return Start("run", etag=answer.get("etag") if isinstance(answer, dict) else None,
                                 lease_until=running["LeaseUntil"])
                except Exception as exc:
                    if _is(exc, 409):
                        continue
                    raise
            decision = decide(entity, envelope, message_id, dequeue_count, now)
            if decision.why == CANCEL_PENDING:  # a cancel no live run is left to finish: written here
                if self.mark_cancelled(entity, now):
                    return Start("cancel", why=CANCELLED)
                continue
            if decision.action != "run":
                return decision
            if decision.why == OWN_WRITE:  # already RUNNING for this delivery: nothing more to write
                return Start("run", why=OWN_WRITE, etag=entity.metadata["etag"],
                             lease_until=_aware(entity.get("LeaseUntil")) or now)
            workers = list(_loads(entity.get("WorkerIds"), []))[-(MAX_WORKER_IDS - 1):] + [worker_id]
            update = dict(running, Attempts=int(entity.get("Attempts") or 0) + 1, WorkerIds=_dumps(workers))
            if not entity.get("StartedAt"):
                update["StartedAt"] = now
            mode = _merge()
            if entity.get("Status") in _FINISHED_VALUES:
                # A replay (a requeued poison record): the job is not finished any more, so the old finish
                # time goes (a merge cannot remove a property: the whole entity is written back without it).
                update = {**{k: v for k, v in dict(entity).items() if k != "FinishedAt"}, **update}
                mode = _replace()
            try:
                answer = self._call("update_entity", update, mode=mode, etag=entity.metadata["etag"],
                                    match_condition=MatchConditions.IfNotModified)
                return Start("run", why=decision.why, etag=answer.get("etag") if isinstance(answer, dict) else None,
                             lease_until=running["LeaseUntil"])
            except Exception as exc:
                if not _is(exc, 404, 412):
                    raise
        return Start("run", why="the record kept changing; running without a conditional start",
                     lease_until=running["LeaseUntil"])

    def extend_lease(self, job_id: str, *, message_id: str, dequeue_count: int,
                     etag: str | None = None) -> tuple[str | None, datetime] | None:
        """Push a running delivery's RUNNING lease ``RUNNING_LEASE`` ahead; its new ETag and lease end.

        Conditional on ``etag`` (the record as this run last wrote it); on a mismatch the record is
        read, and extended only while it is still RUNNING for this delivery (message id and dequeue
        count). None when it is not: the run no longer owns the record, and nothing is written.
        """
        from azure.core import MatchConditions

        now = self.clock()
        until = now + RUNNING_LEASE
        update = {"PartitionKey": partition_of(job_id), "RowKey": job_id, "LeaseUntil": until}
        if etag:
            try:
                return self._merge(update, etag), until
            except Exception as exc:
                if not _is(exc, 404, 412):
                    raise
        entity = self._get(job_id)
        if entity is None or entity.get("Status") != JobStatus.RUNNING.value or \
                entity.get("MessageId") != message_id or int(entity.get("DequeueCount") or 0) != dequeue_count:
            return None
        try:
            answer = self._call("update_entity", update, mode=_merge(), etag=entity.metadata["etag"],
                                match_condition=MatchConditions.IfNotModified)
        except Exception as exc:
            if _is(exc, 404, 412):
                return None
            raise
        return (answer.get("etag") if isinstance(answer, dict) else None), until

    def _read_modify_write(self, job_id: str, change: Callable[[Any | None], dict[str, Any] | None]) -> None:
        """Apply ``change`` to the current entity with an ETag-conditional write, retrying on a race."""
        from azure.core import MatchConditions

        for _ in range(START_TRIES):
            entity = self._get(job_id)
            update = change(entity)
            if update is None:
                return
            try:
                if entity is None:
                    self._write("create_entity", update)
                else:
                    self._call("update_entity", update, mode=_merge(), etag=entity.metadata["etag"],
                               match_condition=MatchConditions.IfNotModified)
                return
            except Exception as exc:
                if not _is(exc, 404, 409, 412):
                    raise
        raise StateUnavailable(f"record of job {job_id} kept changing; gave up writing it")

    def succeeded(self, envelope: "Envelope", value: Any) -> None:
        """SUCCESSFUL with the JSON return value (merged whatever the entity says: the job did succeed)."""
        now = self.clock()
        entity = self._identity(envelope, now)
        entity.update(Status=JobStatus.SUCCESSFUL.value, FinishedAt=now, LeaseUntil=now)
        entity.update(self._return_value(envelope.id, value, envelope.job))
        try:
            self._merge(entity)
        except StateRejected as exc:
            # Refused for good (whatever the size checks missed): the status is what matters; keep it without
            # the value rather than leave the record RUNNING.
            log.warning("job %s %s: the table refused its SUCCESSFUL record (%s); written without the return value",
                        envelope.job, envelope.id, exc,
                        extra={"action": "state_return_value_dropped", "job_id": envelope.id})
            entity.update(ReturnValue="null", ReturnValueRef="", ReturnValueNote=_clip(
                f"the return value was not kept: the table refused it ({exc})", MAX_NOTE_UNITS))
            self._merge(entity)

    def _return_value(self, job_id: str, value: Any, job: str = "") -> dict[str, Any]:
        try:
            text = _dumps(to_json_value(value, "the return value"))
        except Exception as exc:
            # Named as every job line is: the job, then its id.
            log.warning("job %s %s returned a value JSON cannot carry (%s); its record keeps none", job or "?",
                        job_id, describe(exc), extra={"action": "state_return_value_dropped", "job": job,
                                                       "job_id": job_id})
            return {"ReturnValue": "null", "ReturnValueRef": "", "ReturnValueNote": redact(describe(exc))[:1_000]}
        if fits(text, MAX_PROPERTY_UNITS):
            return {"ReturnValue": text, "ReturnValueRef": ""}
        if self.payloads is None:
            return {"ReturnValue": "null", "ReturnValueRef": "",
                    "ReturnValueNote": f"the return value ({utf16_units(text):,} UTF-16 units of JSON) is over a "
                                       "Table property and no blob store was given: it was not kept"}
        # Over a Table property, counted as Azure counts (UTF-16 units): kept in Blob Storage.
        ref = self.payloads.put(f"{RESULTS_PREFIX}{job_id}.json", text.encode("utf-8"))
        return {"ReturnValue": "", "ReturnValueRef": ref}

    def retrying(self, envelope: "Envelope", error: JobError, next_attempt: int, *, attempted: bool = False) -> None:
        """RETRYING, after the retry copy was sent: the next attempt is ``next_attempt``.

        ``attempted``: the delivery counts as an attempt though the job did not start (an unknown job).
        """
        now = self.clock()

        def change(entity: Any | None) -> dict[str, Any] | None:
            if entity is not None and (entity.get("Status") in {s.value for s in FINISHED}
                                       or int(entity.get("Attempt") or 1) > next_attempt):
                return None  # another delivery got further
            update = self._identity(envelope, now)
            update.update(Status=JobStatus.RETRYING.value, Attempt=next_attempt, LeaseUntil=now,
                          Errors=_append_error(entity, recorded))
            if entity is not None and entity.get("CancelRequested"):  # cancelled while it ran: no next attempt
                update.update(Status=JobStatus.CANCELLED.value, FinishedAt=now)
            if attempted:  # an attempt that ended before the job ran (an unknown job): it counts all the same
                update.update(LastAttemptedAt=now,
                              Attempts=max(int(entity.get("Attempts") or 0) if entity is not None else 0,
                                           envelope.attempt))
            return update

        recorded = error
        try:
            self._read_modify_write(envelope.id, change)
        except StateRejected as exc:
            recorded = _refused_error(error, exc)
            self._read_modify_write(envelope.id, change)

    def dead_lettered(self, envelope: "Envelope", error: JobError, status: JobStatus, message_id: str, *,
                      attempted: bool = False) -> None:
        """FAILED or DEAD_LETTERED, after the poison record was written (``attempted``: as for ``retrying``)."""
        now = self.clock()

        def change(entity: Any | None) -> dict[str, Any] | None:
            if entity is not None and entity.get("Status") == JobStatus.SUCCESSFUL.value:
                return None  # a success is never overwritten by a late failure
            update = self._identity(envelope, now)
            update.update(Status=status.value, FinishedAt=now, LeaseUntil=now, MessageId=message_id,
                          Errors=_append_error(entity, recorded))
            if attempted:
                update.update(LastAttemptedAt=now,
                              Attempts=max(int(entity.get("Attempts") or 0) if entity is not None else 0,
                                           envelope.attempt))
            return update

        recorded = error
        try:
            self._read_modify_write(envelope.id, change)
        except StateRejected as exc:  # the status is what matters: written with a short note for the error
            recorded = _refused_error(error, exc)
            self._read_modify_write(envelope.id, change)


STORE_KEY = "azjobs.state.store"


def store_for(client: Any) -> "StateStore | None":
    """The job state store of ``client``: Table Storage in its account (table ``client.state_table``, else
    ``AZJOBS_STATE_TABLE``, else ``azjobsstate``), made on first use and closed with the client.

    A test double that carries its own ``state_store`` (``azjobs.testing.RecordingClient``) gives that one,
    None included (no job state).
    """
    if client is None:
        return None
    own = getattr(client, "state_store", _NOT_SET)
    if own is not _NOT_SET:
        return own
    return client.extension(STORE_KEY, lambda c: StateStore.from_connection(
        c.connection, c.state_table, c.state_retention or DEFAULT_RETENTION, payloads=c.payloads))


_NOT_SET = object()


__all__ = ["STORE_KEY", "store_for", "DEFAULT_RETENTION", "DEFAULT_TABLE", "PARTITIONS", "Prunable", "Start", "StateStore",
           "error_of", "id_problem", "is_permanent", "partition_of", "unique_key_for"]
