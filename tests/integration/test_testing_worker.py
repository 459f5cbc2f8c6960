"""The pytest plugin's storage fixtures, as this suite uses them: ``azurite`` (the session's, for every
integration test) and ``azjobs_worker`` (the real worker, in this process, against it)."""

from __future__ import annotations

import os

import azjobs
from azjobs.storage.client import default_client
from tests.conftest import unique_queue
from tests.jobs import inline_jobs as ij


def test_the_azurite_fixture_is_a_connection_string_with_its_ports_and_the_sessions_storage_setting(azurite):
    assert isinstance(azurite, str) and f"QueueEndpoint=http://127.0.0.1:{azurite.queue_port}/" in azurite
    assert f"TableEndpoint=http://127.0.0.1:{azurite.table_port}/" in azurite
    assert os.environ["AzureWebJobsStorage"] == azurite
    client = azjobs.Client(azurite)
    queue = unique_queue("plz")
    assert client.ensure_queue(queue) is True
    client.queue(queue).delete_queue()
    client.close()


def test_azjobs_worker_drains_what_the_test_enqueued_with_the_real_worker_and_returns_what_ran(azjobs_worker,
                                                                                                  connection_string):
    queue = unique_queue("plw")
    assert str(default_client().connection.connection_string) == connection_string  # enqueues go to Azurite
    ok = ij.greet.options(queue=queue).enqueue("Ada")
    bad = ij.refuse.options(queue=queue).enqueue("Mallory")

    ran = azjobs_worker(queue)

    assert sorted((r.id, r.outcome, r.value) for r in ran) == sorted([(ok, "succeeded", "hello Ada!"),
                                                                      (bad, "dead_lettered", None)])
    [failed] = [r for r in ran if r.id == bad]
    assert isinstance(failed.error, PermissionError) and str(failed.error) == "Mallory is not allowed"
    assert azjobs_worker(queue) == []  # drained: nothing is left
    poison = azjobs.Client(connection_string).queue(f"{queue}-poison")
    assert len(list(poison.peek_messages(max_messages=32))) == 1
    for name in (queue, f"{queue}-poison"):
        azjobs.Client(connection_string).queue(name).delete_queue()
