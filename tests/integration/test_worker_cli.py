"""The ``azjobs`` command against Azurite: queue administration, missing queues, logs, the demo command."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from azjobs import QueueSettings, cli
from azjobs.runtime.worker import Worker
from tests.integration.worker_support import ROOT, Background, wait_for
from tests.jobs import worker_jobs as wj


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def test_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AZJOBS_TEST_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(argv, stdin=None):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, stdin=stdin or io.StringIO(""), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def count(queue) -> int:
    return queue.get_queue_properties().approximate_message_count


def test_create_empty_delete(client, queue_name, raw_queue, test_dir):
    queue = raw_queue(queue_name)
    code, out, _ = run(["--create", queue_name])
    assert code == 0 and "created" in out
    code, out, _ = run(["--create", queue_name])
    assert code == 0 and "already exists" in out
    queue.send_message("aGVsbG8=")
    # Without --yes on a non-interactive stdin: refused, nothing emptied.
    code, _, err = run(["--empty", queue_name])
    assert code == 2 and "--yes" in err and count(queue) == 1
    # A terminal that answers no: nothing emptied, a line says so, exit status 2 (refused).
    code, _, err = run(["--empty", queue_name], stdin=Tty("n\n"))
    assert code == 2 and err.endswith(f"azjobs: not confirmed; did not empty queue {queue_name}\n") and count(queue) == 1
    assert run(["-e", queue_name], stdin=Tty("y\n"))[0] == 0 and count(queue) == 0
    queue.send_message("aGVsbG8=")
    assert run(["--empty", queue_name, "--yes"])[0] == 0 and count(queue) == 0
    code, _, err = run(["--delete", queue_name])
    assert code == 2 and "--yes" in err
    queue.get_queue_properties()  # still there
    assert run(["-d", queue_name, "--yes"])[0] == 0
    code, _, err = run(["--delete", queue_name, "--yes"])
    assert code == 1 and err.startswith(f"azjobs: queue '{queue_name}' does not exist at storage account devstoreaccount1 at ")


def test_missing_queue_is_an_error_unless_create(client, queue_name, raw_queue, test_dir):
    code, _, err = run(["-q", queue_name, "--burst", "-i", "tests.jobs.worker_jobs"])
    assert code == 1 and queue_name in err and "--create" in err
    code, out, err = run(["-q", queue_name, "--create", "--burst", "-i", "tests.jobs.worker_jobs"])
    raw_queue(queue_name)
    assert code == 0, err
    assert "created" in out
    client.queue(queue_name).get_queue_properties()


def test_burst_json_logs_name_every_job_and_hide_secrets(connection_string, client, queue_name, raw_queue,
                                                         test_dir):
    raw_queue(queue_name)
    job_id = wj.record.options(queue=queue_name).enqueue("logged")
    process = subprocess.run(
        [sys.executable, "-m", "azjobs", "-q", queue_name, "-i", "tests.jobs.worker_jobs", "--burst",
         "--log-format", "json"],
        cwd=test_dir, env={**os.environ, "AzureWebJobsStorage": connection_string,
                           "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    assert process.returncode == 0, process.stderr
    assert "AccountKey=Eby8" not in process.stderr + process.stdout
    events = [json.loads(line) for line in process.stderr.splitlines()]
    by_action = {event.get("action"): event for event in events}
    for action in ("worker_started", "job_succeeded", "worker_stopped"):  # job_started is a debug line
        assert action in by_action, action
    done = by_action["job_succeeded"]
    assert done["job"] == "wt.record" and done["job_id"] == job_id and done["queue"] == queue_name
    assert done["attempt"] == 1 and done["duration_s"] >= 0
    assert len(wj.runs(test_dir, "logged")) == 1


def test_readme_demo_command_works_the_example_jobs(connection_string, client, raw_queue, test_dir):
    sys.path.insert(0, str(ROOT))
    import example_jobs

    for queue in ("emails", "images"):
        raw_queue(queue)
        client.ensure_queue(queue)
        client.queue(queue).clear_messages()
    example_jobs.send_welcome_email.enqueue("ada@example.com", name="Ada")
    example_jobs.notify_slack.enqueue("general", "hello")
    example_jobs.ResizeImage.enqueue("cat.png", width=128)
    process = subprocess.run(
        [sys.executable, "-m", "azjobs", "-q", "emails", "-q", "images", "-i", "example_jobs", "--burst"],
        cwd=ROOT, env={**os.environ, "AzureWebJobsStorage": connection_string},
        capture_output=True, text=True, timeout=60,
    )
    assert process.returncode == 0, process.stderr
    assert "Hello Ada!" in process.stdout and "#general: hello" in process.stdout and "cat.png" in process.stdout
    assert count(client.queue("emails")) == 0 and count(client.queue("images")) == 0


def test_idle_polling_backs_off_within_the_hosts_bounds(client, queue_name, raw_queue, test_dir):
    raw_queue(queue_name)
    client.ensure_queue(queue_name)
    settings = QueueSettings(max_polling_interval=timedelta(seconds=1))
    worker = Worker([queue_name], client=client, settings=settings)
    with Background(worker) as background:
        assert wait_for(lambda: worker.stats.receives >= 1, timeout=10)
        started, first = time.monotonic(), worker.stats.receives
        time.sleep(4.0)
        polls = worker.stats.receives - first
        elapsed = time.monotonic() - started
        # Host back-off (0.2, 0.3, 0.5, 0.9, then the 1 s cap, each ±20%): about 7 polls in 4 s.
        # Fewer than 3 would mean no polling; more than 10 would mean no back-off.
        assert 3 <= polls <= 10, (polls, elapsed)
        # Then a message is picked up within about the cap.
        wj.record.options(queue=queue_name).enqueue("woke")
        sent = time.monotonic()
        assert wait_for(lambda: wj.runs(test_dir, "woke"), timeout=10)
        assert time.monotonic() - sent < 1.0 + 2.0  # cap plus a generous margin for a loaded machine
        background.stop()


# -- #25 item 9 ------------------------------------------------------------------------------------
# Each job writes its line in one call: two jobs run at once, and print()'s separate writes of the text and
# the newline interleave ("onetwo b\n a\n" was seen on a loaded machine).
QUEUE_JOBS = """
import sys

