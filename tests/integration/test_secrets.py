"""Credentials never reach what azjobs writes: a real SAS against Azurite, on both paths.

The secret is a real account SAS for Azurite, used the way it really appears: azjobs runs
on a ``SharedAccessSignature=`` connection string, and a job fails through a
SAS-authenticated SDK client whose error text (urllib3's "Max retries exceeded with url:
/...?...&sig=...") carries the signature. Each test also asserts that the URL is there with
the redaction marker where the secret was (``?***`` where the whole token was recognised as
a remembered secret, ``sig=***`` where the signature parameter was), so it proves the
signature-bearing text really went through redaction rather than never being there.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import traceback
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, unquote

import pytest

import azjobs
import azjobs.storage.client
from azjobs.model.outcome import Outcome
from azjobs.execution.executor import Redeliver
from azjobs.model.poison_record import PoisonRecord
from azjobs.model.retry import NoRetry
from azjobs.model.settings import QueueSettings
from devtools.azurite import ACCOUNT, KEY, free_port
from tests.functions_support import (
    HostAction,
    RecordingExecutor,
    fresh_app,
    host_like_settle,
    invoke,
    queue_message_from,
    receive_one,
)
from tests.integration.worker_support import ROOT
from tests.jobs import secret_jobs

SAS_SETTING = "AZJOBS_TEST_SAS_STORAGE"  # an app setting holding the SAS connection string
UNREDACTED_SIG = re.compile(r"(?i)\bsig=(?!\*\*\*)[^&;\s'\"<>)]+")
# The SDK's URL with the SAS hidden: the whole token (a remembered secret) or its signature.
REDACTED_URL = re.compile(r"Max retries exceeded with url: /\S+\?(\*\*\*|\S*\bsig=\*\*\*)")


# -- the secret ---------------------------------------------------------------------------
def account_sas(expiry: timedelta) -> str:
    from azure.storage.queue import AccountSasPermissions, ResourceTypes, generate_account_sas

    return generate_account_sas(
        ACCOUNT, KEY,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, add=True, update=True, process=True, delete=True, list=True,
                                         create=True, write=True),
        expiry=datetime.now(timezone.utc) + expiry,
    )


@pytest.fixture(scope="module")
def sas_token(azurite) -> str:
    """The SAS azjobs runs on."""
    return account_sas(timedelta(hours=1))


@pytest.fixture(scope="module")
def other_sas_token(azurite) -> str:
    """Another valid SAS that azjobs is never given (no Connection is built from it)."""
    return account_sas(timedelta(hours=2))


@pytest.fixture(scope="module")
def sas_connection_string(azurite, sas_token) -> str:
    return (f"QueueEndpoint=http://127.0.0.1:{azurite.queue_port}/{ACCOUNT};"
            f"BlobEndpoint=http://127.0.0.1:{azurite.blob_port}/{ACCOUNT};"
            f"SharedAccessSignature={sas_token}")


@pytest.fixture
def sas_client(sas_connection_string):
    """An azjobs Client authenticated only by the SAS."""
    client = azjobs.Client(sas_connection_string, settings=QueueSettings())
    yield client
    client.close()


def signature_of(token: str) -> str:
    """The ``sig`` value of a SAS token, as it travels (URL-encoded)."""
    (sig,) = [value for name, _, value in (pair.partition("=") for pair in token.split("&")) if name == "sig"]
    return sig


def secret_forms(token: str) -> list[str]:
    """Every form the SAS secret can take in text: the token, its signature encoded and decoded."""
    sig = signature_of(token)
    decoded = unquote(sig)
    return sorted({token, sig, decoded, quote(decoded, safe=""), quote(decoded, safe="").lower(), KEY},
                  key=len, reverse=True)


def assert_no_secret(text: str | None, token: str | tuple[str, ...], where: str) -> None:
    text = text or ""
    tokens = (token,) if isinstance(token, str) else token
    for form in [form for t in tokens for form in secret_forms(t)]:
        at = text.find(form)
        assert at < 0, f"{where} leaks the SAS secret: ...{text[max(0, at - 120):at + len(form) + 20]}..."
    match = UNREDACTED_SIG.search(text)
    assert match is None, f"{where} has an unredacted signature: ...{text[max(0, match.start() - 120):match.end()]}"


def poison_records(raw_queue, queue: str) -> list[tuple[str, PoisonRecord]]:
    """(decoded text, record) of each message in ``<queue>-poison``."""
    poison = raw_queue(f"{queue}-poison")
    return [(base64.b64decode(m.content).decode("utf-8"), PoisonRecord.decode(m.content, "base64", queue))
            for m in poison.peek_messages(max_messages=32)]


def azjobs_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "azjobs" or r.name.startswith("azjobs.")]


def assert_redacted_url(text: str | None, where: str) -> None:
    """``text`` holds the SDK's URL, with the marker where the SAS was."""
    assert REDACTED_URL.search(text or ""), f"{where} lacks the redacted SAS URL: {text!r}"


