"""A job always reaches an outcome: BaseException from a job is a recorded failure (no storage).

sys.exit(), SystemExit, KeyboardInterrupt raised in a job thread and GeneratorExit used to
escape the core: the job thread died silently and its message was stranded.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

import azjobs
from azjobs.execution.executor import Executor
from azjobs.hosting import executor as hosted_executor
from azjobs.model.outcome import MessageInfo, Outcome
from azjobs.model.envelope import Envelope
from azjobs.testing import RecordingClient

REG = azjobs.Registry()
QUEUE = "base-exceptions"


@azjobs.job(queue=QUEUE, registry=REG, name="exits", retry=azjobs.Fixed(0, max_retries=1))
def exits(code: int) -> None:
    sys.exit(code)


@azjobs.job(queue=QUEUE, registry=REG, name="interrupted", retry=azjobs.NoRetry())
def interrupted() -> None:
    raise KeyboardInterrupt("ctrl-c inside a job")


@azjobs.job(queue=QUEUE, registry=REG, name="generator_exit", retry=azjobs.NoRetry())
def generator_exit() -> None:
    raise GeneratorExit()


@azjobs.job(queue=QUEUE, registry=REG, name="async_exits", retry=azjobs.NoRetry())
async def async_exits() -> None:
    await asyncio.sleep(0)
    sys.exit(4)


@azjobs.job(queue=QUEUE, registry=REG, name="fine")
async def fine() -> str:
    return "ok"


def executor() -> tuple[Executor, RecordingClient]:
    client = RecordingClient()
    return hosted_executor(registry=REG, client=client, settings=client.settings, host="test"), client  # type: ignore[arg-type]


def body(job: str, *args, attempt: int = 1) -> str:
    return Envelope.build(job, args, attempt=attempt).encode()


def in_thread(fn):
    """Run ``fn`` in a job thread, as the worker does; the thread must survive and return a value."""
    box = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join(10)
    assert box, "the job thread died without an outcome"
    return box[0]


def test_sys_exit_is_a_failure_that_is_retried_then_poisoned_with_the_error():
    ex, client = executor()
    first = in_thread(lambda: ex.execute(body("exits", 3), MessageInfo(QUEUE)))
    assert first.outcome is Outcome.RETRY_SCHEDULED and isinstance(first.error, SystemExit) and first.ran
    retry = client.writes[-1].envelope()
    assert retry.attempt == 2 and client.writes[-1].queue == QUEUE
    second = in_thread(lambda: ex.execute(retry.encode(), MessageInfo(QUEUE)))
    assert second.outcome is Outcome.DEAD_LETTERED
    record = client.writes[-1].poison_record()
    assert client.writes[-1].queue == QUEUE + "-poison"
    assert record.error.type == "SystemExit" and record.error.message == "3"
    assert "sys.exit(code)" in record.error.traceback and record.attempts == 2


@pytest.mark.parametrize("job, kind", [("interrupted", "KeyboardInterrupt"), ("generator_exit", "GeneratorExit")])
def test_other_base_exceptions_in_a_job_thread_are_recorded_failures(job, kind):
    ex, client = executor()
    result = in_thread(lambda: ex.execute(body(job), MessageInfo(QUEUE)))
    assert result.outcome is Outcome.DEAD_LETTERED
    assert client.writes[-1].poison_record().error.type == kind


def test_sys_exit_in_an_async_job_on_another_threads_loop_leaves_the_loop_running():
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    try:
        ex, client = executor()
        result = in_thread(lambda: ex.execute(body("async_exits"), MessageInfo(QUEUE), loop=loop))
        assert result.outcome is Outcome.DEAD_LETTERED and isinstance(result.error, SystemExit)
        assert client.writes[-1].poison_record().error.type == "SystemExit"
        assert loop_thread.is_alive() and loop.is_running()
        # the loop still runs the next job
        assert in_thread(lambda: ex.execute(body("fine"), MessageInfo(QUEUE), loop=loop)).outcome is Outcome.SUCCEEDED
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(5)


@pytest.mark.parametrize("job", ["exits", "async_exits", "interrupted"])
def test_on_the_functions_path_a_base_exception_does_not_escape_into_the_hosts_loop(job):
    ex, client = executor()

    async def host():
        # the host awaits the handler in a task on its loop; SystemExit escaping would stop the loop
        args = (1,) if job == "exits" else ()
        return await asyncio.create_task(ex.execute_async(body(job, *args), MessageInfo(QUEUE)))

    result = asyncio.run(host())
    assert result.outcome in (Outcome.RETRY_SCHEDULED, Outcome.DEAD_LETTERED) and result.ran
    assert isinstance(result.error, BaseException) and not isinstance(result.error, Exception)


def test_keyboard_interrupt_at_the_console_still_stops_the_program():
    ex, _ = executor()
    assert threading.current_thread() is threading.main_thread()
    with pytest.raises(KeyboardInterrupt):
        ex.execute(body("interrupted"), MessageInfo(QUEUE))
