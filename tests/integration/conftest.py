"""Fixtures shared by the worker tests."""

import os

import pytest

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
