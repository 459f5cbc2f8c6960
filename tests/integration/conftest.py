"""Fixtures shared by the worker tests."""

import os
import uuid

import pytest

from tests.conftest import unique_queue

# Workers started by these tests run in folders without host.json: like `func start`, they are a
# Development environment, where the host caps idle polling at 2 s instead of 1 min.
os.environ.setdefault("AZURE_FUNCTIONS_ENVIRONMENT", "Development")


@pytest.fixture
def test_dir(tmp_path, monkeypatch):
    """A folder for this test's job side effects, announced to worker jobs via AZJOBS_TEST_DIR."""
    monkeypatch.setenv("AZJOBS_TEST_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def processes():
    """Worker subprocesses a test starts; killed at teardown if still running."""
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture
def flows(client, test_dir, monkeypatch, raw_queue):
    """(step queue, workflows queue) for one test, with its own history table."""
    table = f"wf{uuid.uuid4().hex[:16]}"
    monkeypatch.setenv("AZJOBS_WORKFLOWS_TABLE", table)
    steps, queue = unique_queue("wfs"), unique_queue("wfq")
    for name in (steps, queue, f"{queue}-poison", f"{steps}-poison"):
        raw_queue(name)  # deleted at teardown
    client.ensure_queue(steps)
    yield steps, queue
    try:
        client.connection.table_service().delete_table(table)
    except Exception:
        pass
