"""What scaling platforms rely on, with real ``azjobs`` processes: ``--max-jobs`` and ``azjobs check``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from azjobs import Call
from tests.integration.worker_support import ROOT, log_of, spawn, wait_for
from tests.jobs import worker_jobs as wj


def check(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``azjobs check ARGS`` as a probe would; (exit status, its one line)."""
    done = subprocess.run([sys.executable, "-m", "azjobs", "check", *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))
    return done.returncode, (done.stdout + done.stderr).strip()


def test_max_jobs_works_that_many_releases_the_prefetched_rest_and_exits_0(connection_string, client, queue_name,
                                                                           raw_queue, test_dir, processes):
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    keys = [f"m{i}" for i in range(12)]
    wj.slow.options(queue=queue_name).enqueue_many([Call(k, 0.2) for k in keys]).raise_for_failures()
    # -f 8 asks for batches of 8 and -c 2 runs two at once; a 60 s lease would hide an unreleased message long.
    worker = spawn(connection_string, test_dir, "-q", queue_name, "-c", "2", "-f", "8", "-r", "60",
                   "--max-jobs", "5", "--log-format", "json")
    processes.append(worker)
    assert worker.wait(90) == 0, log_of(test_dir)
    ran = [k for k in keys if wj.runs(test_dir, k)]
    assert len(ran) == 5 and all(len(wj.runs(test_dir, k)) == 1 for k in ran)
    assert not [k for k in keys if wj.starts(test_dir, k) and k not in ran]  # none left half-run
    # The other 7 are visible at once: nothing fetched beyond the slice stays hidden under the 60 s lease.
    assert len(list(queue.peek_messages(max_messages=32))) == 7
    actions = [json.loads(line).get("action") for line in log_of(test_dir).splitlines() if line.startswith("{")]
    assert "max_jobs_reached" in actions and "worker_stopped" in actions


def test_max_jobs_with_several_processes_is_refused_with_a_clear_error(connection_string, test_dir):
    worker = spawn(connection_string, test_dir, "-q", "scaling-refused", "--max-jobs", "5", "-p", "2")
    assert worker.wait(60) == 2
    assert "--max-jobs and --heartbeat" in log_of(test_dir) and "scale with replicas" in log_of(test_dir)


def test_check_passes_while_the_worker_runs_and_fails_once_it_is_gone(connection_string, client, queue_name,
                                                                      raw_queue, test_dir, processes):
    raw_queue(queue_name)
    client.ensure_queue(queue_name)
    beat = test_dir / "probe" / "heartbeat.json"
    code, line = check("--heartbeat", str(beat))
    assert code == 1 and line.startswith("missing:"), line
    worker = spawn(connection_string, test_dir, "-q", queue_name, "--heartbeat-interval", "1",
                   env_extra={"AZJOBS_HEARTBEAT": str(beat)})
    processes.append(worker)
    assert wait_for(beat.exists, timeout=60), log_of(test_dir)
    # The probe reads the path from the same environment variable the worker did (as in the manifests).
    code, line = check(env={"AZJOBS_HEARTBEAT": str(beat)})
    assert code == 0 and line.startswith(f"ok: worker pid {worker.pid} ") and "storage answered" in line, line
    # Several intervals later it is still fresh: the worker keeps rewriting it.
    time.sleep(3.5)
    code, line = check("--heartbeat", str(beat), "--max-age", "3")
    assert code == 0, line
    worker.send_signal(signal.SIGKILL)  # a worker that is gone (or hung) stops writing
    worker.wait(30)
    assert wait_for(lambda: check("--heartbeat", str(beat), "--max-age", "2")[0] == 1, timeout=30)
    code, line = check("--heartbeat", str(beat), "--max-age", "2")
    assert line.startswith(f"stale: worker pid {worker.pid} last wrote its heartbeat"), line


def test_check_without_a_heartbeat_file_is_a_usage_error():
    code, line = check(env={"AZJOBS_HEARTBEAT": ""})
    assert code == 2 and "--heartbeat PATH" in line and "AZJOBS_HEARTBEAT" in line


def test_sigterm_past_the_grace_releases_the_running_jobs_message_at_once_and_exits_0(
        connection_string, client, queue_name, raw_queue, test_dir, processes):
    """The drain's last step: a job still running when --grace ends has its message made visible at once (not
    after its 60 s lease), so another replica runs it now; nothing is stranded, so the exit status is 0."""
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    wj.slow.options(queue=queue_name).enqueue("overrun", 60.0)
    worker = spawn(connection_string, test_dir, "-q", queue_name, "-c", "1", "-r", "60", "--grace", "1",
                   "--log-format", "json")
    processes.append(worker)
    assert wait_for(lambda: wj.starts(test_dir, "overrun"), timeout=60), log_of(test_dir)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, log_of(test_dir)
    assert wj.runs(test_dir, "overrun") == []  # it did not finish here
    assert len(list(queue.peek_messages())) == 1  # visible now, for another worker
    events = [json.loads(line) for line in log_of(test_dir).splitlines() if line.startswith("{")]
    released = [event for event in events if event.get("action") == "abandoned_released"]
    assert released and released[0]["released"] == 1 and released[0]["running"] == 1
    stopped = [event for event in events if event.get("action") == "worker_stopped"]
    assert stopped and stopped[0]["abandoned"] == 1


def test_a_worker_that_fails_its_start_up_leaves_no_heartbeat_file(connection_string, test_dir):
    beat = test_dir / "heartbeat.json"
    worker = spawn(connection_string, test_dir, "-q", "scaling-missing-queue", "--heartbeat", str(beat))
    assert worker.wait(60) == 1, log_of(test_dir)  # the queue does not exist
    assert not beat.exists()
    code, line = check("--heartbeat", str(beat))
    assert code == 1 and line.startswith("missing:"), line
