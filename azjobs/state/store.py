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
  another worker) the entity is read and the decision made on what it says: run, skip a
  finished job, or defer a message whose job runs under another live lease;
- ``succeeded`` / ``retrying`` / ``dead_lettered``: the outcome, written after the queue
  write that makes it true.

The store never decides whether a job runs when it cannot be reached: it raises
``StateUnavailable`` and the tracker runs the job (a Table outage must not fail one). After a
failure to connect, calls are skipped for ``OUTAGE_PAUSE_S`` so an outage does not slow every
job by a timeout.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..model.envelope import parse_time, to_json_value, utcnow
from ..model.secrets import describe, get_logger, redact
from ..storage.http import http_session, table_service
from ..storage.payloads import PayloadStore
from ..storage.table_rules import SAFE_STRING_UNITS, fits, key_problem, utf16_units
from .batch import Write
from .direct import transactions_for
from .errors import StateRejected, StateUnavailable
from .record import FINISHED, JobError, JobRecord, JobStatus
from .writer import StateWriter

if TYPE_CHECKING:
    from ..model.envelope import Envelope
    from ..storage.connection import Connection
    from ..storage.payloads import PayloadStore

log = get_logger("azjobs.state")

DEFAULT_TABLE = "azjobsstate"
TABLE_SETTING = "AZJOBS_STATE_TABLE"  # an app setting naming another table
DEFAULT_RETENTION = timedelta(days=7)
PARTITIONS = 8
PARTITION_PREFIX = "jobs-"
UNIQUE_ROW = "unique"
UNIQUE_PREFIX = "unique-"
# A string property holds at most 64 KiB of UTF-16 (32,768 units; an emoji takes two): counted with
# azjobs.storage.table_rules, never with len().
MAX_PROPERTY_UNITS = SAFE_STRING_UNITS
RESULTS_PREFIX = "results/"
MAX_ERRORS = 10  # the errors of the last attempts kept on the entity
MAX_TRACEBACK_CHARS = 6_000
MAX_WORKER_IDS = 50
MAX_WORKER_ID_UNITS = 256  # one worker id kept on the record (host:pid, or an invocation id)
MAX_UNIQUE_KEY_UNITS = 1_000  # the unique key's text kept on its entity, for people reading the table
MAX_NOTE_UNITS = 1_000
# A RUNNING entity whose lease ran out is treated as a crashed run. The lease is extended while its
# delivery still holds the message (azjobs.state.running), so it runs out only after a run stopped.
RUNNING_LEASE = timedelta(minutes=10)
OUTAGE_PAUSE_S = 5.0
POOL_SIZE = 32
START_TRIES = 5
OWN_WRITE = "this delivery's own RUNNING write is there (its answer was lost)"
_FINISHED_VALUES = frozenset(status.value for status in FINISHED)


_RUNNING_CHANGES = ("PartitionKey", "RowKey", "UpdatedAt", "ExpiresAt", "Status", "LastAttemptedAt", "Attempt",
                    "MessageId", "DequeueCount", "LeaseUntil")


@dataclass(frozen=True)
class Prunable:
    """One entity ``prune`` deletes: a job record (``name`` the job, ``detail`` its status) or a unique key
    (``name`` the key's text, ``detail`` the job that held it)."""

    kind: str  # "record" or "unique"
    partition: str
    row: str
    name: str
    detail: str
    updated_at: datetime
    blob: str = ""


@dataclass(frozen=True)
class Start:
    """The store's answer to "may this delivery run?": ``run``, ``skip`` or ``defer`` (``defer_s``)."""

    action: str
    why: str = ""
    defer_s: int = 0
    etag: str | None = None
    lease_until: datetime | None = None  # a run's RUNNING lease, as written (azjobs.state.running extends it)


def _status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if code is None:
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _is(exc: BaseException, *codes: int) -> bool:
    return _status_code(exc) in codes


# 4xx answers that mean something of their own (or may pass): everything else in 4xx is permanent.
_NOT_PERMANENT = (401, 403, 404, 408, 409, 412, 429)


