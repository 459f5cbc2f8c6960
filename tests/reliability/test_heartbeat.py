"""``azjobs check`` against a worker whose storage stops answering (a fault proxy cuts its connections)."""

from __future__ import annotations

from tests.integration.test_worker_scaling import check
from tests.reliability.support import log_text, spawn, wait_for


def test_check_reports_storage_silent_while_liveness_still_passes_and_recovers_when_storage_answers(
        proxy, proxied, client, queue_name, test_dir, processes, monkeypatch):
    client.ensure_queue(queue_name)
    beat = test_dir / "heartbeat.json"
    monkeypatch.setenv("AZJOBS_HEARTBEAT", str(beat))  # the worker and the probe read it, as in the manifests
    worker = spawn(proxied, test_dir, "-q", queue_name, "--heartbeat-interval", "1")
    processes.append(worker)
    assert wait_for(lambda: check("--storage-max-age", "5")[0] == 0, timeout=60), log_text(test_dir)
    proxy.cut()
    try:
        assert wait_for(lambda: check("--storage-max-age", "5")[0] == 1, timeout=60), check("--storage-max-age", "5")
        code, line = check("--storage-max-age", "5")
        assert code == 1 and line.startswith(f"storage: worker pid {worker.pid} last had an answer from storage"), line
        # The worker itself is alive and keeps writing: liveness (storage left out) still passes.
        code, line = check("--storage-max-age", "0", "--max-age", "5")
        assert code == 0 and line.startswith("ok:"), line
    finally:
        proxy.restore()
    assert wait_for(lambda: check("--storage-max-age", "5")[0] == 0, timeout=60), check("--storage-max-age", "5")
