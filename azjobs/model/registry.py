"""The registry: the only jobs a message can ever run."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterator

from ..errors import ConfigurationError, UndiscoveredJobError, UnknownJobError

if TYPE_CHECKING:
    from .definition import JobDefinition


class Registry:
    """Maps stable job names to job definitions."""

    def __init__(self) -> None:
        self._jobs: dict[str, "JobDefinition"] = {}
        self._lock = threading.Lock()
        self._extra_queues: set[str] = set()
        self._closed: dict[str, str] = {}  # name prefix -> why an unknown name under it is final

    def register(self, definition: "JobDefinition") -> "JobDefinition":
        with self._lock:
            existing = self._jobs.get(definition.name)
            if existing is not None and existing.target_id != definition.target_id:
                raise ConfigurationError(
                    f"job name {definition.name!r} is already registered for {existing.target_id}; "
                    f"{definition.target_id} needs another name (pass name=...)"
                )
            self._jobs[definition.name] = definition
        return definition

    def unregister(self, name: str) -> None:
        with self._lock:
            self._jobs.pop(name, None)

    def get(self, name: str) -> "JobDefinition":
        try:
            return self._jobs[name]
        except KeyError:
            raise self._unknown(name) from None

    def close_namespace(self, prefix: str, why: str) -> None:
        """Every job named ``prefix...`` that may run here is registered: a message naming another one
        is dead-lettered at once (``UndiscoveredJobError``) instead of retried for a rolling deploy."""
        self._closed[prefix] = why

    def _unknown(self, name: str) -> UnknownJobError:
        for prefix, why in self._closed.items():
            if name.startswith(prefix):
                return UndiscoveredJobError(name, why)
        return UnknownJobError(name)

    def add_queue(self, name: str) -> None:
        """A queue worked even though no registered job declares it (e.g. a Django backend's QUEUES)."""
        self._extra_queues.add(name)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __iter__(self) -> Iterator["JobDefinition"]:
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)

    def queues(self) -> list[str]:
        """The queues registered jobs declare, sorted."""
        return sorted({definition.queue for definition in self} | self._extra_queues)

    def jobs_for(self, queue: str) -> list["JobDefinition"]:
        return [definition for definition in self if definition.queue == queue]


registry = Registry()
