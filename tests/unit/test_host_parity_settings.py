"""Host parity in configuration: functionTimeout, the Development polling cap, one source of truth,
per-call max_retries with custom policies (no storage)."""

from __future__ import annotations

from datetime import timedelta

import pytest

import azjobs
from azjobs.hosting import executor as hosted_executor
from azjobs.model.outcome import MessageInfo, Outcome
from azjobs.errors import ConfigurationError
from azjobs.model.envelope import Envelope
from azjobs.model.retry import RetryDecision
from azjobs.model.settings import DEFAULT_FUNCTION_TIMEOUT, QueueSettings
from azjobs.testing import RecordingClient
from azjobs.runtime.worker import Worker


@pytest.mark.parametrize("value, expected", [
    ("00:00:05", timedelta(seconds=5)), ("00:10:00", timedelta(minutes=10)), ("1.00:00:00", timedelta(days=1)),
    ("-1", None), (-1, None),
])
def test_function_timeout_is_read_from_the_top_of_host_json(value, expected):
    settings = QueueSettings.from_host_json({"version": "2.0", "functionTimeout": value})
    assert settings.function_timeout == expected


def test_function_timeout_defaults_to_the_hosts_thirty_minutes_and_rejects_nonsense():
    assert QueueSettings.from_host_json({}).function_timeout == DEFAULT_FUNCTION_TIMEOUT == timedelta(minutes=30)
    for bad in ("00:00:00", "soon", 30):
        with pytest.raises(ConfigurationError, match="functionTimeout"):
            QueueSettings.from_host_json({"functionTimeout": bad})


def test_the_two_second_polling_cap_applies_only_in_development_as_on_the_host():
    unset = QueueSettings()
    assert unset.for_environment({}).max_polling_interval == timedelta(minutes=1)
    assert unset.for_environment({"AZURE_FUNCTIONS_ENVIRONMENT": "Production"}).max_polling_interval == timedelta(minutes=1)
    assert unset.for_environment({"AZURE_FUNCTIONS_ENVIRONMENT": "Development"}).max_polling_interval == timedelta(seconds=2)
    explicit = QueueSettings.from_host_json({"extensions": {"queues": {"maxPollingInterval": "00:00:10"}}})
    assert explicit.for_environment({"AZURE_FUNCTIONS_ENVIRONMENT": "Development"}).max_polling_interval == \
        timedelta(seconds=10)


def test_a_worker_refuses_settings_that_differ_from_its_cores():
    client = RecordingClient()
    core = hosted_executor(client=client, settings=QueueSettings(max_dequeue_count=5))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="differs"):
        Worker(["q1q"], client=client, executor=core, settings=QueueSettings(max_dequeue_count=2))  # type: ignore[arg-type]
    worker = Worker(["q1q"], client=client, executor=core)  # type: ignore[arg-type]
    assert worker.settings is core.settings and worker.settlement.settings.max_dequeue_count == 5


def test_a_worker_applies_the_batch_rules_per_queue_with_c_as_the_overall_cap():
    client = RecordingClient(settings=QueueSettings.from_host_json(
        {"extensions": {"queues": {"batchSize": 16, "newBatchThreshold": 8}}}))
    default = Worker(["aaa", "bbb"], client=client)  # type: ignore[arg-type]
    assert default.inflight.limits["aaa"].most == default.inflight.limits["bbb"].most == 24
    assert default.concurrency == default.max_in_flight == 48  # each queue as its own host function
    capped = Worker(["aaa", "bbb"], client=client, concurrency=4)  # type: ignore[arg-type]
    assert capped.fetch == 4 and capped.max_in_flight == 8 and capped.concurrency == 4


def test_without_a_batch_size_in_host_json_the_worker_receives_the_services_maximum():
    unset = Worker(["aaa"], client=RecordingClient(settings=QueueSettings(new_batch_threshold=8)))  # type: ignore[arg-type]
    assert unset.fetch == 32 and unset.inflight.limits["aaa"].most == 40
    host = QueueSettings.from_host_json({"extensions": {"queues": {"batchSize": 16}}})
    assert host.batch_size_set and Worker(["aaa"], client=RecordingClient(settings=host)).fetch == 16  # type: ignore[arg-type]


class EveryTime:
    """A custom policy: retry every time after 1 s (not a built-in: max_retries cannot apply)."""

    def decide(self, error, attempt):
        return RetryDecision(1.0, "custom")


REG = azjobs.Registry()


@azjobs.job(queue="custom-policy", registry=REG, name="custom", retry=EveryTime())
def custom() -> None:
    raise RuntimeError("boom")


def test_per_call_max_retries_with_a_custom_policy_is_refused_at_enqueue():
    with pytest.raises(ConfigurationError, match="custom retry policy"):
        custom.options(max_retries=2)


def test_a_message_carrying_max_retries_for_a_custom_policy_follows_the_policy_not_poison():
    client = RecordingClient()
    core = hosted_executor(registry=REG, client=client, settings=client.settings)  # type: ignore[arg-type]
    body = Envelope.build("custom", (), options={"max_retries": 2}).encode()
    result = core.execute(body, MessageInfo("custom-policy"))
    assert result.outcome is Outcome.RETRY_SCHEDULED and result.retry_in_s == 1


def test_worker_processes_share_one_instances_batch_limits_at_defaults():
    client = RecordingClient(settings=QueueSettings(new_batch_threshold=8))
    one = Worker(["aaa"], client=client)  # type: ignore[arg-type]
    two = Worker(["aaa"], client=client, processes=2)  # type: ignore[arg-type]
    assert (one.fetch, one.inflight.limits["aaa"].most) == (32, 40)
    assert (two.fetch, two.inflight.limits["aaa"].most) == (16, 20)  # two of them lease what one instance would
    unset = RecordingClient(settings=QueueSettings())
    assert Worker(["aaa"], client=unset, processes=2).concurrency == \
        Worker(["aaa"], client=unset).concurrency // 2  # type: ignore[arg-type]
    # -c and -f are the operator's own numbers, per process: not split
    assert Worker(["aaa"], client=client, processes=2, concurrency=6).concurrency == 6  # type: ignore[arg-type]
    assert Worker(["aaa"], client=client, processes=2, fetch=32).fetch == 32  # type: ignore[arg-type]


def test_a_supervised_worker_learns_how_many_processes_share_the_instance():
    from azjobs.runtime.children import CHILD_ENV, SHARE_ENV, shared_by

    assert shared_by({}) == 1 and shared_by({SHARE_ENV: "4"}) == 1  # not a child: the whole instance
    assert shared_by({CHILD_ENV: "0", SHARE_ENV: "4"}) == 4
    assert shared_by({CHILD_ENV: "1", SHARE_ENV: "many"}) == 1
