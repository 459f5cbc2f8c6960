"""``azjobs stats`` against Azurite: depths, poison depths, the oldest visible message's age, missing queues,
queues taken from the loaded jobs, --watch."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import azjobs
from azjobs import QueueSettings
from azjobs.cli import stats as stats_cli
from azjobs.hosting import executor as hosted_executor
from azjobs.runtime.worker import Worker
from tests.conftest import unique_queue

FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.5))


def _stats(*argv: str, sleep=time.sleep) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = stats_cli.main(list(argv), out=out, err=err, sleep=sleep)
    return code, out.getvalue(), err.getvalue()


def _busy_queue(raw_queue, age_s: float = 0.0) -> tuple[str, object]:
    """A queue with 3 messages (one delayed, so counted but not visible) whose oldest is ``age_s`` older than
    the others, and 2 poison messages."""
    queue = unique_queue("st")
    qc = raw_queue(queue)
    qc.create_queue()
    first = qc.send_message("oldest")
    time.sleep(age_s)
    qc.send_message("newer")
    qc.send_message("later", visibility_timeout=300)
    poison = raw_queue(f"{queue}-poison")
    poison.create_queue()
    poison.send_message("p1")
    poison.send_message("p2")
    return queue, first


def test_stats_json_reports_depth_poison_depth_and_the_oldest_visible_messages_age(azurite, raw_queue):
    queue, first = _busy_queue(raw_queue, age_s=1.2)
    idle = unique_queue("st-idle")
    raw_queue(idle).create_queue()  # empty, and nothing was ever poisoned (no -poison queue)
    code, out, err = _stats("-q", queue, "-q", idle, "--json")
    assert code == 0, err
    document = json.loads(out)
    busy, empty = document["queues"]
    assert (busy["queue"], busy["exists"], busy["depth"], busy["poison_queue"], busy["poison_depth"]) == (
        queue, True, 3, f"{queue}-poison", 2)
    assert 1.0 <= busy["oldest_age_s"] < 60
    assert busy["oldest_inserted_at"] == first.inserted_on.isoformat().replace("+00:00", "Z")
    assert (empty["depth"], empty["poison_depth"], empty["oldest_age_s"], empty["exists"]) == (0, 0, None, True)
    assert document["account"] == "devstoreaccount1"


def test_stats_table_and_a_missing_queue(azurite, raw_queue):
    queue, _ = _busy_queue(raw_queue)
    missing = unique_queue("st-missing")
    code, out, err = _stats("-q", queue, "-q", missing)
    assert code == 1
    header, busy, absent = out.splitlines()
    assert header.split() == ["QUEUE", "DEPTH", "POISON", "OLDEST"]
    assert re.fullmatch(rf"{queue}\s+3\s+2\s+\d+s", busy)
    assert absent.split() == [missing, "missing", "0", "-"]
    assert f"queue {missing} does not exist" in err


def test_stats_watch_refreshes_until_its_count(azurite, raw_queue):
    queue, _ = _busy_queue(raw_queue)
    slept = []
    code, out, err = _stats("-q", queue, "--watch", "5", "--count", "2", sleep=slept.append)
    assert code == 0, err
    assert slept == [5.0]
    assert len(re.findall(r"^QUEUE +DEPTH +POISON +OLDEST$", out, re.M)) == 2 and len(re.findall(r"^\d{4}-\d\d-\d\dT\S+Z  ", out, re.M)) == 2
    code, out, err = _stats("-q", queue, "--watch", "0.5", "--count", "2", "--json", sleep=slept.append)
    assert code == 0 and [json.loads(line)["queues"][0]["depth"] for line in out.splitlines()] == [3, 3]


def test_stats_takes_its_queues_from_the_loaded_jobs_like_the_worker(azurite, raw_queue, tmp_path):
    queue, _ = _busy_queue(raw_queue)
    jobs = tmp_path / "stats_jobs.py"
    jobs.write_text(f"import azjobs\n\n@azjobs.job(queue={queue!r})\ndef work():\n    pass\n")
    env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string}
    done = subprocess.run([sys.executable, "-m", "azjobs", "stats", "-i", str(jobs), "--json"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["queues"]
    assert (row["queue"], row["depth"], row["poison_depth"]) == (queue, 3, 2)
    # nothing loaded and no -q: a usage error naming what to do
    done = subprocess.run([sys.executable, "-m", "azjobs", "stats"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "give -q QUEUE, or -i" in done.stderr


# -- recent throughput and failures, with job state on ------------------------------------
def _quick(n: int) -> None:
    pass


def _broken(n: int) -> None:
    raise azjobs.Fail(f"order {n} cannot be charged")


def _slow_retry(n: int) -> None:
    raise RuntimeError("try again later")


def test_stats_with_job_state_adds_recent_throughput_and_failure_counts(connection_string, raw_queue, monkeypatch):
    from azjobs.model import tracking as tracker

    queue, other = unique_queue("st-state"), unique_queue("st-other")
    table = f"st{uuid.uuid4().hex[:16]}"
    client = azjobs.configure(connection_string, state=True, state_table=table)
    monkeypatch.setenv("AZJOBS_STATE_TABLE", table)
    try:
        registry = azjobs.Registry()
        quick = azjobs.job(queue=queue, registry=registry, name="stats.quick")(_quick)
        broken = azjobs.job(queue=queue, registry=registry, name="stats.broken")(_broken)
        retried = azjobs.job(queue=queue, registry=registry, name="stats.retried",
                             retry=azjobs.Fixed(300, max_retries=1))(_slow_retry)
        quick.enqueue_many([(i,) for i in range(3)]).raise_for_failures()
        broken.enqueue(4)
        retried.enqueue(5)
        azjobs.cancel(quick.enqueue(6))  # cancelled before it runs: its own outcome
        raw_queue(queue)
        raw_queue(other).create_queue()
        stats = Worker([queue], client=client, executor=hosted_executor(registry=registry, client=client, settings=FAST),
                       burst=True).run()
        assert (stats.succeeded, stats.dead_lettered, stats.retry_scheduled, stats.cancelled) == (3, 1, 1, 1)

        code, out, err = _stats("-q", queue, "-q", other, "--json")  # job state is on in this process
        assert code == 0, err
        document = json.loads(out)
        recent = document["recent"]
        assert recent["window_s"] == 3600 and recent["table"] == table and recent["capped_at"] is None
        assert recent["queues"][queue] == {"succeeded": 3, "failed": 1, "dead_lettered": 0, "cancelled": 1,
                                           "retrying": 1, "running": 0, "finished_per_min": round(4 / 60, 2)}
        assert recent["queues"][other]["succeeded"] == 0
        depth = {row["queue"]: row["depth"] for row in document["queues"]}
        assert depth == {queue: 1, other: 0}  # the retry copy waits its 300 s back-off

        code, out, err = _stats("-q", queue, "--since", "30m")
        header, row = out.splitlines()
        assert header.split() == ["QUEUE", "DEPTH", "POISON", "OLDEST", "OK/30m", "FAILED/30m", "CANCELLED/30m",
                                  "RETRYING", "RUNNING", "JOBS/MIN"]
        assert row.split() == [queue, "1", "1", "-", "3", "1", "1", "1", "0", "0.13"]

        tracker.enable(False)  # job state off: no recent columns unless asked with --state
        code, out, err = _stats("-q", queue)
        assert out.splitlines()[0].split() == ["QUEUE", "DEPTH", "POISON", "OLDEST"]
        code, out, err = _stats("-q", queue, "--state", "--json")
        assert json.loads(out)["recent"]["queues"][queue]["succeeded"] == 3
    finally:
        tracker._process_state = None
        try:
            client.connection.table_service().delete_table(table)
        except Exception:
            pass
        client.close()


def test_stats_with_a_wrong_key_or_storage_not_running_says_so_in_one_line(azurite, connection_string, tmp_path):
    from devtools.azurite import free_port
    from tests.integration.test_operator_errors import AZURITE_KEY, WRONG_KEY, with_key

    env = {**os.environ, "AzureWebJobsStorage": with_key(connection_string, WRONG_KEY)}
    done = subprocess.run([sys.executable, "-m", "azjobs", "stats", "-q", "emails"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2  # rejected credentials: a configuration error, as for the worker
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("azjobs stats: ") and "rejected the credentials (403 AuthenticationFailed)" in line
    assert WRONG_KEY not in done.stderr + done.stdout and AZURITE_KEY not in done.stderr + done.stdout
    port = free_port()
    env["AzureWebJobsStorage"] = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
                                  f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1")
    done = subprocess.run([sys.executable, "-m", "azjobs", "stats", "-q", "emails"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert f"cannot reach storage account devstoreaccount1 at http://127.0.0.1:{port}/devstoreaccount1" in line
    assert "connection refused" in line and "Traceback" not in done.stderr