def is_permanent(exc: BaseException) -> bool:
    """True when the table refused the request for good (400 PropertyValueTooLarge, EntityTooLarge,
    InvalidInput, 413 ...): the same request can never succeed, so it is not kept for a later try."""
    if isinstance(exc, StateRejected):
        return True
    code = _status_code(exc)
    return code is not None and 400 <= code < 500 and code not in _NOT_PERMANENT


def id_problem(job_id: object) -> str | None:
    """Why ``job_id`` can be no job's id (Table Storage could not hold it as a RowKey); None when it can."""
    return key_problem(job_id)


def _clip(text: str, units: int) -> str:
    """``text`` cut to at most ``units`` UTF-16 units (never in the middle of a surrogate pair)."""
    if fits(text, units):
        return text
    out, used = [], 0
    for ch in text:
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > units:
            break
        out.append(ch)
    return "".join(out)


def _table_missing(exc: BaseException) -> bool:
    return _is(exc, 404) and "TableNotFound" in (str(getattr(exc, "error_code", "")) + str(exc))


def _aware(moment: Any) -> datetime | None:
    if moment is None or moment == "":
        return None
    if isinstance(moment, str):
        return parse_time(moment)
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        # The SDK's TablesEntityDatetime is a datetime subclass: hand out a plain one.
        return datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
                        moment.microsecond, tzinfo=timezone.utc) if type(moment) is not datetime else \
            moment.astimezone(timezone.utc)
    return None


def _loads(text: Any, default: Any) -> Any:
    if not isinstance(text, str) or not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def error_of(error: BaseException | None, *, class_path: str = "", message: str = "", traceback: str = "") -> JobError:
    """A redacted JobError from an exception (or from what a poison record kept)."""
    if error is not None:
        import traceback as tb

        kind = type(error)
        class_path = f"{kind.__module__}.{kind.__qualname__}"
        message = str(error)
        traceback = "".join(tb.format_exception(kind, error, error.__traceback__))
    if len(traceback) > MAX_TRACEBACK_CHARS:
        traceback = "...\n" + traceback[-MAX_TRACEBACK_CHARS:]
    return JobError(redact(class_path), redact(message)[:2_000], redact(traceback))


def default_table() -> str:
    """The state table: the ``AZJOBS_STATE_TABLE`` setting, else ``azjobsstate``."""
    import os

    return os.environ.get(TABLE_SETTING, "").strip() or DEFAULT_TABLE


def partition_of(job_id: str) -> str:
    """The partition of a job's record: a stable hash of its id over ``PARTITIONS`` shards."""
    return f"{PARTITION_PREFIX}{zlib.crc32(job_id.encode('utf-8')) % PARTITIONS}"


def unique_partition(key: str) -> str:
    return UNIQUE_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


