"""An in-memory job state store for unit tests of pure logic (no Table Storage).

``memory_store()`` is the real ``StateStore`` (every transition and decision) over
``MemoryTable``, a dict with the ``TableClient`` methods the store uses, ETags and the
same errors (404, 409, 412, and 400 PropertyValueTooLarge for a string over 64 KiB of UTF-16).
Storage behaviour itself is proven against Azurite::

    from azjobs.state.testing import memory_store
    from azjobs.testing import RecordingClient

    client = RecordingClient()
    client.state_store = memory_store()
"""

from __future__ import annotations

import copy
import itertools
import threading
from datetime import timedelta
from typing import Any, Iterator

from ..storage.table_rules import MAX_STRING_UNITS, utf16_units
from .entities import DEFAULT_RETENTION
from .store import StateStore


class MemoryEntity(dict):
    """An entity as the SDK hands it out: a dict with ``.metadata["etag"]``."""

    def __init__(self, data: dict, etag: str) -> None:
        super().__init__(data)
        self.metadata = {"etag": etag}


def _error(kind: str, status: int, message: str, code: str = "") -> Exception:
    from azure.core import exceptions

    error = getattr(exceptions, kind)(message=message)
    error.status_code = status
    error.error_code = code
    return error


_OPS = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
}


def _clause(text: str, parameters: dict | None) -> tuple[str, Any, Any]:
    name, op, value = text.strip().split(" ", 2)
    value = (parameters or {})[value[1:]] if value.startswith("@") else value.strip("'")
    return name, _OPS[op], value


class MemoryTable:
    """The ``TableClient`` methods ``StateStore`` calls, over a dict. Thread-safe.

    ``down = True`` makes every call fail as an unreachable service does; ``calls`` counts
    the calls by method name.
    """

    def __init__(self, table_name: str = "azjobsstate") -> None:
        self.table_name = table_name
        self.entities: dict[tuple[str, str], tuple[dict, str]] = {}
        self.exists = True
        self.down = False
        self.calls: dict[str, int] = {}
        self._etags = itertools.count(1)
        self._lock = threading.Lock()

    def _enter(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.down:
            from azure.core.exceptions import ServiceRequestError

            raise ServiceRequestError("connection refused (MemoryTable is down)")
        if not self.exists and method != "create_table":
            raise _error("ResourceNotFoundError", 404, "The table specified does not exist.", "TableNotFound")

    def _store(self, entity: Any) -> dict[str, Any]:
        for name, value in dict(entity).items():  # as Table Storage counts: UTF-16 units
            if isinstance(value, str) and utf16_units(value) > MAX_STRING_UNITS:
                raise _error("HttpResponseError", 400, f"The property value of {name!r} exceeds the maximum allowed "
                             "size (64KB). If the property value is a string, it is UTF-16 encoded and the maximum "
                             "number of characters should be 32K or less.", "PropertyValueTooLarge")
        etag = f'W/"{next(self._etags)}"'
        key = (entity["PartitionKey"], entity["RowKey"])
        self.entities[key] = ({k: copy.deepcopy(v) for k, v in dict(entity).items()}, etag)
        return {"etag": etag}

    def _check_etag(self, key: tuple[str, str], kwargs: dict) -> None:
        etag = kwargs.get("etag")
        if etag is not None and self.entities[key][1] != etag:
            raise _error("ResourceModifiedError", 412, "The update condition specified in the request was not satisfied.",
                         "UpdateConditionNotSatisfied")

    def create_table(self) -> None:
        with self._lock:
            self._enter("create_table")
            if self.exists:
                raise _error("ResourceExistsError", 409, "The table specified already exists.", "TableAlreadyExists")
            self.exists = True

    def create_entity(self, entity: Any, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            self._enter("create_entity")
            if (entity["PartitionKey"], entity["RowKey"]) in self.entities:
                raise _error("ResourceExistsError", 409, "The specified entity already exists.", "EntityAlreadyExists")
            return self._store(entity)

    def get_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> MemoryEntity:
        with self._lock:
            self._enter("get_entity")
            found = self.entities.get((partition_key, row_key))
            if found is None:
                raise _error("ResourceNotFoundError", 404, "The specified resource does not exist.", "ResourceNotFound")
            return MemoryEntity(copy.deepcopy(found[0]), found[1])

    def update_entity(self, entity: Any, mode: Any = None, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            self._enter("update_entity")
            key = (entity["PartitionKey"], entity["RowKey"])
            if key not in self.entities:
                raise _error("ResourceNotFoundError", 404, "The specified resource does not exist.", "ResourceNotFound")
            self._check_etag(key, kwargs)
            merged = dict(entity) if str(getattr(mode, "value", mode)).lower() == "replace" \
                else {**self.entities[key][0], **dict(entity)}
            return self._store(merged)

    def upsert_entity(self, entity: Any, mode: Any = None, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            self._enter("upsert_entity")
            key = (entity["PartitionKey"], entity["RowKey"])
            old = self.entities.get(key, ({}, ""))[0]
            merged = dict(entity) if str(getattr(mode, "value", mode)).lower() == "replace" else {**old, **dict(entity)}
            return self._store(merged)

    def delete_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> None:
        with self._lock:
            self._enter("delete_entity")
            key = (partition_key, row_key)
            if key not in self.entities:
                return  # the service answers 204 for a missing entity without a condition, as does the SDK
            self._check_etag(key, kwargs)
            del self.entities[key]

    def query_entities(self, query_filter: str, *, parameters: dict | None = None, select: Any = None,
                       **kwargs: Any) -> Iterator[MemoryEntity]:
        with self._lock:
            self._enter("query_entities")
            # what the store sends: clauses joined by "and", each one "name op value" or "( a or b or ... )"
            groups = [[_clause(part, parameters) for part in term.strip().strip("()").split(" or ")]
                      for term in query_filter.split(" and ")]
            found = [MemoryEntity(copy.deepcopy(data), etag) for data, etag in self.entities.values()
                     if all(any(name in data and data[name] is not None and test(data[name], value)
                                for name, test, value in group) for group in groups)]
        return iter(found)

    def close(self) -> None:
        pass


class MemoryTableService:
    """The ``TableServiceClient`` methods azjobs' other table users call (the workflow history), over
    ``MemoryTable``s by name."""

    def __init__(self) -> None:
        self.tables: dict[str, MemoryTable] = {}
        self._lock = threading.Lock()

    def get_table_client(self, table_name: str) -> MemoryTable:
        with self._lock:
            table = self.tables.get(table_name)
            if table is None:
                table = self.tables[table_name] = MemoryTable(table_name)
            return table

    def create_table_if_not_exists(self, table_name: str) -> MemoryTable:
        return self.get_table_client(table_name)

    def close(self) -> None:
        pass


def memory_store(*, retention: timedelta = DEFAULT_RETENTION, table: MemoryTable | None = None,
                 payloads: Any = None, **kwargs: Any) -> StateStore:
    """The real ``StateStore`` over a ``MemoryTable`` (and ``azjobs.testing.MemoryPayloads``)."""
    if payloads is None:
        from ..storage.memory import MemoryPayloads

        payloads = MemoryPayloads()
    return StateStore(table if table is not None else MemoryTable(), payloads=payloads, retention=retention, **kwargs)


__all__ = ["MemoryEntity", "MemoryTable", "MemoryTableService", "memory_store"]
