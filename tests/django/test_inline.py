"""The backend in inline mode (OPTIONS "inline": True), as a project's test settings use it: each task runs
inside ``enqueue()`` through the execution core, with results, retries and poison records in memory.

Every test here runs with outbound connections refused: inline mode reaches no storage.
"""

from __future__ import annotations

import asyncio
import socket

import pytest


@pytest.fixture
def inline_backend(database, monkeypatch):
    from django.conf import settings
    from django.tasks import task_backends
    from django.test import override_settings

    from azjobs.contrib.django import discover_tasks

    def refuse(self, address, *args, **kwargs):
        raise AssertionError(f"inline mode tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    tasks = {alias: {**params, "OPTIONS": {**params.get("OPTIONS", {}), "inline": True}}
             for alias, params in settings.TASKS.items()}
    with override_settings(TASKS=tasks):
        discover_tasks()
        backend = task_backends["default"]
        yield backend
        backend.close()


def test_an_enqueued_task_has_run_when_enqueue_returns_and_its_result_says_so(inline_backend):
    from django.tasks.base import TaskResultStatus
    from shop.tasks import add

    result = add.enqueue(2, 3)

    assert (result.status, result.return_value, result.attempts) == (TaskResultStatus.SUCCESSFUL, 5, 1)
    again = add.get_result(result.id)
    assert (again.status, again.return_value, again.args) == (TaskResultStatus.SUCCESSFUL, 5, [2, 3])


def test_a_failing_task_is_retried_inline_by_the_backends_policy(inline_backend):
    from django.tasks.base import TaskResultStatus
    from shop.tasks import always_fails, flaky

    result = flaky.enqueue("k-1")  # fails on attempt 1, the policy retries once
    assert (result.status, result.attempts) == (TaskResultStatus.SUCCESSFUL, 2)
    assert result.return_value["attempt"] == 2
    assert [error.exception_class_path for error in result.errors] == ["builtins.RuntimeError"]

    failed = always_fails.enqueue("no way")
    assert (failed.status, failed.attempts) == (TaskResultStatus.FAILED, 2)
    assert "no way" in failed.errors[-1].traceback
    queue = inline_backend.azure_queue("default")
    assert [record.envelope.id for record in inline_backend.client.poisoned(queue)] == [failed.id]


def test_a_non_json_argument_fails_in_the_caller_as_without_inline(inline_backend):
    from shop.tasks import add

    with pytest.raises(TypeError):
        add.enqueue(object(), 1)


def test_aenqueue_runs_the_task_too(inline_backend):
    from django.tasks.base import TaskResultStatus
    from shop.tasks import async_add

    result = asyncio.run(async_add.aenqueue(20, 22))
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 42)


def test_inline_is_a_known_option_and_needs_no_connection(inline_backend):
    assert inline_backend.check() == []