class StateStore:
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
        service = table_service(connection, session=http_session(POOL_SIZE))
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

            # The pause is for an unreachable table only. (A 500 that a bad key used to cause cannot come
            # any more: every id is checked with table_rules.key_problem before it is sent.)
            if isinstance(exc, (ServiceRequestError, ServiceResponseError)) or _is(exc, 408, 500, 502, 503, 504):
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

    # -- reading -------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        """The record of ``job_id``, or None if there is none (an id no key can hold has none: no call is made)."""
        if id_problem(job_id) is not None:
            return None
        entity = self._get(job_id)
        return None if entity is None else self.record(entity)

    def recent(self, *, since: datetime | None = None, limit: int = 100,
               status: JobStatus | None = None) -> list[JobRecord]:
        """Records changed since ``since`` (all kept ones without), last changed first, at most ``limit``.

        Table Storage has no index but the key: this scans the table (fine for a dashboard over
        a week's retention; a very busy app should keep ``since`` recent).
        """
        parts = ["PartitionKey ge @first", "PartitionKey lt @after"]
        parameters: dict[str, Any] = {"first": PARTITION_PREFIX, "after": PARTITION_PREFIX[:-1] + "."}
        if since is not None:
            parts.append("UpdatedAt ge @since")
            parameters["since"] = since.astimezone(timezone.utc)
        if status is not None:
            parts.append("Status eq @status")
            parameters["status"] = JobStatus(status).value
        try:
            entities = list(self._call("query_entities", " and ".join(parts), parameters=parameters))
        except Exception as exc:
            if _is(exc, 404):
                return []
            raise
        entities.sort(key=_updated, reverse=True)
        return [self.record(e) for e in entities[:max(0, limit)]]

    def prunable(self, older_than: timedelta | None = None, *, include_unfinished: bool = False) -> list[Prunable]:
        """What ``prune`` with the same arguments deletes, deleting nothing (``azjobs state prune --dry-run``).

        Job records past their retention (or not updated within ``older_than``) that are finished;
        with ``include_unfinished`` READY, RUNNING and RETRYING ones too. Unique keys only once they
        expired, and (unless ``include_unfinished``) only when their job is finished or has no record:
        a key that still holds a job off is never taken away.
        """
        now = self.clock()
        select = ["PartitionKey", "RowKey", "Status", "Job", "UpdatedAt", "ExpiresAt", "ReturnValueRef", "JobId",
                  "UniqueKey"]
        if older_than is None:
            query, parameters = "ExpiresAt lt @now", {"now": now}
        else:
            query, parameters = "UpdatedAt lt @cutoff", {"cutoff": now - older_than}
        try:
            entities = list(self._call("query_entities", query, parameters=parameters, select=select))
        except Exception as exc:
            if _is(exc, 404):
                return []
            raise
        found: list[Prunable] = []
        for entity in entities:
            partition = str(entity.get("PartitionKey", ""))
            if partition.startswith(UNIQUE_PREFIX):
                expires = _aware(entity.get("ExpiresAt"))
                if expires is None or expires > now:
                    continue  # still held (whatever --older-than says)
                holder = str(entity.get("JobId") or "")
                if not include_unfinished and holder:
                    status = self.status_of(holder)
                    if status is not None and status not in FINISHED:
                        continue  # its job is not finished
                found.append(Prunable("unique", partition, str(entity.get("RowKey")),
                                      str(entity.get("UniqueKey") or ""), holder, _updated(entity)))
            elif partition.startswith(PARTITION_PREFIX):
                status = str(entity.get("Status") or "")
                if not include_unfinished and status not in _FINISHED_VALUES:
                    continue
                found.append(Prunable("record", partition, str(entity.get("RowKey")), str(entity.get("Job") or ""),
                                      status, _updated(entity), str(entity.get("ReturnValueRef") or "")))
        return found

    def prune(self, older_than: timedelta | None = None, *, include_unfinished: bool = False) -> int:
        """Delete what ``prunable`` lists (and the records' return-value blobs); returns how many entities went."""
        return self.remove(self.prunable(older_than, include_unfinished=include_unfinished))

    def remove(self, items: Iterable[Prunable]) -> int:
        """Delete the entities ``prunable`` listed (and their return-value blobs); how many went."""
        removed = 0
        for item in items:
            try:
                self._call("delete_entity", item.partition, item.row)
                removed += 1
            except Exception as exc:
                if not _is(exc, 404):
                    raise
            if item.blob and self.payloads is not None:
                try:
                    self.payloads.delete(item.blob)
                except Exception as exc:
                    log.warning("could not delete return value blob %s: %s", item.blob, describe(exc),
                                extra={"action": "state_prune_blob_failed"})
        return removed

    def record(self, entity: Any) -> JobRecord:
        """A JobRecord from an entity (a large return value is read back from Blob Storage)."""
        value = _loads(entity.get("ReturnValue"), None)
        ref = entity.get("ReturnValueRef")
        if ref and self.payloads is not None:
            try:
                value = _loads(self.payloads.get(ref).decode("utf-8"), None)
            except Exception as exc:  # the record still says what happened; only the value is unreadable
                log.warning("return value of job %s unreadable at %s: %s", entity["RowKey"], ref, describe(exc),
                            extra={"action": "state_return_value_unreadable", "job_id": entity["RowKey"]})
        arguments = _loads(entity.get("Arguments"), {})
        try:
            status = JobStatus(entity.get("Status", "READY"))
        except ValueError:
            status = JobStatus.READY
        return JobRecord(
            id=entity["RowKey"], job=entity.get("Job", ""), queue=entity.get("Queue") or None,
            status=status, enqueued_at=_aware(entity.get("EnqueuedAt")), started_at=_aware(entity.get("StartedAt")),
            finished_at=_aware(entity.get("FinishedAt")),
            last_attempted_at=_aware(entity.get("LastAttemptedAt")), attempts=int(entity.get("Attempts") or 0),
            worker_ids=list(_loads(entity.get("WorkerIds"), [])), return_value=value,
            errors=[JobError.from_dict(e) for e in _loads(entity.get("Errors"), [])],
            args=list(arguments.get("args", [])) if isinstance(arguments, dict) else [],
            kwargs=dict(arguments.get("kwargs", {})) if isinstance(arguments, dict) else {},
        )

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
            decision = self._decide(entity, envelope, message_id, dequeue_count, now)
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

    def _decide(self, entity: Any, envelope: "Envelope", message_id: str, dequeue_count: int,
                now: datetime) -> Start:
        status = entity.get("Status")
        recorded_attempt = int(entity.get("Attempt") or 1)
        same_message = bool(message_id) and entity.get("MessageId") == message_id
        if status == JobStatus.SUCCESSFUL.value:
            return Start("skip", why="the job already succeeded (a redelivered or duplicate message)")
        if status in (JobStatus.FAILED.value, JobStatus.DEAD_LETTERED.value):
            if same_message:
                return Start("skip", why=f"the job was already {status} from this message (its delete failed)")
            return Start("run", why=f"a new message for a {status} job (a replay)")
        if envelope.attempt < recorded_attempt:
            return Start("skip", why=f"attempt {envelope.attempt} was superseded by attempt {recorded_attempt} "
                                     "(a redelivery of a message whose retry was already scheduled)")
        if status == JobStatus.RUNNING.value:
            if envelope.attempt > recorded_attempt:
                return Start("run", why="a retry copy of an attempt that ended (its RETRYING write was lost)")
            recorded_count = int(entity.get("DequeueCount") or 0)
            if same_message and dequeue_count > recorded_count:
                return Start("run", why="the previous delivery of this message lost its lease (its worker stopped)")
            if same_message and dequeue_count == recorded_count:
                # One receive gives one (message id, dequeue count): this delivery wrote that RUNNING
                # itself, and the answer was lost (a timeout after the service applied the write).
                return Start("run", why=OWN_WRITE)
            lease_until = _aware(entity.get("LeaseUntil"))
            if lease_until is not None and lease_until > now:
                wait_s = max(1, int((lease_until - now).total_seconds()) + 1)
                return Start("defer", why=f"the job is RUNNING under another live lease (message "
                                          f"{entity.get('MessageId')})", defer_s=wait_s)
            return Start("run", why="a RUNNING record whose lease ran out (its worker stopped)")
        return Start("run")

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
        entity.update(self._return_value(envelope.id, value))
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

    def _return_value(self, job_id: str, value: Any) -> dict[str, Any]:
        try:
            text = _dumps(to_json_value(value, "the return value"))
        except Exception as exc:
            log.warning("job %s returned a value JSON cannot carry (%s); its record keeps none", job_id,
                        describe(exc), extra={"action": "state_return_value_dropped", "job_id": job_id})
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

    def status_of(self, job_id: str) -> JobStatus | None:
        if id_problem(job_id) is not None:
            return None
        entity = self._get(job_id)
        if entity is None:
            return None
        try:
            return JobStatus(entity.get("Status"))
        except ValueError:
            return None

    # -- unique jobs -----------------------------------------------------------
    def claim_unique(self, key: str, job_id: str, ttl: timedelta, *, visible_at: datetime | None = None) -> str | None:
        """Hold ``key`` for ``job_id``; None if it is now ours, else the id of the job holding it.

        A key is held while its job is not finished and its TTL (from when the job is due) has
        not run out; a conditional insert (or a conditional take-over) makes one caller win.
        """
        from azure.core import MatchConditions

        now = self.clock()
        partition = unique_partition(key)
        entity = {"PartitionKey": partition, "RowKey": UNIQUE_ROW, "JobId": job_id,
                  "UniqueKey": _clip(key, MAX_UNIQUE_KEY_UNITS),
                  "UpdatedAt": now, "ExpiresAt": max(now, visible_at or now) + ttl}
        for _ in range(START_TRIES):
            try:
                self._write("create_entity", entity)
                return None
            except Exception as exc:
                if not _is(exc, 409):
                    raise
            held = self._get_key(partition, UNIQUE_ROW)
            if held is None:
                continue
            holder = held.get("JobId", "")
            expires = _aware(held.get("ExpiresAt"))
            if expires is not None and expires > now and holder:
                status = self.status_of(holder)
                if status is None or status not in FINISHED:
                    return holder  # unfinished, or its record not written yet: the key is held
            try:
                self._call("update_entity", entity, mode=_replace(), etag=held.metadata["etag"],
                           match_condition=MatchConditions.IfNotModified)
                return None
            except Exception as exc:
                if not _is(exc, 404, 412):
                    raise
        raise StateUnavailable(f"unique key {key!r} kept changing hands; gave up")

    def release_unique(self, key: str, job_id: str) -> None:
        """Free ``key`` if ``job_id`` still holds it (its message was never sent)."""
        from azure.core import MatchConditions

        held = self._get_key(unique_partition(key), UNIQUE_ROW)
        if held is None or held.get("JobId") != job_id:
            return
        try:
            self._call("delete_entity", held["PartitionKey"], UNIQUE_ROW, etag=held.metadata["etag"],
                       match_condition=MatchConditions.IfNotModified)
        except Exception as exc:
            if not _is(exc, 404, 412):
                raise


