"""Registry namespaces and extra queues (what the Django integration builds on), through the real core."""

from __future__ import annotations

import azjobs
from azjobs.execution.executor import Executor
from azjobs.hosting import executor as hosted_executor
from azjobs.model.outcome import MessageInfo, Outcome
from azjobs.model.envelope import Envelope
from azjobs.model.registry import Registry
from azjobs.testing import RecordingClient


def _executor(registry: Registry) -> tuple[Executor, RecordingClient]:
    client = RecordingClient()
    return hosted_executor(registry=registry, client=client, settings=client.settings), client


def test_an_unknown_name_in_a_closed_namespace_is_dead_lettered_at_once():
    registry = Registry()
    registry.close_namespace("django:", "only discovered tasks run")
    executor, client = _executor(registry)
    result = executor.execute(Envelope.build("django:os.system", ("rm -rf /",)).encode(), MessageInfo(queue="q"))
    assert result.outcome is Outcome.DEAD_LETTERED and not result.ran
    [write] = client.writes
    record = write.poison_record()
    assert write.queue == "q-poison" and record.error.reason == "unknown_job"
    assert "only discovered tasks run" in record.error.message
    assert isinstance(result.error, azjobs.UnknownJobError)


def test_an_unknown_name_outside_a_closed_namespace_is_still_retried_first():
    registry = Registry()
    registry.close_namespace("django:", "only discovered tasks run")
    executor, client = _executor(registry)
    result = executor.execute(Envelope.build("myapp.jobs.new_job").encode(), MessageInfo(queue="q"))
    assert result.outcome is Outcome.RETRY_SCHEDULED  # a rolling deploy may not have the job yet
    assert [write.queue for write in client.writes] == ["q"]


def test_added_queues_are_served_even_without_a_job_declaring_them():
    registry = Registry()
    azjobs.job(queue="emails", registry=registry)(_noop)
    registry.add_queue("reports")
    assert registry.queues() == ["emails", "reports"]


def _noop() -> None:
    pass
