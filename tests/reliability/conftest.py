"""Fixtures for the reliability suite: a ledger directory, worker processes, a fault proxy."""

from __future__ import annotations

import os
import subprocess

import pytest

from devtools.proxy import FaultProxy

# Workers started by these tests run in folders without host.json: like `func start`, they are a
# Development environment, where the host caps idle polling at 2 s instead of 1 min.
os.environ.setdefault("AZURE_FUNCTIONS_ENVIRONMENT", "Development")


@pytest.fixture
def test_dir(tmp_path):
    """Where worker logs and the job ledger of one test go."""
    return tmp_path


@pytest.fixture
def processes():
    """Worker processes started by a test; any still running are killed at teardown."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture
def proxy(azurite):
    """A fault proxy in front of the session Azurite's queue port."""
    server = FaultProxy(azurite.queue_port).start()
    yield server
    server.stop()


@pytest.fixture
def proxied(proxy, connection_string) -> str:
    """A connection string whose queue endpoint goes through ``proxy``."""
    return proxy.connection_string(connection_string)
