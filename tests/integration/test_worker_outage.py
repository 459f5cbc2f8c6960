"""Storage outages: the worker logs, backs off and resumes when storage returns."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest

import azjobs
from azjobs import QueueSettings
from azjobs.runtime.worker import Worker
from devtools.azurite import Azurite
from tests.conftest import unique_queue
from tests.integration.worker_support import Background, wait_for
from tests.jobs import worker_jobs as wj

FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.5))


@pytest.fixture
def own_azurite(azurite):
    """A second Azurite this test may stop, restart or freeze (the session's stays up)."""
    server = Azurite().start()
    yield server
    server.stop()


def test_storage_down_and_back_is_survived(own_azurite, test_dir, caplog):
    queue = unique_queue("out")
    client = azjobs.Client(own_azurite.connection_string, settings=FAST)
    client.ensure_queue(queue)
    wj.record.options(queue=queue, client=client).enqueue("before")
    worker = Worker([queue], client=client, settings=FAST)
    with caplog.at_level(logging.WARNING, logger="azjobs.worker"), Background(worker) as background:
        assert wait_for(lambda: wj.runs(test_dir, "before"), timeout=20)
        ports = own_azurite.queue_port, own_azurite.blob_port
        own_azurite.stop()  # connection refused
        assert wait_for(lambda: worker.stats.receive_errors >= 2, timeout=30)
        restarted = Azurite(queue_port=ports[0], blob_port=ports[1]).start()  # fresh data: 404 until created
        try:
            time.sleep(1.0)
            client.ensure_queue(queue)
            wj.record.options(queue=queue, client=client).enqueue("after")
            assert wait_for(lambda: wj.runs(test_dir, "after"), timeout=30)
            stats = background.stop()
        finally:
            restarted.stop()
    assert stats.succeeded == 2 and stats.receive_errors >= 2
    actions = {getattr(record, "action", None) for record in caplog.records}
    assert "receive_failed" in actions
    client.close()


def test_a_frozen_storage_service_is_waited_out(own_azurite, test_dir):
    queue = unique_queue("frz")
    client = azjobs.Client(own_azurite.connection_string, settings=FAST)
    client.ensure_queue(queue)
    worker = Worker([queue], client=client, settings=FAST, lease=5)
    with Background(worker) as background:
        assert wait_for(lambda: worker.stats.receives >= 1, timeout=10)
        own_azurite.pause()  # requests hang, as in a network partition
        try:
            time.sleep(3.0)
        finally:
            own_azurite.resume()
        wj.record.options(queue=queue, client=client).enqueue("thawed")
        assert wait_for(lambda: wj.runs(test_dir, "thawed"), timeout=30)
        stats = background.stop()
    assert stats.succeeded == 1
    assert client.queue(queue).get_queue_properties().approximate_message_count == 0
    client.close()
