"""Testing code that uses azjobs: jobs run inline or recorded, test doubles, and a pytest plugin.

- ``inline()``: every enqueue in the process runs its job at once, through the real execution
  core, with job state, poison records and workflow histories in memory (``poisoned``,
  ``run_due``, ``fire``); ``recording()`` records the enqueues instead (``run_all`` runs them);
- ``RecordingClient``, ``MemoryPayloads``, ``RecordingExecutor``: doubles for unit tests of the
  logic around the core;
- the pytest plugin (``azjobs.testing.pytest_plugin``, registered through the ``pytest11`` entry
  point): fixtures ``azjobs_inline``, ``azjobs_recording``, ``azurite`` and ``azjobs_worker``.

Names load on first use (PEP 562), so pytest loading the plugin loads nothing else of azjobs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    **dict.fromkeys(("RecordingClient", "RecordingExecutor", "Write"), "azjobs.testing.doubles"),
    "MemoryPayloads": "azjobs.storage.memory",
    **dict.fromkeys(("Enqueued", "InlineClient", "InlineRecursionError", "Ran"), "azjobs.testing.engine"),
    **dict.fromkeys(("Inline", "Recording", "current", "fire", "inline", "poisoned", "recording", "run_due"),
                    "azjobs.testing.modes"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'azjobs.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


if TYPE_CHECKING:
    from ..storage.memory import MemoryPayloads
    from .doubles import RecordingClient, RecordingExecutor, Write
    from .engine import Enqueued, InlineClient, InlineRecursionError, Ran
    from .modes import Inline, Recording, current, fire, inline, poisoned, recording, run_due

__all__ = sorted(_LAZY)
