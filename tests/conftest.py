"""Shared fixtures: one Azurite per test session, a unique queue per test."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def azurite():
    """Azurite on free ports for the whole session; a failure on CI if it cannot start."""
    from devtools.azurite import Azurite

    try:
        server = Azurite().start()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Azurite is required on CI: {exc}")
        pytest.skip(f"Azurite unavailable: {exc}")
    os.environ["AzureWebJobsStorage"] = server.connection_string
    yield server
    server.stop()


@pytest.fixture(scope="session")
def connection_string(azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def client(connection_string):
    """A Client on the session's Azurite, also installed as the process default."""
    import azjobs

    client = azjobs.configure(connection_string)
    yield client
    client.close()


@pytest.fixture
def queue_name() -> str:
    """A unique, valid queue name for one test."""
    return unique_queue()


def unique_queue(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


@pytest.fixture
def raw_queue(connection_string):
    """A factory of plain SDK QueueClients (no encode policy), for reading what azjobs wrote."""
    from azure.storage.queue import QueueClient

    made = []

    def make(name: str) -> QueueClient:
        q = QueueClient.from_connection_string(connection_string, name)
        made.append(q)
        return q

    yield make
    for q in made:
        try:
            q.delete_queue()
        except Exception:
            pass
