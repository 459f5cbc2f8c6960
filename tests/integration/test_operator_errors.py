"""What an operator sees when storage is wrong: one clean line, no secret, a non-zero exit, fast.

Against Azurite: a wrong account key (Azurite answers 403), storage not running (a closed
local port), connection strings that cannot work, and ``enqueue_async`` without clean-up.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import azjobs
from azjobs.storage.client import Client
from azjobs.storage.http import fast_connect_retry
from azjobs.storage.connection import AZURITE_KEY, azurite_connection_string
from azjobs.errors import ConfigurationError, EnqueueError
from devtools.azurite import free_port
from tests.conftest import ROOT, unique_queue

WRONG_KEY = base64.b64encode(b"not the key of devstoreaccount1, but valid base64!").decode("ascii")
REFUSED = "connection refused (nothing listens there: is storage running, is the endpoint right?)"

REG = azjobs.Registry()


@azjobs.job(queue="operator-errors", registry=REG)
def noop(value=None) -> None:
    pass


def with_key(connection_string: str, key: str) -> str:
    return connection_string.replace(f"AccountKey={AZURITE_KEY}", f"AccountKey={key}")


def azjobs_command(*argv: str, connection_string: str, cwd, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m azjobs ...`` as a user runs it (the CLI routes ``poison`` to poison_cli)."""
    env = {**os.environ, "AzureWebJobsStorage": connection_string, "PYTHONPATH": str(ROOT)}
    env.pop("AZJOBS_HOST_JSON", None)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "azjobs", *argv], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)
    return proc, time.monotonic() - started


