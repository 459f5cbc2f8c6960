"""Shared fixtures: one Azurite per test session (the azjobs plugin's ``azurite``), a unique queue per test."""

from __future__ import annotations

import base64
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Django 6 (tests/django) needs Python 3.12+: those tests run in the 3.13 phase of scripts/test
# (devtools/functions_py313.sh), never skipped there.
collect_ignore = ["django"] if sys.version_info < (3, 12) else []
# A project of its own (tests/integration/test_example_project.py installs it in a fresh venv and runs its pytest).
collect_ignore.append("example_project")


# The session's Azurite is the azjobs pytest plugin's ``azurite`` fixture (azjobs/testing/pytest_plugin.py,
# loaded through the pytest11 entry point of the editable install): its connection string, with the ports.
# pyproject.toml's [tool.pytest.ini_options] makes it fail, never skip, when Azurite cannot start, and adds
# a second storage account, for tests that must tell two accounts apart (a named connection such as
# JobsStorage beside AzureWebJobsStorage).
SECOND_ACCOUNT = "azjobssecond"
SECOND_KEY = base64.b64encode(b"azjobs second test account key, not a secret").decode("ascii")


@pytest.fixture(scope="session")
def connection_string(azurite) -> str:
    return azurite.connection_string


@pytest.fixture(scope="session")
def second_connection_string(azurite) -> str:
    """The connection string of another account (``SECOND_ACCOUNT``) on the same Azurite."""
    return azurite.connection_string_for(SECOND_ACCOUNT)


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


@pytest.fixture
def sent_messages(monkeypatch):
    """What storage answered to each ``QueueClient.send_message`` in this test (id, pop receipt, times).

    With a message's pop receipt a test can make it visible at once (``stored_message``) and so
    read what storage keeps of a message hidden for days.
    """
    from azure.storage.queue import QueueClient

    sent = []
    send = QueueClient.send_message

    def recording_send(self, *args, **kwargs):
        message = send(self, *args, **kwargs)
        sent.append(message)
        return message

    monkeypatch.setattr(QueueClient, "send_message", recording_send)
    return sent


def stored_message(queue_client, sent):
    """The message ``sent`` (a ``send_message`` answer) as storage holds it, expiry included.

    Makes it visible now with the pop receipt its send returned, then peeks it.
    """
    queue_client.update_message(sent.id, sent.pop_receipt, visibility_timeout=0)
    for message in queue_client.peek_messages(max_messages=32):
        if message.id == sent.id:
            return message
    raise AssertionError(f"message {sent.id} is not on queue {queue_client.queue_name}")
