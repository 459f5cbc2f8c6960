"""Around one task run (the job callable the core calls): database connections and signal receivers."""

from __future__ import annotations

import logging
import uuid

import pytest

import azjobs
from azjobs.model.context import JobContext, running
from azjobs.model.envelope import format_time, utcnow
from azjobs.model.registry import registry


def run_task(site, path: str, *args):
    """Call the registered job for ``path`` as the core does, inside a job context (attempt 1)."""
    context = JobContext(job=f"django:{path}", id=str(uuid.uuid4()), attempt=1, queue=site.default,
                         enqueued_at=format_time(utcnow()),
                         options={"django": {"backend": "default", "queue": "default"}})
    with running(context):
        return registry.get(context.job).run(args, {})


def test_database_connections_are_closed_after_each_task(site):
    from django.db import connection
    from django.db.backends.signals import connection_created

    created = []

    def count(sender, connection, **kwargs):
        created.append(connection.alias)

    connection_created.connect(count)
    try:
        assert run_task(site, "shop.tasks.count_orders", "conn-a") == 1
        assert connection.connection is None  # closed when the task ended (CONN_MAX_AGE = 0)
        assert run_task(site, "shop.tasks.count_orders", "conn-b") == 1
        assert connection.connection is None
    finally:
        connection_created.disconnect(count)
    assert created == ["default", "default"]


def test_a_raising_task_finished_receiver_is_logged_and_the_task_still_succeeds(site, caplog):
    from django.tasks.signals import task_finished

    def broken(sender, task_result, **kwargs):
        raise RuntimeError("receiver bug")

    task_finished.connect(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="azjobs.django"):
            assert run_task(site, "shop.tasks.add", 20, 22) == 42
    finally:
        task_finished.disconnect(broken)
    [line] = [r for r in caplog.records if getattr(r, "action", None) == "django_signal_failed"]
    assert "receiver bug" in line.getMessage()


def test_a_raising_task_started_receiver_fails_the_attempt_before_the_task_runs(site):
    from django.tasks.signals import task_started

    def refuse(sender, task_result, **kwargs):
        raise PermissionError("not now")

    task_started.connect(refuse)
    try:
        with pytest.raises(PermissionError):
            run_task(site, "shop.tasks.count_orders", "never-created")
    finally:
        task_started.disconnect(refuse)
    from shop.models import Order

    assert not Order.objects.filter(name="never-created").exists()


def test_a_nan_return_value_fails_the_attempt_without_a_retry(site):
    from azjobs.contrib.django import ReturnValueError

    assert run_task(site, "shop.tasks.average", [1, 2]) == 1.5
    with pytest.raises(ReturnValueError, match="shop.tasks.average returned a value JSON cannot carry") as raised:
        run_task(site, "shop.tasks.average", [])
    assert isinstance(raised.value, azjobs.Fail) and isinstance(raised.value, TypeError)
    [finished] = [s for s in site.signals() if s["signal"] == "task_finished" and s["task"] == "shop.tasks.average"
                  and s["status"] != "SUCCESSFUL"]
    assert finished["status"] == "FAILED"  # READY would mean a retry is coming
    assert finished["errors"] == ["azjobs.contrib.django.execution.ReturnValueError"]