import azjobs

@azjobs.job(queue="{first}")
def one(text):
    sys.stdout.write(f"one {{text}}\\n")

@azjobs.job(queue="{second}")
def two(text):
    sys.stdout.write(f"two {{text}}\\n")
"""


def test_dash_i_without_q_works_the_queues_its_jobs_declare_and_says_which(connection_string, client, raw_queue,
                                                                          test_dir):
    from tests.conftest import unique_queue

    first, second = unique_queue("iqa"), unique_queue("iqb")
    for name in (first, second):
        raw_queue(name)
        client.ensure_queue(name)
    (test_dir / "iq_jobs.py").write_text(QUEUE_JOBS.format(first=first, second=second))
    env = {**os.environ, "AzureWebJobsStorage": connection_string, "PYTHONPATH": str(ROOT)}
    sender = subprocess.run([sys.executable, "-c", "import iq_jobs; iq_jobs.one.enqueue('a'); iq_jobs.two.enqueue('b')"],
                            cwd=test_dir, env=env, capture_output=True, text=True, timeout=60)
    assert sender.returncode == 0, sender.stderr
    process = subprocess.run([sys.executable, "-m", "azjobs", "-i", "iq_jobs.py", "--burst"], cwd=test_dir, env=env,
                             capture_output=True, text=True, timeout=90)
    assert process.returncode == 0, process.stderr
    assert "one a\n" in process.stdout and "two b\n" in process.stdout
    queues = ", ".join(sorted((first, second)))
    assert f"no -q given: working the queues the jobs from iq_jobs.py declare: {queues}\n" in process.stderr
    assert f"worker started on {queues} of storage account devstoreaccount1" in process.stderr


def test_dash_i_whose_jobs_declare_no_queue_is_a_usage_error(connection_string, test_dir):
    (test_dir / "no_jobs.py").write_text("X = 1\n")
    process = subprocess.run([sys.executable, "-m", "azjobs", "-i", "no_jobs.py", "--burst"], cwd=test_dir,
                             env={**os.environ, "AzureWebJobsStorage": connection_string, "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, timeout=60)
    assert (process.returncode, process.stdout) == (2, "")
    assert process.stderr == ("azjobs: importing no_jobs.py registered no job with a queue, so there is nothing to "
                              "work: give -q QUEUE\n")


def _start_line(connection_string: str, test_dir, *, environment: str | None) -> str:
    """The worker_started line of ``azjobs -q QUEUE`` started in ``test_dir`` (stopped by SIGTERM once logged)."""
    import signal

    from tests.conftest import unique_queue

    queue = unique_queue("start")
    (test_dir / "start_jobs.py").write_text(f"import azjobs\n\n@azjobs.job(queue={queue!r})\ndef f():\n    pass\n")
    env = {**os.environ, "AzureWebJobsStorage": connection_string, "PYTHONPATH": str(ROOT)}
    env.pop("AZURE_FUNCTIONS_ENVIRONMENT", None)
    env.pop("AZJOBS_HOST_JSON", None)
    if environment:
        env["AZURE_FUNCTIONS_ENVIRONMENT"] = environment
    log = test_dir / f"start-{queue}.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "azjobs", "-q", queue, "-i", "start_jobs.py", "--create",
                                    "--log-format", "json"], cwd=test_dir, env=env, stdout=sink, stderr=sink)
        try:
            assert wait_for(lambda: "worker_started" in log.read_text(), timeout=60), log.read_text()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    from azure.storage.queue import QueueClient

    QueueClient.from_connection_string(connection_string, queue).delete_queue()
    [line] = [json.loads(text) for text in log.read_text().splitlines() if '"worker_started"' in text]
    return line["message"]


def test_start_line_without_host_json_says_idle_polling_backs_off_to_60s_and_how_to_shorten_it(connection_string,
                                                                                                 test_dir):
    assert not (test_dir / "host.json").exists()
    line = _start_line(connection_string, test_dir, environment=None)
    assert line.endswith("max polling interval 60.0s; no host.json sets maxPollingInterval, so an idle queue is "
                         "polled as the host does, backing off to every 60 s and a new job can wait up to a minute: "
                         "set extensions.queues.maxPollingInterval in host.json (e.g. \"00:00:02\") or "
                         "AZURE_FUNCTIONS_ENVIRONMENT=Development (2 s)"), line
    # Where polling is already short (Development: 2 s), the line says nothing of it.
    assert _start_line(connection_string, test_dir, environment="Development").endswith("max polling interval 2.0s")
