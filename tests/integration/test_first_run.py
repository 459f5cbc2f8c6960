"""A first run of the ``azjobs`` command against Azurite: what a user sees, and the exit status, when
the key is wrong, a SAS expires or lacks a permission, storage is not running, or a delivery is a
redelivery. Every test runs the real command (``python -m azjobs``) and reads its stderr."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from azjobs.model.registry import registry
from devtools.azurite import ACCOUNT, KEY, free_port
from tests.conftest import SECOND_KEY
from tests.integration.worker_support import ROOT, wait_for

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
JOBS = """\
import azjobs

@azjobs.job(queue="%FIRST_RUN_Q%", name="first_run.hello")
def hello(name: str) -> None:
    print(f"hello {name}", flush=True)
"""


@pytest.fixture
def first_dir(tmp_path):
    (tmp_path / "first_jobs.py").write_text(JOBS)
    return tmp_path


def env_for(connection_string: str | None, queue: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobsStorage")}
    if connection_string is not None:
        env["AzureWebJobsStorage"] = connection_string
    env.update(FIRST_RUN_Q=queue, PYTHONPATH=str(ROOT), AZURE_FUNCTIONS_ENVIRONMENT="Development", **extra)
    return env


def azjobs(cwd: Path, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "azjobs", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def lines(text: str) -> list[str]:
    """stderr lines without their timestamps."""
    return [re.sub("^" + TIME, "", line) for line in text.splitlines()]


def endpoint_of(connection_string: str) -> str:
    return re.search(r"QueueEndpoint=([^;]+)", connection_string).group(1)


def wrong_key(connection_string: str) -> str:
    """devstoreaccount1's connection string with another account's key: Azurite answers 403."""
    return connection_string.replace(KEY, SECOND_KEY)


def sas_connection(connection_string: str, permissions: str, expires_in_s: float) -> str:
    from azure.storage.queue import AccountSasPermissions, ResourceTypes, generate_account_sas

    sas = generate_account_sas(ACCOUNT, KEY, ResourceTypes(service=True, container=True, object=True),
                               AccountSasPermissions.from_string(permissions),
                               expiry=datetime.now(timezone.utc) + timedelta(seconds=expires_in_s))
    return f"QueueEndpoint={endpoint_of(connection_string)};SharedAccessSignature={sas}"


# -- A. a wrong key or an expired SAS is permanent --------------------------------------------------
def test_a_wrong_key_stops_the_worker_at_once_with_one_line(connection_string, client, queue_name, raw_queue,
                                                           first_dir):
    raw_queue(queue_name)
    client.ensure_queue(queue_name)
    env = env_for(wrong_key(connection_string), queue_name)
    endpoint = endpoint_of(connection_string)
    expected = (f"azjobs: storage account devstoreaccount1 at {endpoint} rejected the credentials (403 "
                f"AuthenticationFailed) checking queue {queue_name}: the AccountKey in AzureWebJobsStorage "
                "(environment variable) is not a key of account devstoreaccount1 (copy key1 or key2 from the "
                "account's Access keys)\n")
    # Before: "cannot reach queue ... (ClientAuthenticationError ...)" every 2 s, forever, --burst or not.
    for extra in ([], ["--burst"]):
        started = time.monotonic()
        done = azjobs(first_dir, env, "-q", "%FIRST_RUN_Q%", "-i", "first_jobs.py", *extra, timeout=30)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", expected)
        assert time.monotonic() - started < 20
    assert SECOND_KEY not in expected and KEY not in expected


def test_a_wrong_key_names_the_connection_setting_given_with_connection(connection_string, queue_name, first_dir):
    env = env_for(None, queue_name, JobsStorage=wrong_key(connection_string))
    done = azjobs(first_dir, env, "-q", queue_name, "-i", "first_jobs.py", "--connection", "JobsStorage", timeout=30)
    assert done.returncode == 2
    assert lines(done.stderr) == [
        f"azjobs: storage account devstoreaccount1 at {endpoint_of(connection_string)} rejected the credentials "
        f"(403 AuthenticationFailed) checking queue {queue_name}: the AccountKey in JobsStorage (environment "
        "variable) is not a key of account devstoreaccount1 (copy key1 or key2 from the account's Access keys)"]


def test_queue_administration_with_a_wrong_key_exits_2_with_one_line(connection_string, queue_name, first_dir):
    env = env_for(wrong_key(connection_string), queue_name)
    endpoint = endpoint_of(connection_string)
    for args, doing in ((["--create", queue_name], f"creating queue {queue_name}"),
                        (["--empty", queue_name, "--yes"], f"emptying queue {queue_name}"),
                        (["--delete", queue_name, "--yes"], f"deleting queue {queue_name}")):
        done = azjobs(first_dir, env, *args, timeout=60)
        assert (done.returncode, done.stdout) == (2, ""), (args, done.stderr)
        assert done.stderr == (
            f"azjobs: storage account devstoreaccount1 at {endpoint} rejected the credentials (403 "
            f"AuthenticationFailed) {doing}: the AccountKey in AzureWebJobsStorage (environment variable) is not a "
            "key of account devstoreaccount1 (copy key1 or key2 from the account's Access keys)\n"), args


def test_an_expired_sas_at_start_up_says_when_it_expired(connection_string, client, queue_name, raw_queue, first_dir):
    raw_queue(queue_name)
    client.ensure_queue(queue_name)
    sas = sas_connection(connection_string, "raup", -60)
    expiry = re.search(r"se=([^&;]+)", sas).group(1).replace("%3A", ":")
    done = azjobs(first_dir, env_for(sas, queue_name), "-q", queue_name, "-i", "first_jobs.py", timeout=30)
    assert done.returncode == 2
    assert done.stderr == (
        f"azjobs: storage account devstoreaccount1 at {endpoint_of(connection_string)} rejected the credentials (403 "
        f"AuthenticationFailed) checking queue {queue_name}: the SharedAccessSignature in AzureWebJobsStorage "
        f"(environment variable) expired at {expiry}: make a new one\n")


def test_a_sas_that_expires_while_running_is_one_error_not_a_warning_per_poll(connection_string, client, queue_name,
                                                                             raw_queue, first_dir):
    raw_queue(queue_name)
    client.ensure_queue(queue_name)
    sas = sas_connection(connection_string, "raup", 6)  # the worker starts, then the SAS expires
    log = open(first_dir / "worker.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "azjobs", "-q", queue_name, "-i", "first_jobs.py"],
                               cwd=first_dir, env=env_for(sas, queue_name), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: "storage_auth_failed" in _read(first_dir) or "rejected" in _read(first_dir), 30)
        time.sleep(6)  # several more polls (2 s cap) with the SAS still expired
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    out = lines(_read(first_dir))
    errors = [line for line in out if line.startswith("ERROR")]
    assert len(errors) == 1, out
    assert re.fullmatch(
        rf"ERROR   storage account devstoreaccount1 at {re.escape(endpoint_of(connection_string))} rejected the "
        rf"credentials \(403 AuthenticationFailed\) receiving from queue {queue_name}: the SharedAccessSignature in "
        r"AzureWebJobsStorage \(environment variable\) expired at \S+: make a new one; the worker keeps retrying "
        r"quietly until storage accepts them", errors[0])
    assert not [line for line in out if line.startswith("WARNING")], out


def test_a_sas_without_process_permission_makes_burst_exit_2(connection_string, client, queue_name, raw_queue,
                                                             first_dir):
    raw_queue(queue_name)
    client.ensure_queue(queue_name)
    done = azjobs(first_dir, env_for(sas_connection(connection_string, "r", 3600), queue_name), "-q", queue_name,
                  "-i", "first_jobs.py", "--burst", timeout=60)
    assert done.returncode == 2, done.stderr
    errors = [line for line in lines(done.stderr) if line.startswith("ERROR")]
    assert errors == [
        f"ERROR   storage account devstoreaccount1 at {endpoint_of(connection_string)} refused the request (403 "
        f"AuthorizationPermissionMismatch) receiving from queue {queue_name}: the SharedAccessSignature in "
        "AzureWebJobsStorage (environment variable) lacks a permission: the worker needs queue read, add, update and "
        "process (sp=raup), --create also create (c); --burst stops (exit status 2)"]


# -- B. storage not running -------------------------------------------------------------------------
def test_storage_not_running_is_said_once_then_burst_gives_up_with_status_1(queue_name, first_dir):
    port = free_port()  # nothing listens there
    endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
    down = f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};QueueEndpoint={endpoint};"
    started = time.monotonic()
    done = azjobs(first_dir, env_for(down, queue_name), "-q", queue_name, "-i", "first_jobs.py", "--burst",
                  "--burst-timeout", "10", timeout=90)
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 60
    out = lines(done.stderr)
    assert out[0] == (
        f"WARNING cannot reach storage account devstoreaccount1 at {endpoint} (connection refused) for queue "
        f"{queue_name}, connection from AzureWebJobsStorage (environment variable). Is Azurite running? Start Azurite "
        f"with `npx azurite --silent --location .azurite --queuePort {port}` (in the azjobs repository: `npm ci`, "
        f"then `npx azurite --silent --location .azurite --skipApiVersionCheck --queuePort {port}`). Retrying for "
        "up to 10s (--burst-timeout).")
    retries = out[1:-1]
    assert retries and all(re.fullmatch(
        rf"WARNING storage at {re.escape(endpoint)} still failing for queue {queue_name} \(connection refused\); "
        r"retrying in \d+\.\ds", line) for line in retries), out
    assert re.fullmatch(rf"azjobs: storage account devstoreaccount1 at {re.escape(endpoint)} did not answer for "
                        r"\d+s \(connection refused\); --burst gives up after 10s \(--burst-timeout\)", out[-1]), out
    assert "Max retries" not in done.stderr and "NewConnectionError" not in done.stderr


def test_the_implicit_azurite_default_is_said(queue_name, first_dir):
    done = azjobs(first_dir, env_for(None, queue_name), "-q", queue_name, "-i", "first_jobs.py", "--burst",
                  "--burst-timeout", "1", timeout=60)
    assert done.returncode != 0
    assert lines(done.stderr)[0] == ("WARNING AzureWebJobsStorage is not set (environment or local.settings.json): "
                                     "using Azurite on its default ports, http://127.0.0.1:10001/devstoreaccount1")


# -- F. the start line and redeliveries ----------------------------------------------------------------
def test_start_line_names_account_endpoint_and_origin_and_redeliveries_are_counted(connection_string, client,
                                                                                  queue_name, raw_queue, first_dir):
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    sys.path.insert(0, str(first_dir))
    os.environ["FIRST_RUN_Q"] = queue_name
    try:
        import first_jobs  # the same job, to enqueue it

        first_jobs.hello.enqueue("again")
        first_jobs.hello.enqueue("fresh")
    finally:
        sys.path.remove(str(first_dir))
        del os.environ["FIRST_RUN_Q"]
        sys.modules.pop("first_jobs", None)
        registry.unregister("first_run.hello")
    # A worker that died holding one message: it comes back with dequeue count 2.
    held = queue.receive_message(visibility_timeout=1)
    assert held is not None
    time.sleep(1.5)
    done = azjobs(first_dir, env_for(connection_string, queue_name), "-q", queue_name, "-i", "first_jobs.py",
                  "--burst", "--log-format", "json", timeout=60)
    assert done.returncode == 0, done.stderr
    events = {event["action"]: event for event in map(json.loads, done.stderr.splitlines())}
    started, stopped = events["worker_started"], events["worker_stopped"]
    endpoint = endpoint_of(connection_string)
    assert started["message"].startswith(
        f"worker started on {queue_name} of storage account devstoreaccount1 at {endpoint}, connection from "
        "AzureWebJobsStorage (environment variable): concurrency ")
    assert (started["account"], started["endpoint"], started["connection"]) == (
        "devstoreaccount1", endpoint, "AzureWebJobsStorage (environment variable)")
    assert KEY not in done.stderr
    assert stopped["redeliveries"] == 1 and stopped["succeeded"] == 2
    assert ", 1 redeliveries received (dequeue count > 1), 0 released for redelivery, " in stopped["message"]


def _read(directory: Path) -> str:
    path = directory / "worker.log"
    return path.read_text(errors="replace") if path.exists() else ""