def _append_error(entity: Any | None, error: JobError) -> str:
    errors = list(_loads(entity.get("Errors") if entity is not None else None, []))
    errors.append(error.to_dict())
    errors = errors[-MAX_ERRORS:]
    text = _dumps(errors)
    while not fits(text, MAX_PROPERTY_UNITS) and len(errors) > 1:
        errors = errors[1:]
        text = _dumps(errors)
    if not fits(text, MAX_PROPERTY_UNITS):
        last, room = errors[-1], MAX_PROPERTY_UNITS // 4
        while True:  # JSON escapes can make text longer: cut until it fits
            only = {"exception_class_path": _clip(str(last.get("exception_class_path", "")), room // 4),
                    "message": _clip(str(last.get("message", "")), room),
                    "traceback": "...\n" + str(last.get("traceback", ""))[-room:]}
            text = _dumps([only])
            if fits(text, MAX_PROPERTY_UNITS) or room < 16:
                return text
            room //= 2
    return text


def _refused_error(error: JobError, exc: BaseException) -> JobError:
    """What stands for an error the table refused to keep (the fallback record's note)."""
    return JobError(_clip(error.exception_class_path, 1_000), _clip(
        f"{error.message[:500]} (the rest of this error was not kept: the table refused it: {exc})", 2_000), "")


def _updated(entity: Any) -> datetime:
    return _aware(entity.get("UpdatedAt")) or datetime.min.replace(tzinfo=timezone.utc)


def _merge():
    from azure.data.tables import UpdateMode

    return UpdateMode.MERGE


def _replace():
    from azure.data.tables import UpdateMode

    return UpdateMode.REPLACE


def unique_key_for(job: str, args: Iterable[Any], kwargs: dict[str, Any], signature: Any = None) -> str:
    """The key of ``unique=True``: the job name and its arguments as canonical JSON.

    With the job's ``signature`` (an ``inspect.Signature``), the arguments are bound to it with the
    defaults applied and keyed by parameter name, so ``f(1, 2)``, ``f(a=1, b=2)`` and ``f(1, b=2)`` are
    one key, and so are ``f(5)`` and ``f(5, 0)`` when ``b`` defaults to 0. ``*args`` is the list of the
    extra positional arguments and ``**kwargs`` the dict of the extra keywords, under their own names.
    """
    args, kwargs = list(args), dict(kwargs)
    if signature is not None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:  # arguments the job cannot take fail at enqueue before this; keyed as given
            bound = None
        if bound is not None:
            bound.apply_defaults()
            arguments = {name: (list(value) if isinstance(value, tuple) else value)
                         for name, value in bound.arguments.items()}
            return f"{job}:" + json.dumps({"arguments": arguments}, sort_keys=True, separators=(",", ":"),
                                          ensure_ascii=False, default=repr)
    return f"{job}:" + json.dumps({"args": args, "kwargs": kwargs}, sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=False, default=repr)


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
