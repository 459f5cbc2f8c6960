"""Enqueue against Azurite: the raw messages are base64 JSON envelopes naming the job."""

import asyncio
import base64
import json
import time
from datetime import datetime, timedelta, timezone

import pytest

import azjobs
from azjobs.storage.client import Client
from azjobs.errors import EnqueueError, QueueNotFoundError
from azjobs.model.envelope import parse_time
from tests.conftest import stored_message

# How storage reports the expiry of a message sent with TTL -1 (never expires).
NEVER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


@azjobs.job(queue="enqueue-tests", name="tests.enqueue.greet")
def greet(name, punctuation="!"):
    return f"hi {name}{punctuation}"


class Shout(azjobs.Job):
    queue = "enqueue-tests"
    name = "tests.enqueue.Shout"

    def perform(self, text):
        return text.upper()


def read_all(q, n=32):
    """Receive up to n visible messages and decode their envelopes (without deleting)."""
    out = []
    for m in q.receive_messages(messages_per_page=32, max_messages=n, visibility_timeout=30):
        out.append((m, json.loads(base64.b64decode(m.content))))
    return out


def test_function_and_class_jobs_land_as_base64_json(client, queue_name, raw_queue):
    q = raw_queue(queue_name)
    first = greet.options(queue=queue_name).enqueue("ada", punctuation="?")
    second = Shout.options(queue=queue_name).enqueue("hey")
    messages = {data["id"]: data for _, data in read_all(q)}
    assert set(messages) == {first, second}
    assert messages[first]["job"] == "tests.enqueue.greet"
    assert messages[first]["args"] == ["ada"] and messages[first]["kwargs"] == {"punctuation": "?"}
    assert messages[second]["job"] == "tests.enqueue.Shout" and messages[second]["args"] == ["hey"]
    assert all(m["azjobs"] == 1 and m["attempt"] == 1 and m["queue"] == queue_name for m in messages.values())


def test_queue_is_created_on_first_use(client, queue_name, connection_string):
    from azure.storage.queue import QueueServiceClient

    greet.options(queue=queue_name).enqueue("x")
    names = [q.name for q in QueueServiceClient.from_connection_string(connection_string).list_queues()]
    assert queue_name in names
    QueueServiceClient.from_connection_string(connection_string).delete_queue(queue_name)


def test_missing_queue_is_a_clear_error_when_creation_is_off(connection_string, queue_name):
    strict = Client(connection_string, create_queues=False)
    with pytest.raises(QueueNotFoundError, match=f"{queue_name}.*azjobs --create"):
        greet.options(queue=queue_name, client=strict).enqueue("x")


def test_enqueue_in_hides_the_message_until_due(client, queue_name, raw_queue):
    q = raw_queue(queue_name)
    greet.options(queue=queue_name).enqueue_in(2, "later")
    greet.options(queue=queue_name).enqueue("now")
    visible = [d["args"][0] for _, d in read_all(q)]
    assert visible == ["now"]
    time.sleep(3.0)
    assert [d["args"][0] for _, d in read_all(q)] == ["later"]


def test_enqueue_at_and_timedelta(client, queue_name, raw_queue):
    q = raw_queue(queue_name)
    greet.options(queue=queue_name, at=datetime.now(timezone.utc) + timedelta(hours=1)).enqueue("at")
    greet.options(queue=queue_name, delay=timedelta(minutes=10)).enqueue("in")
    assert read_all(q) == []
    props = q.get_queue_properties()
    assert props.approximate_message_count == 2


def test_long_delay_hops_with_due_time_and_no_expiry(client, queue_name, raw_queue, sent_messages):
    q = raw_queue(queue_name)
    before = datetime.now(timezone.utc)
    job_id = greet.options(queue=queue_name).enqueue_in(timedelta(days=30), "much later")
    after = datetime.now(timezone.utc)
    assert read_all(q) == []
    assert q.get_queue_properties().approximate_message_count == 1
    # Storage's answer to the send: hidden for one full hop (the 7-day visibility maximum).
    [sent] = sent_messages
    assert sent.next_visible_on - sent.inserted_on == timedelta(days=7)
    # The message as Azurite stores it: no expiry (TTL -1 reads back as 9999-12-31) ...
    stored = stored_message(q, sent)
    assert stored.expires_on == NEVER
    # ... carrying the job and its due time, 30 days from now (rounded up to the millisecond).
    data = json.loads(base64.b64decode(stored.content))
    assert data["id"] == job_id and data["args"] == ["much later"]
    due = parse_time(data["due_at"])
    assert before + timedelta(days=30) <= due <= after + timedelta(days=30, milliseconds=1)


def test_enqueue_many_sends_all_and_reports_failures(client, queue_name, raw_queue):
    q = raw_queue(queue_name)
    result = greet.options(queue=queue_name).enqueue_many([(f"n{i}",) for i in range(100)] + [(object(),)])
    assert len(result.ids) == 100
    assert [i for i, _ in result.failures] == [100]
    seen = set()
    while True:
        batch = read_all(q)
        if not batch:
            break
        for message, data in batch:
            seen.add(data["id"])
            q.delete_message(message)
    assert seen == set(result.ids)


def test_enqueue_many_reports_storage_failures_per_item(connection_string, queue_name):
    strict = Client(connection_string, create_queues=False)
    result = greet.options(queue=queue_name, client=strict).enqueue_many([("a",), ("b",)])
    assert len(result.failures) == 2
    assert all(isinstance(e, QueueNotFoundError) for _, e in result.failures)


def test_async_enqueue(client, queue_name, raw_queue):
    from azjobs.storage.aio import aclose

    q = raw_queue(queue_name)

    async def main():
        ids = [await greet.options(queue=queue_name).enqueue_async(f"a{i}") for i in range(3)]
        ids.append(await Shout.options(queue=queue_name).enqueue_async("b"))
        await aclose()
        return ids

    ids = asyncio.run(main())
    assert {d["id"] for _, d in read_all(q)} == set(ids)


def test_async_enqueue_default_client(client, queue_name, raw_queue):
    from azjobs.storage.aio import aclose

    q = raw_queue(queue_name)
    greet.job.queue  # noqa: B018
    bound = greet.options(queue=queue_name)

    async def main():
        job_id = await bound.enqueue_async("x")
        await aclose()
        return job_id

    job_id = asyncio.run(main())
    assert [d["id"] for _, d in read_all(q)] == [job_id]


def test_unreachable_storage_is_a_clear_error_without_secrets(queue_name):
    from azjobs.storage.connection import AZURITE_KEY, azurite_connection_string
    from devtools.azurite import free_port

    port = free_port()
    dead = Client(azurite_connection_string(queue_port=port))
    dead.service()._config.retry_policy.total_retries = 0
    started = time.monotonic()
    with pytest.raises(EnqueueError) as info:
        greet.options(queue=queue_name, client=dead).enqueue("x")
    assert "cannot reach" in str(info.value)
    assert AZURITE_KEY not in str(info.value)
    assert time.monotonic() - started < 30


def test_message_encoding_none(connection_string, queue_name, raw_queue):
    plain = Client(connection_string, message_encoding="none")
    q = raw_queue(queue_name)
    job_id = greet.options(queue=queue_name, client=plain).enqueue("plain")
    (message,) = list(q.receive_messages(max_messages=1))
    assert json.loads(message.content)["id"] == job_id