def assert_logs_clean(caplog, token: str | tuple[str, ...]) -> None:
    records = azjobs_records(caplog)
    assert records, "no azjobs log record was captured"
    for record in records:
        where = f"log record {record.name} {getattr(record, 'action', '')!r}"
        assert_no_secret(record.getMessage(), token, where)
        assert_no_secret(record.exc_text, token, f"{where} (exc_text)")
        # What a handler writes: logging.Formatter uses the (redacted) exc_text cache.
        assert_no_secret(logging.Formatter().format(record), token, f"{where} (formatted)")
    assert_no_secret(caplog.text, token, "caplog.text")


# -- the secret is real ----------------------------------------------------------------------
def test_the_sas_connection_string_works_against_azurite(sas_connection_string, sas_token, sas_client, raw_queue,
                                                         queue_name):
    from azure.storage.queue import QueueClient

    assert "AccountKey" not in sas_connection_string and signature_of(sas_token)
    raw_queue(queue_name)  # cleanup
    sdk = QueueClient.from_connection_string(sas_connection_string, queue_name)
    sdk.create_queue()
    sdk.send_message("through the SAS")
    assert [m.content for m in sdk.receive_messages(max_messages=1)] == ["through the SAS"]
    # azjobs itself on the SAS: an enqueue, read back with the account key.
    reg = azjobs.Registry()
    job = azjobs.job(queue=queue_name, registry=reg, name="secret.plain_failure")(secret_jobs.plain_failure)
    job_id = job.options(client=sas_client).enqueue("x")
    (message,) = list(raw_queue(queue_name).receive_messages(max_messages=32))
    assert json.loads(base64.b64decode(message.content))["id"] == job_id


def test_the_probe_error_really_carries_the_signature(sas_connection_string, sas_token):
    """The premise of the tests below: the SDK error text holds ``sig=<signature>`` unredacted."""
    from azure.core.exceptions import ServiceRequestError

    with pytest.raises(ServiceRequestError) as info:
        secret_jobs.probe(sas_connection_string, free_port())
    text = str(info.value)
    assert "Max retries exceeded with url" in text
    sig = signature_of(sas_token)
    assert any(f"sig={form}" in text for form in (sig, quote(unquote(sig), safe=""))), text


# -- worker path --------------------------------------------------------------------------
def run_worker(queue: str, sas_connection_string: str, cwd, *, include: str | None = "tests.jobs.secret_jobs",
               **extra_env: str) -> subprocess.CompletedProcess:
    """``python -m azjobs -q QUEUE [-i INCLUDE] --burst --log-format json -v`` on the SAS connection."""
    return subprocess.run(
        [sys.executable, "-m", "azjobs", "-q", queue, *(["-i", include] if include else []), "--burst",
         "--log-format", "json", "-v"],
        cwd=cwd, env={**os.environ, "AzureWebJobsStorage": sas_connection_string, "PYTHONPATH": str(ROOT),
                      **extra_env},
        capture_output=True, text=True, timeout=120,
    )


def test_worker_on_a_sas_connection_redacts_the_poison_record_and_its_output(sas_connection_string, sas_token,
                                                                             sas_client, raw_queue, queue_name,
                                                                             tmp_path):
    raw_queue(queue_name)
    raw_queue(f"{queue_name}-poison")
    sas_client.ensure_queue(queue_name)
    call = secret_jobs.FAIL_THROUGH_SAS.options(queue=queue_name, client=sas_client, max_retries=0)
    job_id = call.enqueue(free_port())

    process = run_worker(queue_name, sas_connection_string, tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]

    ((text, record),) = poison_records(raw_queue, queue_name)
    assert record.envelope_id == job_id and record.job == "secret.fail_through_sas"
    assert record.error.type == "azure.core.exceptions.ServiceRequestError"
    assert_redacted_url(record.error.message, "poison record error.message")
    assert_redacted_url(record.error.traceback, "poison record error.traceback")
    assert_no_secret(record.error.message, sas_token, "poison record error.message")
    assert_no_secret(record.error.traceback, sas_token, "poison record error.traceback")
    assert_no_secret(text, sas_token, "poison record (whole)")

    assert_no_secret(process.stdout + process.stderr, sas_token, "worker stdout/stderr")
    events = [json.loads(line) for line in process.stderr.splitlines() if line.startswith("{")]
    (failed,) = [e for e in events if e.get("action") == "job_failed"]
    assert_redacted_url(failed["message"], "job_failed log line")
    assert_redacted_url(failed.get("exc_info"), "job_failed traceback (-v)")
    (dead,) = [e for e in events if e.get("action") == "job_dead_lettered"]
    assert_redacted_url(dead["message"], "job_dead_lettered log line")


