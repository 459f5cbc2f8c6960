"""The chaos scenario's job (``-i tests.jobs.chaos_jobs`` in ``azjobs`` subprocesses).

``chaos.work(key, kind, seconds)`` ends the way its ``kind`` says:

- ``ok``: sleeps ``seconds`` (short jobs, and long ones that need lease renewals) and returns;
- ``exit``: calls ``sys.exit(3)``;
- ``raise``: raises ``ChaosError`` (a ``RuntimeError``);
- ``hang``: sleeps ``seconds``, longer than the job timeout: the worker abandons its thread.

``chaos.work_async(key, seconds)`` is an ``async def`` job that hangs the same way
(``asyncio.sleep``); the worker cancels it at the timeout.

Every run writes ledger lines (``tests.jobs.reliability_jobs.note``, to
``$AZJOBS_RELIABILITY_LOG``): ``S`` when it starts, and one line when it ends: ``F`` for a
finished ``ok``, ``X`` just before ``sys.exit``, ``R`` just before the raise, ``H`` when a hang's
sleep is over (its thread is done; the worker moved on at the timeout), ``C`` when an async
hang is cancelled. Appends are atomic, so the file order is the order things happened: a
start of a key while one of its runs has not ended means two runs at once.
"""

from __future__ import annotations

import asyncio
import sys
import time

import azjobs
from tests.jobs.reliability_jobs import LEDGER_ENV, note

QUEUE = "chaos-tests"  # the declared queue; the test overrides it per call
KINDS = ("ok", "exit", "raise", "hang")
END_MARK = {"ok": "F", "exit": "X", "raise": "R", "hang": "H", "hang_async": "C"}


class ChaosError(RuntimeError):
    """What a ``raise`` job raises."""


@azjobs.job(queue=QUEUE, name="chaos.work", retry=azjobs.Fixed(0.5, max_retries=1))
def work(key: str, kind: str = "ok", seconds: float = 0.0) -> None:
    """Note the start, end the way ``kind`` says, noting the end."""
    if kind not in KINDS:
        raise azjobs.Fail(f"unknown kind {kind!r}")
    note("S", key)
    if kind == "exit":
        note(END_MARK[kind], key)
        sys.exit(3)
    if kind == "raise":
        note(END_MARK[kind], key)
        raise ChaosError(f"chaos job {key} raised")
    if seconds > 0:
        time.sleep(seconds)
    note(END_MARK[kind], key)



@azjobs.job(queue=QUEUE, name="chaos.work_async", retry=azjobs.Fixed(0.5, max_retries=1))
async def work_async(key: str, seconds: float) -> None:
    """Note the start, sleep ``seconds`` on the event loop; note the end or the cancellation."""
    note("S", key)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        note(END_MARK["hang_async"], key)
        raise
    note(END_MARK["hang"], key)


__all__ = ["ChaosError", "END_MARK", "KINDS", "LEDGER_ENV", "QUEUE", "work", "work_async"]
