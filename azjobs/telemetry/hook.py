"""Telemetry as an executor hook: each delivery's span and metrics (azjobs/execution/hooks.py)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ..execution.hooks import Handling, Hook
from . import watch as telemetry

if TYPE_CHECKING:
    from ..model.outcome import Result

_WATCH = "azjobs.telemetry"  # the key of the delivery's Watch in Handling.notes


class TelemetryHook(Hook):
    """Opens a delivery's span when it arrives, makes it current while the job runs, ends it with the outcome."""

    def delivered(self, handling: Handling) -> None:
        handling.notes[_WATCH] = telemetry.delivery(handling.info)

    def started(self, handling: Handling) -> None:
        watch = handling.notes.get(_WATCH)
        if watch is not None and handling.envelope is not None:
            handling.notes[_WATCH] = telemetry.started(watch, handling.envelope)

    def running(self, handling: Handling) -> contextlib.AbstractContextManager[Any]:
        return telemetry.active(handling.notes.get(_WATCH))

    def settled(self, handling: Handling, result: "Result") -> None:
        telemetry.settled(handling.notes.get(_WATCH), result)

    def raised(self, handling: Handling, error: BaseException, kind: str) -> None:
        telemetry.raised(handling.notes.get(_WATCH), handling.envelope, error, kind)


__all__ = ["TelemetryHook"]
