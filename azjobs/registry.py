"""The registry: the only jobs a message can ever run."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterator

from .errors import ConfigurationError, UnknownJobError

if TYPE_CHECKING:
    from .job import JobDefinition


class Registry:
    """Maps stable job names to job definitions."""

    def __init__(self) -> None:
        self._jobs: dict[str, "JobDefinition"] = {}
        self._lock = threading.Lock()

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
            raise UnknownJobError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __iter__(self) -> Iterator["JobDefinition"]:
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)

    def queues(self) -> list[str]:
        """The queues registered jobs declare, sorted."""
        return sorted({definition.queue for definition in self})

    def jobs_for(self, queue: str) -> list["JobDefinition"]:
        return [definition for definition in self if definition.queue == queue]


registry = Registry()
