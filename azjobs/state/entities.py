"""How job state is laid out in its table: keys, limits, properties, and what the store answers.

A job's record is one entity: RowKey the job id, PartitionKey one of ``PARTITIONS`` shards
(``jobs-0`` to ``jobs-7``, by CRC-32 of the id). A unique-job key is one entity of its own
partition (``unique-<sha256>``). Every limit is counted as Table Storage counts it
(``azjobs.storage.table_rules``: UTF-16 units).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from ..model.envelope import parse_time
from ..model.secrets import redact
from ..storage.table_rules import SAFE_STRING_UNITS, fits, key_problem
from .errors import StateRejected
from .record import FINISHED, JobError

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
class Start:
    """The store's answer to "may this delivery run?": ``run``, ``skip``, ``defer`` (``defer_s``) or ``cancel``."""

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
