"""A cancelled job's async task: cancelled at its next ``await`` (its ``finally`` blocks run).

The coroutine of an ``async def`` job runs as a task of its own, so cancelling the job cancels
that task and nothing around it (the worker's loop, the Functions host's invocation). A sync
job's thread cannot be stopped: it reads ``current_job().cancelled`` (or calls
``raise_if_cancelled()``), or finishes its run and has its result discarded.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine

from ..errors import JobCancelled
from ..model.context import Cancellation


async def cancellable(job: Coroutine[Any, Any, Any], cancellation: Cancellation, job_id: str) -> Any:
    """Await ``job`` as its own task, cancelled when ``cancellation`` is set (from any thread).

    A task cancelled that way raises ``JobCancelled``; one the job cancelled itself raises its
    ``CancelledError`` as before. Cancelling the caller cancels the job's task too.
    """
    task = asyncio.ensure_future(job)
    loop = asyncio.get_running_loop()

    def cancel() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    forget = cancellation.on_cancel(cancel)
    try:
        await asyncio.wait((task,))
    except BaseException:  # the caller was cancelled (the host's timeout or shutdown): so is the job
        task.cancel()
        raise
    finally:
        forget()
    if task.cancelled() and cancellation.is_set():
        raise JobCancelled(job_id)
    return task.result()


__all__ = ["cancellable"]