@pytest.mark.parametrize("include", ["-i", "function_app.py"])
def test_worker_import_error_is_redacted(include, sas_connection_string, sas_token, queue_name, tmp_path):
    """A jobs module whose import fails through the SAS client (it touches storage when imported):
    the worker's "cannot import" error line, for ``-i MODULE`` and for ./function_app.py."""
    if include == "function_app.py":
        (tmp_path / "function_app.py").write_text("import tests.jobs.secret_jobs  # noqa: F401\n")
    process = run_worker(queue_name, sas_connection_string, tmp_path,
                         include="tests.jobs.secret_jobs" if include == "-i" else None,
                         AZJOBS_TEST_IMPORT_PROBE_PORT=str(free_port()))
    assert process.returncode == 1
    assert "azjobs: cannot import" in process.stderr
    assert "Max retries exceeded with url" in process.stderr  # the signature-bearing text is there
    assert_no_secret(process.stdout + process.stderr, sas_token, "worker stdout/stderr")


# -- Functions path -------------------------------------------------------------------------
@pytest.mark.parametrize("executor_from, job_sas", [
    ("explicit_client", "azjobs_own"),  # an Executor on a Client built from the SAS connection string
    ("connection_setting", "azjobs_own"),  # the Executor the blueprint builds from the named app setting
    ("explicit_client", "unregistered"),  # the job's client uses a SAS azjobs never saw: only sig= patterns
])
def test_functions_handler_on_a_sas_connection_redacts_job_errors(executor_from, job_sas, sas_connection_string,
                                                                  sas_token, other_sas_token, sas_client,
                                                                  raw_queue, queue_name, caplog, monkeypatch,
                                                                  tmp_path):
    monkeypatch.setenv(SAS_SETTING, sas_connection_string)
    job_setting = SAS_SETTING
    if job_sas == "unregistered":
        job_setting = "AZJOBS_TEST_OTHER_SAS"
        monkeypatch.setenv(job_setting, sas_connection_string.replace(sas_token, other_sas_token))
    reg = azjobs.Registry()
    job = azjobs.job(queue=queue_name, registry=reg, name="secret.fail_through_sas",
                     retry=NoRetry())(secret_jobs.fail_through_sas)
    if executor_from == "explicit_client":
        executor = RecordingExecutor(registry=reg, client=sas_client, settings=QueueSettings())
        app = fresh_app(registry=reg, executor=executor)
    else:
        host_json = tmp_path / "host.json"
        host_json.write_text(json.dumps({"version": "2.0"}))
        app = fresh_app(registry=reg, connection=SAS_SETTING, host_json=host_json)
    qc = raw_queue(queue_name)
    raw_queue(f"{queue_name}-poison")
    job_id = job.options(client=sas_client).enqueue(free_port(), setting=job_setting)

    caplog.set_level(logging.DEBUG, logger="azjobs")
    delivery = host_like_settle(app, qc, receive_one(qc))
    assert delivery.action is HostAction.DELETED, delivery.error
    if executor_from == "explicit_client":
        assert [r.outcome for r in executor.results] == [Outcome.DEAD_LETTERED]
    else:
        assert any(getattr(r, "action", None) == "functions_executor_ready" for r in azjobs_records(caplog))

    tokens = (sas_token, other_sas_token)
    (failed,) = [r for r in azjobs_records(caplog) if getattr(r, "action", None) == "job_failed"]
    assert_redacted_url(failed.getMessage(), "job_failed log record")
    assert_redacted_url(failed.exc_text, "job_failed log record's traceback (DEBUG)")
    assert_logs_clean(caplog, tokens)

    ((text, record),) = poison_records(raw_queue, queue_name)
    assert record.envelope_id == job_id and record.error.type == "azure.core.exceptions.ServiceRequestError"
    assert_redacted_url(record.error.message, "poison record error.message")
    assert_redacted_url(record.error.traceback, "poison record error.traceback")
    if job_sas == "unregistered":  # not a remembered value: hidden by the sig= pattern alone
        assert "sig=***" in record.error.message and "&sp=rwdlacup&" in record.error.message
    assert_no_secret(record.error.message, tokens, "poison record error.message")
    assert_no_secret(record.error.traceback, tokens, "poison record error.traceback")
    assert_no_secret(text, tokens, "poison record (whole)")


