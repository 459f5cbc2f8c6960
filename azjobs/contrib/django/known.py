"""The Django tasks this process knows, by module path, and their azjobs job names (``django:<path>``).

Filled by discovery (``discovery.discover_tasks``); read when a message names a task and when a
result is read back. Nothing here imports a task module or a backend.
"""

from __future__ import annotations

import threading
from typing import Any

#: The prefix of every Django task's job name on the wire: ``django:myapp.tasks.send_email``.
JOB_PREFIX = "django:"
#: The backend's OPTIONS it understands.
OPTION_NAMES = ("connection", "connection_string", "queue_prefix", "queue_names", "max_retries", "retry",
                "retry_on", "give_up_on", "results", "inline")
#: The key of the message's ``options`` that says how Django sent it (backend alias, Django queue name).
OPTIONS_KEY = "django"

_lock = threading.Lock()
_tasks: dict[str, Any] = {}  # module path -> the discovered Task


def job_name(task: Any) -> str:
    """The azjobs job name of a Django task: ``django:`` and its module path."""
    return JOB_PREFIX + task.module_path


def discovered_task(module_path: str) -> Any | None:
    """The Task discovered under ``module_path`` in this process, or None (nothing is imported)."""
    return _tasks.get(module_path)


__all__ = ["JOB_PREFIX", "OPTIONS_KEY", "OPTION_NAMES", "discovered_task", "job_name"]
