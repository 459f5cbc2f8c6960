"""The limits table: where every worker and Functions instance of one storage account meets.

One Table Storage table (``AZJOBS_LIMITS_TABLE``, else ``azjobslimits``), made on first use:

- ``c-<limit>-<key>``: one partition per concurrency limit and key value, one row per slot taken
  (RowKey ``slot-0000`` ...), each a lease (``LeaseUntil``) its holder renews while the job runs;
- ``r-<limit>-<key>``: one row (``window``) per rate limit and key value: the starts of the last
  window, in ten sub-windows;
- ``n-<limit>``: one row per worker process and queue: its start and throttle counts per minute
  (what ``azjobs limits`` and ``azjobs stats`` show).

``<limit>`` and ``<key>`` are hashes (a key value may hold any character, of any length); the rows
carry the readable name and key. Every write is ETag-conditional or on a row only its writer
owns, so no lock service is needed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import datetime, timezone
from typing import Any, Callable

from ..model.secrets import describe, get_logger
from ..storage.http import table_service
from ..storage.table_rules import utf16_units

log = get_logger("azjobs.limits")

DEFAULT_TABLE = "azjobslimits"
TABLE_ENV = "AZJOBS_LIMITS_TABLE"
POOL_SIZE = 32
MAX_SHOWN_UNITS = 200  # a key value as stored for reading: clipped


class LimitsUnavailable(Exception):
    """The limits table could not be reached or refused a call (not a 404, 409 or 412)."""


def default_table() -> str:
    return os.environ.get(TABLE_ENV) or DEFAULT_TABLE


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def slot_partition(limit: str, key: str) -> str:
    return f"c-{digest(limit)}-{digest(key)}"


def rate_partition(limit: str, key: str) -> str:
    return f"r-{digest(limit)}-{digest(key)}"


def counts_partition(limit: str) -> str:
    return f"n-{digest(limit)}"


def prefix_filter(prefix: str) -> tuple[str, dict[str, str]]:
    """A filter for every partition whose key starts with ``prefix`` (which ends in ``-``; ``.`` follows it)."""
    return "PartitionKey ge @lo and PartitionKey lt @hi", {"lo": prefix, "hi": prefix[:-1] + "."}


def shown(text: str) -> str:
    """A key value as stored for reading, within ``MAX_SHOWN_UNITS`` UTF-16 units."""
    if utf16_units(text) <= MAX_SHOWN_UNITS:
        return text
    out, units = [], 0
    for ch in text:
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > MAX_SHOWN_UNITS - 1:
            break
        out.append(ch)
    return "".join(out) + "…"


def status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if code is None:
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def aware(moment: Any) -> datetime | None:
    if isinstance(moment, datetime):
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    return None


def etag_of(entity: Any) -> str | None:
    metadata = getattr(entity, "metadata", None) or {}
    return metadata.get("etag")


def written_etag(answer: Any) -> str | None:
    """The ETag a create/update/upsert call answered with (the SDK returns a dict of response headers)."""
    if isinstance(answer, dict):
        return answer.get("etag")
    return None


class LimitTable:
    """The limits table of one storage account. Thread-safe.

    ``table`` is a ``TableClient`` (or anything with its methods). ``call`` passes 404, 409 and 412
    through as they are; anything else is ``LimitsUnavailable``.
    """

    def __init__(self, table: Any, *, service: Any = None) -> None:
        self.table = table
        self.table_name = getattr(table, "table_name", None)
        self._service = service
        self._lock = threading.Lock()
        self._ready = False

    @classmethod
    def from_connection(cls, connection: Any, table: str | None = None) -> "LimitTable":
        service = table_service(connection, pool=POOL_SIZE)
        return cls(service.get_table_client(table or default_table()), service=service)

    def close(self) -> None:
        for closable in (self.table, self._service):
            close = getattr(closable, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One table call; the table is created the first time a call says it is missing."""
        try:
            return self._call(method, *args, **kwargs)
        except Exception as exc:
            if not _table_missing(exc):
                raise
        self.ensure_table()
        return self._call(method, *args, **kwargs)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.table, method)(*args, **kwargs)
        except Exception as exc:
            if status_of(exc) in (404, 409, 412):
                raise
            raise LimitsUnavailable(f"limits table {self.table_name!r}: {describe(exc)}") from exc

    def query(self, query_filter: str, parameters: dict[str, Any]) -> list[Any]:
        """Every entity the filter selects (a missing table has none)."""
        try:
            return list(self._call("query_entities", query_filter, parameters=parameters))
        except Exception as exc:
            if _table_missing(exc):
                return []
            raise

    def ensure_table(self) -> None:
        with self._lock:
            if self._ready:
                return
            try:
                self._call("create_table")
            except Exception as exc:
                if status_of(exc) != 409:
                    raise
            self._ready = True


def _table_missing(exc: BaseException) -> bool:
    return status_of(exc) == 404 and "TableNotFound" in (str(getattr(exc, "error_code", "")) + str(exc))


STORE_KEY = "azjobs.limits"
_NOT_SET = object()


def table_for(client: Any, make: Callable[[Any], LimitTable] | None = None) -> LimitTable | None:
    """The limits table of ``client``'s account, made on first use and closed with the client.

    A test double that carries its own ``limit_table`` gives that one (None: limits are not enforced);
    one without a storage account (no ``extension``, as ``azjobs.testing.RecordingClient``) gives None.
    """
    own = getattr(client, "limit_table", _NOT_SET)
    if own is not _NOT_SET:
        return own
    if not callable(getattr(client, "extension", None)):
        return None
    return client.extension(STORE_KEY, make or (lambda c: LimitTable.from_connection(c.connection)))


__all__ = ["DEFAULT_TABLE", "LimitTable", "LimitsUnavailable", "TABLE_ENV", "counts_partition", "default_table",
           "digest", "prefix_filter", "rate_partition", "shown", "slot_partition", "table_for"]