def assert_one_clean_line(proc: subprocess.CompletedProcess, expected: str, *secrets: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert lines == [expected], proc.stderr
    assert proc.stdout == ""
    for secret in secrets:
        assert secret not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr and "<?xml" not in proc.stderr


POISON_COMMANDS = [
    ("list", "{queue}"),
    ("list", "{queue}", "--json"),
    ("show", "{queue}", "0123456789abcdef"),
    ("requeue", "{queue}", "--all"),
    ("purge", "{queue}", "--yes"),
]


# -- item 1: poison commands on storage errors -------------------------------------------------------
@pytest.mark.parametrize("argv", POISON_COMMANDS, ids=lambda a: " ".join(a[:1] + a[2:]))
def test_poison_command_with_a_wrong_account_key_prints_one_line(argv, azurite, connection_string, tmp_path):
    queue = unique_queue("opk")
    proc, _ = azjobs_command("poison", *(a.format(queue=queue) for a in argv),
                             connection_string=with_key(connection_string, WRONG_KEY), cwd=tmp_path)
    assert proc.returncode == 2  # a configuration error, as for the worker: no retry fixes it
    assert_one_clean_line(
        proc,
        f"azjobs poison: storage at http://127.0.0.1:{azurite.queue_port}/devstoreaccount1 rejected the credentials "
        "(403 AuthenticationFailed): the AccountKey or SharedAccessSignature of app setting AzureWebJobsStorage is "
        "wrong, or the SAS has expired",
        WRONG_KEY, AZURITE_KEY)


@pytest.mark.parametrize("argv", POISON_COMMANDS, ids=lambda a: " ".join(a[:1] + a[2:]))
def test_poison_command_with_storage_not_running_prints_one_line_fast(argv, tmp_path):
    port = free_port()
    proc, elapsed = azjobs_command("poison", *(a.format(queue="emails") for a in argv),
                                   connection_string=azurite_connection_string(queue_port=port, blob_port=port),
                                   cwd=tmp_path)
    assert proc.returncode == 1
    assert_one_clean_line(
        proc, f"azjobs poison: cannot reach the queue service at http://127.0.0.1:{port}/devstoreaccount1: {REFUSED}",
        AZURITE_KEY)
    # Fast = no back-off after a refused connect: the SDK's own would wait 15 s and more per retry.
    # The bound includes the subprocess's start-up, which takes seconds on a loaded 2-core machine.
    assert elapsed < 20, f"took {elapsed:.1f}s"


@pytest.mark.parametrize("value,expected", [
    ("garbage", "azjobs poison: the connection string in app setting AzureWebJobsStorage is not a connection "
                "string: expected key=value pairs separated by ';' (DefaultEndpointsProtocol, AccountName and "
                "AccountKey from the storage account's Access keys, or UseDevelopmentStorage=true)"),
    (azurite_connection_string().replace(AZURITE_KEY, AZURITE_KEY[:-5]),
     "azjobs poison: the connection string in app setting AzureWebJobsStorage: AccountKey is not a valid base64 key "
     "(is it truncated, or cut at a ';'? copy the whole key from the storage account's Access keys)"),
], ids=["garbage", "truncated-key"])
def test_poison_command_with_a_bad_connection_string_is_a_usage_error(value, expected, tmp_path):
    proc, elapsed = azjobs_command("poison", "list", "emails", connection_string=value, cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_clean_line(proc, expected, AZURITE_KEY[:-5])
    assert elapsed < 20  # no storage call at all; the bound is the subprocess's start-up under load


# -- item 7: enqueue fails fast and clearly ------------------------------------------------------------
def test_enqueue_to_a_refused_connection_fails_within_seconds():
    port = free_port()
    client = Client(azurite_connection_string(queue_port=port))
    queue = unique_queue("opr")
    started = time.monotonic()
    with pytest.raises(EnqueueError) as info:
        noop.options(queue=queue, client=client).enqueue("x")
    elapsed = time.monotonic() - started
    assert_refused(str(info.value), port, queue)
    assert elapsed < 3, f"took {elapsed:.1f}s"


def assert_refused(text: str, port: int, queue: str) -> None:
    """The clear part first; then the SDK's own one-line text (redacted), which names the request."""
    assert text.startswith(f"cannot reach the queue service at http://127.0.0.1:{port}/devstoreaccount1 for "
                           f"{queue!r}: {REFUSED}; "), text
    assert "\n" not in text and AZURITE_KEY not in text


def test_enqueue_async_to_a_refused_connection_fails_within_seconds():
    port = free_port()
    client = Client(azurite_connection_string(queue_port=port))
    queue = unique_queue("opr")
    started = time.monotonic()
    with pytest.raises(EnqueueError) as info:
        asyncio.run(noop.options(queue=queue, client=client).enqueue_async("x"))
    elapsed = time.monotonic() - started
    assert_refused(str(info.value), port, queue)
    assert elapsed < 3, f"took {elapsed:.1f}s"


def test_enqueue_with_a_wrong_key_says_so_in_one_line(azurite, connection_string):
    client = Client(with_key(connection_string, WRONG_KEY))
    queue = unique_queue("opk")
    with pytest.raises(EnqueueError) as info:
        noop.options(queue=queue, client=client).enqueue("x")
    assert str(info.value) == (
        f"sending to queue {queue!r} failed: storage at http://127.0.0.1:{azurite.queue_port}/devstoreaccount1 "
        "rejected the credentials (403 AuthenticationFailed): the AccountKey or SharedAccessSignature of the "
        "connection string given to azjobs.configure() or azjobs.Client() is wrong, or the SAS has expired")


class _Unavailable(http.server.BaseHTTPRequestHandler):
    hits = 0

    def _answer(self):
        type(self).hits += 1
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(503, "Service Unavailable")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def recorded_backoffs(monkeypatch):
    """The back-offs the SDK retry policy of ``Client`` takes (without sleeping them)."""
    from azure.storage.queue import ExponentialRetry

    taken: list[float] = []
    policy = fast_connect_retry(ExponentialRetry)
    monkeypatch.setattr(policy, "sleep", lambda self, settings, transport: taken.append(self.get_backoff_time(settings)))
    return taken


def test_a_refused_connection_is_retried_once_quickly(recorded_backoffs):
    client = Client(azurite_connection_string(queue_port=free_port()))
    with pytest.raises(EnqueueError, match="connection refused"):
        noop.options(queue=unique_queue("opr"), client=client).enqueue("x")
    assert recorded_backoffs == [0.5]


def test_5xx_answers_keep_their_retries(recorded_backoffs):
    _Unavailable.hits = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = Client(azurite_connection_string(queue_port=server.server_address[1]))
        queue = unique_queue("op5")
        with pytest.raises(EnqueueError) as info:
            noop.options(queue=queue, client=client).enqueue("x")
    finally:
        server.shutdown()
        server.server_close()
    assert _Unavailable.hits == 4  # the first try and 3 retries
    assert len(recorded_backoffs) == 3 and all(b != 0.5 for b in recorded_backoffs)
    assert str(info.value).startswith(f"sending to queue {queue!r} failed: storage at "
                                      f"http://127.0.0.1:{server.server_address[1]}/devstoreaccount1 answered 503")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["garbage", azurite_connection_string().replace(AZURITE_KEY, AZURITE_KEY[:-5])],
                         ids=["garbage", "truncated-key"])
def test_configure_refuses_a_connection_string_that_cannot_work(value, client):
    with pytest.raises(ConfigurationError) as info:
        azjobs.configure(value)
    assert AZURITE_KEY[:-5] not in str(info.value)
    # The client configured before stays in place and works.
    from azjobs.storage.client import default_client

    assert default_client() is client
    queue = unique_queue("opc")
    noop.options(queue=queue).enqueue("still works")
    client.queue(queue).delete_queue()


# -- item 2: enqueue_async closes its aiohttp session ---------------------------------------------------
ASYNC_SCRIPT = textwrap.dedent("""\
    import asyncio, gc, sys
    import azjobs

    @azjobs.job(queue=sys.argv[1])
    def hello(name: str) -> None: ...

    job_id = asyncio.run(hello.enqueue_async("ada"))       # as the README shows it
    asyncio.run(hello.options(delay=3600).enqueue_async("again"))  # a second loop in the same process
    gc.collect()
    print(job_id)
""")


def test_enqueue_async_as_the_readme_shows_leaves_no_unclosed_session(connection_string, raw_queue, tmp_path):
    queue = unique_queue("opa")
    q = raw_queue(queue)
    script = tmp_path / "enqueue_async.py"
    script.write_text(ASYNC_SCRIPT)
    env = {**os.environ, "AzureWebJobsStorage": connection_string, "PYTHONPATH": str(ROOT), "PYTHONDEVMODE": "1"}
    proc = subprocess.run([sys.executable, str(script), queue], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Unclosed" not in proc.stderr, proc.stderr
    assert "ResourceWarning" not in proc.stderr, proc.stderr
    assert len(proc.stdout.strip()) == 36
    assert len(q.peek_messages(max_messages=32)) == 1  # the delayed one is not visible yet


# -- #25 item 2: one diagnosis for every command, naming the endpoint it tried ------------------------
def test_workflow_status_with_a_wrong_key_exits_2_with_the_workers_credential_line(azurite, connection_string,
                                                                                  tmp_path):
    proc, _ = azjobs_command("workflow", "status", "wf-1", connection_string=with_key(connection_string, WRONG_KEY),
                             cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_clean_line(
        proc,
        # Azurite's table service answers a wrong key 403 AuthorizationFailure (Azure: AuthenticationFailed).
        f"azjobs: storage account devstoreaccount1 at http://127.0.0.1:{azurite.table_port}/devstoreaccount1 "
        "rejected the credentials (403 AuthorizationFailure) reading workflow wf-1 from table azjobsworkflows: the "
        "AccountKey in AzureWebJobsStorage (environment variable) is not a key of account devstoreaccount1 (copy "
        "key1 or key2 from the account's Access keys)",
        WRONG_KEY, AZURITE_KEY)


def test_workflow_status_with_storage_down_names_the_table_endpoint_it_tried(tmp_path):
    queue_port, table_port = free_port(), free_port()
    proc, elapsed = azjobs_command(
        "workflow", "status", "wf-1", cwd=tmp_path,
        connection_string=azurite_connection_string(queue_port=queue_port, blob_port=queue_port,
                                                    table_port=table_port))
    assert proc.returncode == 1
    assert_one_clean_line(
        proc,
        f"azjobs: cannot reach storage account devstoreaccount1 at http://127.0.0.1:{table_port}/devstoreaccount1 "
        "(connection refused) reading workflow wf-1 from table azjobsworkflows, connection from AzureWebJobsStorage "
        "(environment variable). Is Azurite running? Start Azurite with `npx azurite --silent --location .azurite "
        f"--tablePort {table_port}` (in the azjobs repository: `npm ci`, then `npx azurite --silent --location "
        f".azurite --skipApiVersionCheck --tablePort {table_port}`)",
        AZURITE_KEY)
    assert str(queue_port) not in proc.stderr
    assert elapsed < 30, f"took {elapsed:.1f}s"


SCHEDULE_JOBS = """
import azjobs

@azjobs.job(queue="nightly-reports", schedule="0 0 2 * * *", name="nightly")
def nightly():
    pass
"""


def test_schedules_with_a_wrong_key_exits_2_with_one_diagnosis_not_the_sdks_sentence(azurite, connection_string,
                                                                                    tmp_path):
    (tmp_path / "sched_jobs.py").write_text(SCHEDULE_JOBS)
    proc, _ = azjobs_command("schedules", "-i", "sched_jobs.py", cwd=tmp_path,
                             connection_string=with_key(connection_string, WRONG_KEY))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"azjobs schedules: storage account devstoreaccount1 at http://127.0.0.1:{azurite.blob_port}/devstoreaccount1 "
        "rejected the credentials (403 AuthorizationFailure) reading the last fire of schedule nightly: the "
        "AccountKey in AzureWebJobsStorage (environment variable) is not a key of account devstoreaccount1 (copy "
        "key1 or key2 from the account's Access keys)"]
    assert "  last      unknown: 403 AuthorizationFailure\n" in proc.stdout
    assert "Server failed to authenticate" not in proc.stdout + proc.stderr
    assert WRONG_KEY not in proc.stdout + proc.stderr and AZURITE_KEY not in proc.stdout + proc.stderr


def test_status_with_a_wrong_key_exits_2_with_the_same_credential_line(azurite, connection_string, tmp_path):
    proc, _ = azjobs_command("status", "job-1", connection_string=with_key(connection_string, WRONG_KEY), cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_clean_line(
        proc,
        f"azjobs status: storage account devstoreaccount1 at http://127.0.0.1:{azurite.table_port}/devstoreaccount1 "
        "rejected the credentials (403 AuthorizationFailure) reading job job-1 from state table azjobsstate: the "
        "AccountKey in AzureWebJobsStorage (environment variable) is not a key of account devstoreaccount1 (copy "
        "key1 or key2 from the account's Access keys)",
        WRONG_KEY, AZURITE_KEY)


def test_status_with_storage_down_names_the_table_endpoint_it_tried(tmp_path):
    queue_port, table_port = free_port(), free_port()
    proc, _ = azjobs_command("status", "job-1", cwd=tmp_path, connection_string=azurite_connection_string(
        queue_port=queue_port, blob_port=queue_port, table_port=table_port))
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"azjobs status: cannot reach storage account devstoreaccount1 at "
                           f"http://127.0.0.1:{table_port}/devstoreaccount1 (connection refused) reading job job-1 "
                           "from state table azjobsstate, connection from AzureWebJobsStorage (environment variable). "
                           "Is Azurite running?"), line
    assert str(queue_port) not in line and proc.stdout == ""
