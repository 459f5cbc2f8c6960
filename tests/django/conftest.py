"""The Django test project (tests/django/site) set up once per session, with its own queues per test.

Django 6 needs Python 3.12+; tests/conftest.py keeps this directory out of the 3.11 run and
devtools/functions_py313.sh runs it on 3.13.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

SITE = Path(__file__).resolve().parent / "site"
if str(SITE) not in sys.path:
    sys.path.insert(0, str(SITE))

os.environ.setdefault("AZURE_FUNCTIONS_ENVIRONMENT", "Development")
os.environ["DJANGO_SETTINGS_MODULE"] = "djsite.settings"
_DB = Path(os.environ.setdefault("DJSITE_DB", str(Path(__import__("tempfile").mkdtemp()) / "djsite.sqlite3")))



@pytest.fixture(scope="package", autouse=True)
def django_project():
    """Django set up for these tests; afterwards the registry forgets the project's tasks and queues, so
    tests run after these in the same session see azjobs' registry as it was."""
    import django

    from azjobs.model.registry import registry

    jobs, queues, closed = set(registry._jobs), set(registry._extra_queues), dict(registry._closed)
    django.setup()
    yield
    for name in set(registry._jobs) - jobs:
        registry.unregister(name)
    registry._extra_queues.intersection_update(queues)
    registry._closed.clear()
    registry._closed.update(closed)
    from azjobs.contrib.django.discovery import _forget_all

    _forget_all()


@pytest.fixture(scope="package")
def database(django_project):
    """The project's SQLite database, with its tables (shared by in-process tests and workers)."""
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    return _DB


@pytest.fixture
def site(azurite, monkeypatch, tmp_path, database):
    """This test's queues: a unique prefix for TASKS (in-process) and DJSITE_QUEUE_PREFIX (workers).

    Yields a namespace with the Azure queue names, the default backend and the signal log.
    """
    from django.conf import settings
    from django.tasks import task_backends
    from django.test import override_settings

    from azjobs.contrib.django import discover_tasks

    prefix = f"dj{uuid.uuid4().hex[:10]}-"
    monkeypatch.setenv("DJSITE_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("AZJOBS_TEST_DIR", str(tmp_path))
    signal_log = tmp_path / "signals.jsonl"
    monkeypatch.setenv("DJSITE_SIGNAL_LOG", str(signal_log))
    tasks = {alias: {**params, "OPTIONS": {**params.get("OPTIONS", {}), "queue_prefix": prefix}}
             for alias, params in settings.TASKS.items()}
    with override_settings(TASKS=tasks):
        discover_tasks()  # adds this test's queues to the registry (what the worker and blueprint serve)
        backend = task_backends["default"]
        yield Site(prefix=prefix, backend=backend, signal_log=signal_log)
        backend.close()


class Site:
    def __init__(self, prefix: str, backend, signal_log: Path) -> None:
        self.prefix = prefix
        self.backend = backend
        self.signal_log = signal_log
        self.default = f"{prefix}default"
        self.emails = f"{prefix}emails"

    def signals(self) -> list[dict]:
        import json

        if not self.signal_log.exists():
            return []
        return [json.loads(line) for line in self.signal_log.read_text(encoding="utf-8").splitlines()]

    def queue(self, name: str):
        return self.backend.client.queue(name)

    def poison(self, name: str):
        return self.backend.client.queue(f"{name}-poison")
