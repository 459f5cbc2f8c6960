"""The workflow API: chain, group, fan-in, sleep, .s/.si, the JSON spec and the one start message."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import azjobs
from azjobs.errors import ArgumentError, ConfigurationError, EnvelopeError
from azjobs.model.envelope import decode_body
from azjobs.testing import RecordingClient
from azjobs.workflows.spec import parse_message, retry_options_for, workflows_queue

REG = azjobs.Registry()


@azjobs.job(queue="wf-fetch", registry=REG, name="wf.fetch", retry=azjobs.Fixed(2.5, max_retries=3))
def fetch(url: str) -> str:
    return url


@azjobs.job(queue="wf-parse", registry=REG, name="wf.parse", retry=azjobs.NoRetry())
def parse(text: str, strict: bool = False) -> int:
    return len(text)


@azjobs.job(queue="wf-parse", registry=REG, name="wf.total", retry=azjobs.Backoff(2, base=0.5))
def total(values: list) -> int:
    return sum(values)


def test_chain_spec_passes_each_result_on_unless_si():
    flow = azjobs.chain(fetch.s("http://x"), parse.s(strict=True), total.si([1, 2]))
    spec = flow.spec("wf-1")
    assert spec["id"] == "wf-1"
    steps = spec["root"]["chain"]
    assert [s["step"] for s in steps] == ["wf.fetch", "wf.parse", "wf.total"]
    assert steps[0]["args"] == ["http://x"] and steps[1]["kwargs"] == {"strict": True}
    assert [s["ignore_input"] for s in steps] == [False, False, True]
    assert [s["queue"] for s in steps] == ["wf-fetch", "wf-parse", "wf-parse"]
    json.dumps(spec)  # plain JSON


def test_group_then_step_is_a_fan_in():
    flow = azjobs.chain(azjobs.group(parse.s("a"), parse.s("bb")), total.s())
    root = flow.spec()["root"]
    assert [s["step"] for s in root["chain"][0]["group"]] == ["wf.parse", "wf.parse"]
    assert root["chain"][1]["step"] == "wf.total" and root["chain"][1]["args"] == []


def test_sleep_of_days_is_seconds_in_the_spec():
    root = azjobs.chain(fetch.s("u"), azjobs.sleep(timedelta(days=3)), parse.s()).spec()["root"]
    assert root["chain"][1] == {"sleep_s": 3 * 86400.0}
    with pytest.raises(ConfigurationError):
        azjobs.sleep(-1)


def test_step_retry_policy_becomes_retry_options():
    assert retry_options_for(fetch.job) == {"first_retry_ms": 2500, "attempts": 4}
    assert retry_options_for(parse.job) == {"first_retry_ms": 1000, "attempts": 1}
    assert retry_options_for(total.job) == {"first_retry_ms": 500, "attempts": 3}
    assert fetch.options(max_retries=0).s("u").to_node()["retry"] == {"first_retry_ms": 2500, "attempts": 1}


def test_arguments_are_checked_against_the_job_where_the_flow_is_built():
    with pytest.raises(ArgumentError):
        fetch.s(object())  # not JSON
    with pytest.raises(ArgumentError):
        azjobs.chain(fetch.s("u"), total.s([1])).spec()  # total gets fetch's result first
    with pytest.raises(ArgumentError):
        azjobs.chain(fetch.s()).spec()  # the first step gets no previous result
    azjobs.chain(fetch.s("u"), parse.si("explicit")).spec()


def test_a_steps_bad_arguments_error_names_the_step_as_workflow_status_does():
    with pytest.raises(ArgumentError) as raised:
        azjobs.chain(fetch.s("u"), parse.s(), total.s([1])).spec()
    assert str(raised.value) == ("workflow step 0.2, wf.total.s([1],) with the previous step's result first: "
                                 "arguments do not fit job wf.total: too many positional arguments")
    with pytest.raises(ArgumentError) as raised:
        azjobs.chain(fetch.s("u"), azjobs.group(parse.s(), parse.si())).spec()
    assert str(raised.value) == ("workflow step 0.1.1, wf.parse.si(): arguments do not fit job wf.parse: missing a "
                                 "required argument: 'text'")


def test_group_takes_steps_only():
    with pytest.raises(ConfigurationError):
        azjobs.group(azjobs.chain(fetch.s("u")))
    with pytest.raises(ConfigurationError):
        azjobs.chain()


def test_enqueue_sends_one_start_message_to_the_workflows_queue(monkeypatch):
    monkeypatch.delenv("AZJOBS_WORKFLOWS_QUEUE", raising=False)
    client = RecordingClient()
    handle = azjobs.chain(fetch.s("u"), parse.s()).enqueue(client=client)
    assert len(client.writes) == 1
    write = client.writes[0]
    assert write.queue == "azjobs-workflows" == workflows_queue()
    message = parse_message(decode_body(write.text, "base64"))
    assert message["kind"] == "start" and message["id"] == handle.id == message["spec"]["id"]
    assert message["spec"]["root"]["chain"][0]["step"] == "wf.fetch"


def test_the_workflows_queue_is_configurable(monkeypatch):
    client = RecordingClient()
    azjobs.chain(fetch.s("u")).enqueue(client=client, queue="my-flows")
    monkeypatch.setenv("AZJOBS_WORKFLOWS_QUEUE", "env-flows")
    azjobs.chain(fetch.s("u")).enqueue(client=client)
    assert [w.queue for w in client.writes] == ["my-flows", "env-flows"]


@pytest.mark.parametrize("body", ['{"azjobs": 1}', '{"azjobs_workflow": 2, "id": "x", "kind": "start"}',
                                  '{"azjobs_workflow": 1, "id": "x", "kind": "start", "spec": {"id": "x"}}',
                                  '{"azjobs_workflow": 1, "id": "x", "kind": "nope"}', "not json"])
def test_bad_workflow_messages_are_refused_with_a_typed_error(body):
    with pytest.raises(EnvelopeError):
        parse_message(body)


class Resize(azjobs.Job):
    queue = "wf-img"
    registry = REG
    name = "wf.resize"

    def perform(self, n: int) -> int:
        return n


def test_jobs_and_classes_have_s_and_si():
    assert Resize.s(1).to_node()["args"] == [1]
    assert Resize.si(1).to_node()["ignore_input"] is True
    assert Resize.job.s(2).to_node()["step"] == "wf.resize"


# -- workflow ids: they key the history table, so Table Storage's key rules apply -------------------------------

@pytest.mark.parametrize("bad", ["order/42", "a\\b", "a#b", "a?b", "tab\there", "nul\x00", "x" * 513,
                                 "😀" * 257, ""])
def test_an_id_no_workflow_can_have_is_refused_at_enqueue_and_nothing_is_sent(bad):
    client = RecordingClient()
    with pytest.raises(ConfigurationError) as refused:
        azjobs.chain(fetch.s("u")).enqueue(client=client, id=bad)
    assert "cannot be used" in str(refused.value) and client.writes == []


@pytest.mark.parametrize("good", ["order-42", "Order 42 é", "😀" * 256, "x" * 512])
def test_ids_table_storage_accepts_are_used_as_given(good):
    client = RecordingClient()
    handle = azjobs.chain(fetch.s("u")).enqueue(client=client, id=good)
    assert handle.id == good == parse_message(decode_body(client.writes[0].text, "base64"))["id"]


def test_a_start_message_with_an_id_no_workflow_can_have_is_refused_when_read():
    body = json.dumps({"azjobs_workflow": 1, "kind": "start", "id": "order/42",
                       "spec": {"id": "order/42", "root": {"sleep_s": 1}}})
    with pytest.raises(EnvelopeError) as refused:
        parse_message(body)
    assert refused.value.reason == "bad_id" and "'/'" in str(refused.value)


@pytest.mark.parametrize("bad", [None, "", 42, b"id"])
def test_a_handle_needs_a_non_empty_string_id(bad):
    with pytest.raises(ValueError):
        azjobs.WorkflowHandle(bad)


def test_looking_up_an_id_no_workflow_can_have_raises_not_found_without_asking_storage():
    handle = azjobs.WorkflowHandle("order/42", client=RecordingClient())
    with pytest.raises(azjobs.WorkflowNotFoundError) as missing:
        handle.status()
    assert "no workflow can have the id 'order/42'" in str(missing.value) and missing.value.why
    with pytest.raises(azjobs.WorkflowNotFoundError):
        handle.result(timeout=5)
    assert handle._store is None  # no table client was even made


class FailingHistory:
    def record_pending(self, *args):
        raise ConnectionError("the table cannot be reached")


def test_enqueue_sends_even_when_the_pending_row_cannot_be_written_and_its_handle_says_pending(caplog):
    client = RecordingClient()
    client.workflow_history = FailingHistory()
    handle = azjobs.chain(fetch.s("u")).enqueue(client=client)
    assert len(client.writes) == 1  # sent all the same
    assert any(r.__dict__.get("action") == "workflow_pending_unavailable" for r in caplog.records)
    handle._store = EmptyHistory()
    assert handle.status()["status"] == "Pending"  # the handle knows it sent the start message


class EmptyHistory:
    table = "azjobsworkflows"

    def load(self, workflow_id):
        from azjobs.workflows.history import History

        return History(workflow_id)