def release_through_an_unreachable_poison_queue(sas_connection_string, sas_client, raw_queue, queue_name, caplog,
                                                monkeypatch) -> Redeliver:
    """Run a failing NoRetry job through the handler with an executor whose client's queue endpoint is
    down: the poison record cannot be written, the handler logs and raises Redeliver. Its text is
    azjobs' own SDK error naming the poison queue's URL with the SAS."""
    from azure.storage.queue import ExponentialRetry

    # No SDK back-off (1 + 3 + 5 s) before the write fails; the error text is the same.
    monkeypatch.setattr(azjobs.storage.client, "sdk_retry", lambda: ExponentialRetry(retry_total=0))
    # A requests session of the user's (it wins over azjobs' transport): its errors name the URL, SAS and
    # all, which azjobs' transport never writes into an error.
    import requests

    monkeypatch.setattr(azjobs.storage.connection, "transport_options",
                        lambda kwargs, pool=0: {**kwargs, "session": requests.Session()})
    reg = azjobs.Registry()
    job = azjobs.job(queue=queue_name, registry=reg, name="secret.plain_failure",
                     retry=NoRetry())(secret_jobs.plain_failure)
    unreachable = azjobs.Client(secret_jobs.connection_at_port(sas_connection_string, free_port()),
                                settings=QueueSettings())
    try:
        executor = RecordingExecutor(registry=reg, client=unreachable, settings=QueueSettings())
        app = fresh_app(registry=reg, executor=executor)
        qc = raw_queue(queue_name)
        raw_queue(f"{queue_name}-poison")
        job.options(client=sas_client).enqueue("y")
        message = receive_one(qc)

        caplog.set_level(logging.DEBUG, logger="azjobs")
        with pytest.raises(Redeliver) as info:
            invoke(app, queue_name, queue_message_from(message))
    finally:
        unreachable.close()
    return info.value


def test_functions_handler_redacts_the_released_for_redelivery_line(sas_connection_string, sas_token, sas_client,
                                                                    raw_queue, queue_name, caplog, monkeypatch):
    error = release_through_an_unreachable_poison_queue(sas_connection_string, sas_client, raw_queue, queue_name,
                                                        caplog, monkeypatch)
    (released,) = [r for r in azjobs_records(caplog) if getattr(r, "action", None) == "functions_message_released"]
    line = released.getMessage()
    assert released.name == "azjobs.functions" and "released for redelivery" in line
    assert_redacted_url(line, "the handler's 'released for redelivery' line")  # the SDK text is there
    assert_no_secret(line, sas_token, "the handler's 'released for redelivery' line")
    assert_no_secret(str(error), sas_token, "the Redeliver raised to the host (its message)")
    assert_logs_clean(caplog, sas_token)


def test_functions_handler_error_given_to_the_host_is_redacted(sas_connection_string, sas_token, sas_client,
                                                               raw_queue, queue_name, caplog, monkeypatch):
    """What the host is told when the handler raises Redeliver: the Python worker serializes the
    exception with its whole chain (azure-functions-python-worker,
    workers/azure_functions_worker/utils/tracing.py marshall_exception_trace:
    ``traceback.format_exception(type(exc), exc, exc.__traceback__)``, "includes __cause__ and
    __context__"), and the host logs that as the invocation's failure."""
    error = release_through_an_unreachable_poison_queue(sas_connection_string, sas_client, raw_queue, queue_name,
                                                        caplog, monkeypatch)
    message = f"{type(error).__name__}: {error}"
    stack_trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    assert_redacted_url(message, "the host's failure message")
    assert "Max retries exceeded with url" in stack_trace  # the chained SDK error is in it
    assert_no_secret(message, sas_token, "the host's failure message")
    assert_no_secret(stack_trace, sas_token, "the stack trace the host gets (Redeliver with its chain)")
