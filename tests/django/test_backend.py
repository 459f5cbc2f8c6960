"""AzureQueueBackend in the Django process: what enqueue sends, what Django's rules refuse, check()
messages, enqueue-on-commit (against Azurite, with the project's SQLite database)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest
from django.db import transaction
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTask
from django.test import override_settings

from azjobs.contrib.django import AzureQueueBackend
from tests.django.support import envelopes


def test_enqueue_sends_one_envelope_named_after_the_task_and_returns_a_ready_result(site):
    from shop import tasks

    result = tasks.add.enqueue(2, b=3)
    [envelope] = envelopes(site.queue(site.default))
    assert envelope.job == "django:shop.tasks.add" and envelope.id == result.id
    assert envelope.args == (2,) and dict(envelope.kwargs) == {"b": 3} and envelope.queue == site.default
    assert envelope.options["django"] == {"backend": "default", "queue": "default"}
    assert envelope.options["track"] is True  # results on: the worker keeps the record
    assert result.status == "READY" and result.backend == "default" and result.task.func is tasks.add.func
    assert result.enqueued_at.tzinfo is not None and result.worker_ids == [] and result.attempts == 0
    assert site.backend.get_result(result.id).status == "READY"
    assert [(s["signal"], s["id"]) for s in site.signals()] == [("task_enqueued", result.id)]


def test_queue_names_map_to_azure_queues(site):
    from shop import tasks

    receipt = tasks.send_receipt.enqueue(1)
    moved = tasks.send_receipt.using(queue_name="default").enqueue(2)
    assert [e.id for e in envelopes(site.queue(site.emails))] == [receipt.id]
    assert [e.id for e in envelopes(site.queue(site.default))] == [moved.id]
    assert site.backend.azure_queue("emails") == site.emails


def test_aenqueue_sends_on_the_async_client_without_the_sync_path(site, monkeypatch):
    from shop import tasks

    def no_sync(*args, **kwargs):
        raise AssertionError("aenqueue must not go through the sync enqueue")

    monkeypatch.setattr(site.backend, "enqueue", no_sync)
    monkeypatch.setattr(site.backend.client, "send", no_sync)
    result = asyncio.run(tasks.async_add.aenqueue(1, 2))
    [envelope] = envelopes(site.queue(site.default))
    assert envelope.id == result.id and envelope.job == "django:shop.tasks.async_add"
    assert [s["signal"] for s in site.signals()] == ["task_enqueued"]


def test_invalid_task_is_raised_where_django_says(site):
    from shop import tasks

    backend = site.backend
    assert backend.supports_priority is False and backend.supports_defer and backend.supports_async_task
    assert backend.supports_get_result
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=10)
    with pytest.raises(InvalidTask, match="Queue 'slow' is not valid"):
        tasks.add.using(queue_name="slow")
    with pytest.raises(InvalidTask, match="aware"):
        tasks.add.using(run_after=datetime(2030, 1, 1))
    from django.tasks import task

    with pytest.raises(InvalidTask, match="module level"):
        task(lambda: None)
    assert envelopes(site.queue(site.default)) == []


def test_a_queue_mapped_to_an_invalid_azure_name_is_an_invalid_task_and_a_check_error(site):
    from shop import tasks

    params = {"BACKEND": "azjobs.contrib.django.AzureQueueBackend", "QUEUES": ["default", "emails"],
              "OPTIONS": {"queue_names": {"emails": "Mail_Queue"}, "queue_prefix": site.prefix}}
    with override_settings(TASKS={"default": params}):
        with pytest.raises(InvalidTask, match="invalid Azure queue name"):
            tasks.send_receipt.using(queue_name="emails")
        messages = task_backends["default"].check()
        assert [m.id for m in messages if m.level >= 40] == ["azjobs.E001"]
        assert "Mail_Queue" in messages[0].msg


def test_run_after_in_the_past_or_soon_is_a_visibility_delay(site):
    from shop import tasks

    soon = tasks.add.using(run_after=datetime.now(timezone.utc) + timedelta(seconds=30)).enqueue(1, 1)
    assert envelopes(site.queue(site.default)) == []  # invisible for 30 s
    past = tasks.add.using(run_after=datetime.now(timezone.utc) - timedelta(days=1)).enqueue(1, 2)
    assert [e.id for e in envelopes(site.queue(site.default))] == [past.id]
    assert soon.id != past.id


def test_check_reports_bad_options_and_a_missing_named_connection(site, monkeypatch):
    monkeypatch.delenv("JobsStorage", raising=False)
    params = {"BACKEND": "azjobs.contrib.django.AzureQueueBackend",
              "OPTIONS": {"connection": "JobsStorage", "max_retry": 3, "max_retries": -1}}
    backend = AzureQueueBackend("other", params)
    ids = sorted(m.id for m in backend.check())
    assert ids == ["azjobs.E002", "azjobs.E003", "azjobs.E003"]
    assert any("'max_retry'" in m.msg for m in backend.check())


def test_check_warns_when_the_result_store_does_not_answer(site, connection_string):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    broken = connection_string.replace(connection_string.split("TableEndpoint=")[1].split(";")[0],
                                       f"http://127.0.0.1:{port}/devstoreaccount1")
    unreachable = AzureQueueBackend("x", {"OPTIONS": {"connection_string": broken}})
    assert [m.id for m in unreachable.check()] == ["azjobs.W002"]
    assert AzureQueueBackend("y", {"OPTIONS": {"connection_string": connection_string}}).check() == []
    assert AzureQueueBackend("z", {"OPTIONS": {"connection_string": broken, "results": False}}).check() == []


def test_results_off_means_no_get_result_and_untracked_messages(site):
    from shop import tasks

    params = {"BACKEND": "azjobs.contrib.django.AzureQueueBackend", "QUEUES": ["default", "emails"],
              "OPTIONS": {"queue_prefix": site.prefix, "results": False}}
    with override_settings(TASKS={"default": params}):
        backend = task_backends["default"]
        assert backend.supports_get_result is False
        result = tasks.add.enqueue(1, 2)
        [envelope] = envelopes(backend.client.queue(site.default))
        assert "track" not in envelope.options
        with pytest.raises(NotImplementedError):
            backend.get_result(result.id)
        backend.close()


def test_enqueue_on_commit_sends_only_after_the_transaction_commits(site):
    from shop import tasks
    from shop.models import Order

    with transaction.atomic():
        order = Order.objects.create(name="kettle")
        transaction.on_commit(partial(tasks.send_receipt.enqueue, order.pk))
        assert envelopes(site.queue(site.emails)) == []  # not before the commit
    [envelope] = envelopes(site.queue(site.emails))
    assert envelope.args == (order.pk,)

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            doomed = Order.objects.create(name="never")
            transaction.on_commit(partial(tasks.send_receipt.enqueue, doomed.pk))
            raise RuntimeError("roll back")
    assert [e.id for e in envelopes(site.queue(site.emails))] == [envelope.id]  # a rollback sends nothing
    assert not Order.objects.filter(name="never").exists()


def test_a_non_json_argument_fails_in_the_caller_and_sends_nothing(site):
    from shop import tasks

    with pytest.raises(TypeError, match="kwargs\\['when'\\]"):
        tasks.add.enqueue(1, b=2, when=datetime.now(timezone.utc))
    with pytest.raises(TypeError):
        tasks.add.enqueue(object(), 2)
    assert envelopes(site.queue(site.default)) == [] and site.signals() == []


def test_a_naive_run_after_without_use_tz_is_in_the_projects_time_zone(site):
    from shop import tasks

    with override_settings(USE_TZ=False, TIME_ZONE="Asia/Tokyo"):  # UTC+9, no daylight saving
        local_now = datetime.now(timezone(timedelta(hours=9))).replace(tzinfo=None)
        # 30 minutes ago in Tokyo; read as UTC it would be 8.5 hours ahead
        result = tasks.add.using(run_after=local_now - timedelta(minutes=30)).enqueue(3, 4)
        assert result.enqueued_at.tzinfo is None  # Django's naive times, as USE_TZ = False wants
        task_backends["default"].close()
    assert [e.id for e in envelopes(site.queue(site.default))] == [result.id]


def test_check_warns_when_azure_web_jobs_storage_is_not_set(site, monkeypatch, tmp_path):
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.chdir(tmp_path)  # no local.settings.json here
    messages = AzureQueueBackend("local", {"OPTIONS": {"results": False}}).check()
    assert [m.id for m in messages] == ["azjobs.W001"]
    assert "Azurite" in messages[0].msg


@pytest.mark.parametrize("bad", ["a/b", "a#b", "a?b", "a\\b", "a\nb", "x" * 513])
def test_get_result_of_an_id_no_key_can_hold_does_not_exist_and_the_next_lookup_still_works(site, bad):
    from django.tasks.exceptions import TaskResultDoesNotExist

    from shop import tasks

    result = tasks.add.enqueue(1, 2)
    with pytest.raises(TaskResultDoesNotExist, match="no result can have the id"):
        site.backend.get_result(bad)  # an id from a URL: never sent to the table
    assert site.backend.get_result(result.id).status == "READY"  # no outage pause for the next request


def test_a_cancelled_task_s_result_is_failed_the_nearest_django_status(site):
    import azjobs
    from shop import tasks

    result = tasks.add.enqueue(2, b=3)
    record = azjobs.cancel(result.id, client=site.backend.client)
    assert record.status is azjobs.JobStatus.CANCELLED
    cancelled = site.backend.get_result(result.id)
    assert cancelled.status == "FAILED" and cancelled.errors == []
    assert not hasattr(site.backend, "supports_cancel")  # Django 6 has no cancel API to declare
