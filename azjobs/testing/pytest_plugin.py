"""The azjobs pytest plugin, registered through the ``pytest11`` entry point when azjobs is installed.

Fixtures:

- ``azjobs_inline``: the test runs inside ``azjobs.testing.inline()``; the fixture's value is the
  block's session (``.runs``, ``.jobs``, ``.poisoned(queue)``, ``.run_due(at)``, ``.fire(name, at)``);
- ``azjobs_recording``: the test runs inside ``azjobs.testing.recording()`` (``.jobs``, ``.run_all()``);
- ``azurite`` (session): Azurite on free ports for the session, from ``./node_modules/.bin`` (of the
  rootdir or the current folder) or the ``PATH``; its value is the connection string (a ``str``,
  with ``.queue_port``, ``.blob_port``, ``.table_port``), also set as ``AzureWebJobsStorage`` for
  the session. Without Azurite the tests that use it are skipped, saying why; with the ini option
  ``azjobs_require_azurite = true`` they fail instead (for CI);
- ``azjobs_worker``: every enqueue of the test goes to that Azurite; calling the fixture's value,
  ``azjobs_worker("emails", ...)``, drains those queues with the real worker in this process and
  returns what ran (``azjobs.testing.Ran``: job, id, attempt, outcome, value, error).

Importing this module loads nothing else of azjobs: each fixture imports what it uses when a test
asks for it.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

REQUIRE_OPTION = "azjobs_require_azurite"
ACCOUNTS_OPTION = "azjobs_azurite_accounts"


def pytest_addoption(parser: Any) -> None:
    parser.addini(REQUIRE_OPTION, "fail (instead of skip) the tests that need Azurite when it is not installed",
                  type="bool", default=False)
    parser.addini(ACCOUNTS_OPTION, "storage accounts the azurite fixture serves beside devstoreaccount1, "
                  "one 'name:base64key' per line", type="linelist", default=[])


@pytest.fixture
def azjobs_inline() -> Iterator[Any]:
    """Every enqueue in the test runs its job at once, through the real core, with no storage."""
    from azjobs.testing.modes import inline

    with inline() as session:
        yield session


@pytest.fixture
def azjobs_recording() -> Iterator[Any]:
    """Every enqueue in the test is recorded, not run: ``.jobs``; ``.run_all()`` runs them."""
    from azjobs.testing.modes import recording

    with recording() as session:
        yield session


@pytest.fixture(scope="session")
def azurite(pytestconfig: Any) -> Iterator[str]:
    """Azurite for the session: its connection string (also ``AzureWebJobsStorage`` while the session lasts)."""
    from azjobs.testing.azurite import INSTALL_HINT, AzuriteServer, find_azurite

    require = pytestconfig.getini(REQUIRE_OPTION)
    binary = find_azurite([pytestconfig.rootpath])
    if binary is None:
        why = f"Azurite is not installed: {INSTALL_HINT}"
        if require:
            pytest.fail(f"{why} ({REQUIRE_OPTION} is set)", pytrace=False)
        pytest.skip(why)
    accounts = {}
    for line in pytestconfig.getini(ACCOUNTS_OPTION):
        name, _, key = line.partition(":")
        accounts[name.strip()] = key.strip()
    server = AzuriteServer(binary, accounts=accounts)
    try:
        storage = server.start()
    except (RuntimeError, OSError) as exc:
        server.stop()
        if require:
            pytest.fail(f"Azurite could not be started: {exc}", pytrace=False)
        pytest.skip(f"Azurite could not be started: {exc}")
    before = os.environ.get("AzureWebJobsStorage")
    os.environ["AzureWebJobsStorage"] = storage
    try:
        yield storage
    finally:
        if before is None:
            os.environ.pop("AzureWebJobsStorage", None)
        else:
            os.environ["AzureWebJobsStorage"] = before
        server.stop()


@pytest.fixture
def azjobs_worker(azurite: str) -> Iterator[Any]:
    """Enqueues of the test go to the session's Azurite; ``azjobs_worker("q", ...)`` drains those queues with the
    real worker in this process and returns what ran."""
    from azjobs.storage.client import Client, routed_to
    from azjobs.testing.worker import QueueDrainer

    client = Client(str(azurite))
    try:
        with routed_to(client):
            yield QueueDrainer(client)
    finally:
        client.close()
