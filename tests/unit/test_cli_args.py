"""What a user sees from the ``azjobs`` command before any storage call: queue names, flags out of
range, a missing -i file, import tracebacks with -v, no jobs registered, --help, exit codes; and the
wording of storage problems (azjobs/logs.py), checked on SDK errors built here."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from azjobs.cli import worker as cli_worker
from azjobs import cli
from azjobs.storage import diagnosis as logs
from azjobs.model.registry import registry


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(argv, stdin=None):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, stdin=stdin or io.StringIO(""), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def keep_logging(restore_logging):
    """Every test here runs the CLI, which sets up logging."""


@pytest.fixture
def jobs_file(tmp_path, monkeypatch):
    """A jobs module that declares one job on "emails" (so the no-jobs check passes)."""
    path = tmp_path / "first_run_jobs.py"
    path.write_text("import azjobs\n\n@azjobs.job(queue='emails', name='first_run.hello')\n"
                    "def hello() -> None:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "first_run_jobs", raising=False)
    return path


# -- D. queue names are checked as the decorators check them -------------------------------------
@pytest.mark.parametrize("queue, line", [
    ("Emails", "azjobs: -q Emails: queue name 'Emails' is invalid: use lowercase letters, digits and single dashes, "
               "not starting or ending with a dash"),
    ("emails_eu", "azjobs: -q emails_eu: queue name 'emails_eu' is invalid: use lowercase letters, digits and single "
                  "dashes, not starting or ending with a dash"),
    ("ab", "azjobs: -q ab: queue name 'ab' has 2 characters; it must have 3 to 56 so that its '-poison' queue is "
           "valid too"),
    ("", "azjobs: -q '': a queue name cannot be empty"),
    ("%ORDERS_Q%", "azjobs: -q %ORDERS_Q%: queue name %ORDERS_Q% names app setting 'ORDERS_Q', which is not set; set "
                   "it in the environment (export ORDERS_Q=<queue>), or give the queue name itself"),
])
def test_a_bad_queue_name_exits_2_with_one_line(queue, line, monkeypatch, tmp_path):
    monkeypatch.delenv("ORDERS_Q", raising=False)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["-q", queue, "--burst"])
    assert (code, out, err) == (2, "", line + "\n")


def test_admin_names_are_checked_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(["--create", "Bad_Q"]) == (2, "", "azjobs: --create Bad_Q: queue name 'Bad_Q' is invalid: use "
                                                  "lowercase letters, digits and single dashes, not starting or "
                                                  "ending with a dash\n")
    assert run(["--delete", "x", "--yes"])[0] == 2


def test_an_app_setting_queue_name_is_resolved_from_the_environment(monkeypatch):
    monkeypatch.setenv("ORDERS_Q", "orders-eu")
    args = cli.build_parser().parse_args(["-q", "%ORDERS_Q%", "-q", "emails"])
    cli.check_queue_names(args)
    assert args.queue == ["orders-eu", "emails"]
    monkeypatch.setenv("ORDERS_Q", "Orders")
    code, _, err = run(["-q", "%ORDERS_Q%"])
    assert code == 2 and err == ("azjobs: -q %ORDERS_Q%: queue name 'Orders' is invalid: use lowercase letters, "
                                 "digits and single dashes, not starting or ending with a dash\n")


def test_the_lease_is_bounded_by_the_7_day_visibility_maximum(capsys):
    assert cli.build_parser().parse_args(["-q", "emails", "-r", "604800"]).retry == 604800
    with pytest.raises(SystemExit) as exc:
        cli.main(["-q", "emails", "-r", "604801"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "azjobs: error: argument -r/--retry: must be at most 604800 seconds (7 days, the longest a message can "
        "stay hidden), got 604801")


def test_a_poison_command_without_poison_says_so(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["list", "emails"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "azjobs: error: 'list' is a poison command: azjobs poison list emails"


# -- E. -i ---------------------------------------------------------------------------------------
def test_a_missing_include_file_says_the_file_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["-q", "emails", "-i", "./nope.py"])
    assert (code, out) == (2, "")
    assert err == f"azjobs: cannot import './nope.py': the file does not exist ({tmp_path / 'nope.py'})\n"
    assert "TypeError" not in err


def test_a_missing_module_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    code, _, err = run(["-q", "emails", "-i", "nope_jobs_xyz"])
    assert code == 2
    assert err == (f"azjobs: cannot import 'nope_jobs_xyz': no module named 'nope_jobs_xyz' in {tmp_path} or on the "
                   "Python path; give a file (-i ./jobs.py), a package directory, or run from the directory that "
                   "holds it\n")


def test_an_import_failure_shows_its_traceback_with_v(tmp_path, monkeypatch):
    (tmp_path / "broken_jobs_mod.py").write_text("import azjobs\n\nraise RuntimeError('no database configured')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "broken_jobs_mod", raising=False)
    code, _, err = run(["-q", "emails", "-i", "./broken_jobs_mod.py"])
    assert code == 1  # the module exists and failed: a failure, not a usage error
    assert err == ("azjobs: cannot import './broken_jobs_mod.py': RuntimeError: no database configured "
                   "(-v shows the traceback)\n")
    monkeypatch.delitem(sys.modules, "broken_jobs_mod", raising=False)
    code, _, err = run(["-q", "emails", "-i", "./broken_jobs_mod.py", "-v"])
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert any("broken_jobs_mod.py\", line 3, in <module>" in line for line in lines)
    assert lines[-1] == "azjobs: cannot import './broken_jobs_mod.py': RuntimeError: no database configured"


# -- F. no jobs, confirmation, exit codes ------------------------------------------------------------
def test_a_worker_with_no_jobs_registered_refuses_to_start(tmp_path, monkeypatch):
    (tmp_path / "no_jobs_here.py").write_text("VALUE = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "no_jobs_here", raising=False)
    monkeypatch.setattr(registry, "_jobs", {})
    code, out, err = run(["-q", "emails", "-i", "./no_jobs_here.py", "--burst"])
    assert (code, out) == (2, "")
    assert err == ("azjobs: no jobs are registered (importing ./no_jobs_here.py registered none), so every message "
                   "would be retried and dead-lettered. Import the module that declares your jobs with -i (e.g. "
                   "`azjobs -q emails -i myapp.jobs`), or pass --allow-no-jobs\n")
    code, _, err = run(["-q", "emails", "--burst"])
    assert code == 2 and f"nothing was imported: no -i was given and there is no function_app.py in {tmp_path}" in err


def test_allow_no_jobs_lets_the_worker_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "_jobs", {})
    seen = []
    monkeypatch.setattr(cli_worker, "_work", lambda *a: seen.append("work") or 0)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    assert run(["-q", "emails", "--allow-no-jobs"])[0] == 0 and seen == ["work"]


def test_no_at_the_prompt_prints_a_line_and_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    err = io.StringIO()
    assert not cli.confirm("empty queue emails", False, Tty("n\n"), err)
    assert err.getvalue() == ("Really empty queue emails? This cannot be undone. [y/N] "
                              "azjobs: not confirmed; did not empty queue emails\n")
    code, out, err = run(["--empty", "emails"], stdin=Tty("n\n"))
    assert (code, out) == (2, "") and err.endswith("azjobs: not confirmed; did not empty queue emails\n")
    code, out, err = run(["--delete", "emails"])  # not a terminal, no --yes
    assert (code, out, err) == (2, "", "azjobs: refusing to delete queue emails without confirmation: stdin is not "
                                       "a terminal; pass --yes\n")


# -- C. --help ---------------------------------------------------------------------------------------
def test_fetch_help_states_the_default_the_worker_uses_without_host_json(capsys):
    from azjobs.model.settings import QueueSettings
    from azjobs.runtime.worker import Worker
    from azjobs.testing import RecordingClient

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    flat = " ".join(capsys.readouterr().out.split())
    assert ("-f N, --fetch N messages per receive call, 1..32 (default: host.json batchSize when it sets one, else 32, "
            "the service's maximum; never more than -c; shared out among -p processes)") in flat
    client = RecordingClient("base64")
    assert Worker(["q-fetch"], client=client, settings=QueueSettings()).fetch == 32
    assert Worker(["q-fetch"], client=client, settings=QueueSettings(), concurrency=4).fetch == 4


def test_help_lists_every_command_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: azjobs -q QUEUE [-q QUEUE ...] [options]  |  azjobs -i PATH [options]\n"
                           "       azjobs --create NAME | --empty NAME | --delete NAME [--yes]\n"
                           "       azjobs poison {list,show,requeue,purge} QUEUE ...\n")
    commands = text.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert commands == [
        "  azjobs -q QUEUE ...    the worker: work the queues until stopped (--burst: until empty);",
        "                         azjobs -i PATH works the queues of the jobs PATH declares",
        "  azjobs --create NAME   queue administration: --create, --empty, --delete (then exit)",
        "  azjobs poison ...      dead-lettered jobs: list, show, requeue, purge (azjobs poison --help)",
        "  azjobs status JOB_ID   what became of a job (job state; azjobs state prune removes old records)",
        "  azjobs stats ...       per queue: depth, poison depth, oldest message age (azjobs stats --help)",
        "  azjobs schedules       periodic jobs: next fire times and the last recorded fire (azjobs schedules --help)",
        "  azjobs limits          concurrency and rate limits: slots held now, recent starts and throttles (--help)",
        "  azjobs dashboard ...   the web dashboard: queues, poison browser (azjobs dashboard --help)",
        "  azjobs workflow ...    workflows run by the worker: status ID, list",
        "  azjobs check           exec probe: is the worker's --heartbeat file fresh (azjobs check --help)",
    ]
    flat = " ".join(text.split())
    for flag in ("-q QUEUE, --queue QUEUE", "-c N, --concurrency N", "-f N, --fetch N", "-r SECONDS, --retry SECONDS",
                 "-i PATH, --include PATH", "-e NAME, --empty NAME", "-d NAME, --delete NAME", "--interval SECONDS",
                 "--create [NAME]", "--version", "-h, --help", "--burst-timeout SECONDS", "--allow-no-jobs",
                 "--max-jobs N", "--heartbeat PATH", "--heartbeat-interval SECONDS"):
        assert flag in flat, flag
    assert ("create queue NAME and exit; with -q and no NAME: create the worked queues if missing, then work them "
            "(a worker starts)") in flat
    assert "give up (exit 1) when storage stays unreachable this long (default 30)" in flat
    assert ("exit status: 0 done; 1 failed (storage error, queue not found, a jobs module that raised on import, a "
            "--burst that could not finish); 2 usage or configuration error (bad flags or queue names, a -i that does "
            "not exist, rejected credentials), or refused (no jobs registered, not confirmed); 3 the worker needs a "
            "restart") in flat


def test_poison_help_works(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["poison", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: azjobs poison") and "requeue" in text


# -- A/B. the wording of storage problems -----------------------------------------------------------
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class FakeConnection:
    def __init__(self, connection_string=None, queue_service_uri=None, source="AzureWebJobsStorage"):
        self.connection_string, self.queue_service_uri, self.source = connection_string, queue_service_uri, source


def http_error(status, code, cls=None):
    from azure.core.exceptions import HttpResponseError

    error = (cls or HttpResponseError)(message=f"{code} message")
    error.status_code, error.error_code = status, code
    return error


def test_storage_targets_name_account_endpoint_and_origin_never_the_key():
    azurite = logs.storage_target(FakeConnection(
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
        "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"), "AzureWebJobsStorage (environment variable)")
    assert (azurite.account, azurite.endpoint, azurite.development) == (
        "devstoreaccount1", "http://127.0.0.1:10001/devstoreaccount1", True)
    cloud = logs.storage_target(FakeConnection(f"DefaultEndpointsProtocol=https;AccountName=prodjobs;AccountKey={KEY}"))
    assert (cloud.account, cloud.endpoint, cloud.origin, cloud.development) == (
        "prodjobs", "https://prodjobs.queue.core.windows.net", "AzureWebJobsStorage (app setting)", False)
    sas = logs.storage_target(FakeConnection("QueueEndpoint=http://localhost:10001/devstoreaccount1;"
                                             "SharedAccessSignature=sv=2021&se=2020-01-01T00%3A00%3A00Z&sig=abc"))
    assert (sas.account, sas.credential, sas.sas_expiry) == ("devstoreaccount1", "sas", "2020-01-01T00:00:00Z")
    identity = logs.storage_target(FakeConnection(queue_service_uri="https://acct.queue.core.windows.net",
                                                  source="AzureWebJobsStorage__* (identity)"))
    assert (identity.account, identity.credential, identity.origin) == (
        "acct", "identity", "AzureWebJobsStorage__* (identity-based app settings)")


def test_a_credential_object_given_to_connection_is_named_in_the_rejected_credentials_line():
    """A Connection built with its own credential object: the line names that object and where it was given,
    not DefaultAzureCredential nor "the default, Azurite"."""
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ManagedIdentityCredential

    from azjobs.storage.connection import Connection

    uri = "https://acct.queue.core.windows.net"
    token = logs.storage_target(Connection(queue_service_uri=uri, credential=ManagedIdentityCredential()))
    denied = http_error(403, "AuthorizationPermissionMismatch", ClientAuthenticationError)
    line = logs.auth_problem(denied, token, "receiving from queue emails")
    assert line == (
        "storage account acct at https://acct.queue.core.windows.net refused the request (403 "
        "AuthorizationPermissionMismatch) receiving from queue emails: the identity used by the "
        "ManagedIdentityCredential given to azjobs.Connection() (ManagedIdentityCredential) lacks a role on the "
        "account: grant it Storage Queue Data Contributor"), line
    key = logs.storage_target(Connection(queue_service_uri=uri, credential=AzureNamedKeyCredential("acct", KEY)))
    assert (key.credential, key.origin) == ("key", "the AzureNamedKeyCredential given to azjobs.Connection()")
    sas = logs.storage_target(Connection(queue_service_uri=uri, credential=AzureSasCredential("sv=2021&sig=abc")))
    assert (sas.credential, sas.origin) == ("sas", "the AzureSasCredential given to azjobs.Connection()")
    assert KEY not in logs.auth_problem(http_error(403, "AuthenticationFailed", ClientAuthenticationError), key)


def test_rejected_credentials_say_which_setting_to_fix():
    from azure.core.exceptions import ClientAuthenticationError

    target = logs.StorageTarget("devstoreaccount1", "http://127.0.0.1:10001/devstoreaccount1",
                                "JobsStorage (environment variable)")
    error = http_error(403, "AuthenticationFailed", ClientAuthenticationError)
    assert logs.storage_error_kind(error) == logs.AUTH
    assert logs.auth_problem(error, target, "checking queue emails") == (
        "storage account devstoreaccount1 at http://127.0.0.1:10001/devstoreaccount1 rejected the credentials (403 "
        "AuthenticationFailed) checking queue emails: the AccountKey in JobsStorage (environment variable) is not a "
        "key of account devstoreaccount1 (copy key1 or key2 from the account's Access keys)")
    expired = logs.StorageTarget("acct", "https://acct.queue.core.windows.net", "AzureWebJobsStorage (local.settings.json)",
                                 "sas", "2020-01-01T00:00:00Z")
    assert logs.auth_problem(error, expired).endswith(
        "the SharedAccessSignature in AzureWebJobsStorage (local.settings.json) expired at 2020-01-01T00:00:00Z: "
        "make a new one")
    denied = http_error(403, "AuthorizationPermissionMismatch")
    assert logs.storage_error_kind(denied) == logs.AUTH
    assert "lacks a permission: the worker needs queue read, add, update and process (sp=raup)" in \
        logs.auth_problem(denied, expired)


def test_unreachable_storage_is_said_in_plain_words_with_how_to_start_azurite():
    from azure.core.exceptions import ServiceRequestError

    try:
        raise ServiceRequestError("HTTPConnectionPool(host='127.0.0.1', port=10001): Max retries exceeded with url: "
                                  "/devstoreaccount1/emails?comp=metadata (Caused by NewConnectionError(\"...: "
                                  "Failed to establish a new connection: [Errno 111] Connection refused\"))")
    except ServiceRequestError as exc:
        error = exc
    assert logs.storage_error_kind(error) == logs.UNREACHABLE and logs.short_reason(error) == "connection refused"
    local = logs.StorageTarget("devstoreaccount1", "http://127.0.0.1:10001/devstoreaccount1",
                               "AzureWebJobsStorage (environment variable)")
    assert logs.unreachable_problem(error, local, "for queue emails") == (
        "cannot reach storage account devstoreaccount1 at http://127.0.0.1:10001/devstoreaccount1 (connection "
        "refused) for queue emails, connection from AzureWebJobsStorage (environment variable). Is Azurite running? "
        "Start Azurite with `npx azurite --silent --location .azurite` (in the azjobs repository: `npm ci`, then "
        "`npx azurite --silent --location .azurite --skipApiVersionCheck`)")
    other_port = logs.StorageTarget("devstoreaccount1", "http://127.0.0.1:41234/devstoreaccount1", "x")
    assert "`npx azurite --silent --location .azurite --queuePort 41234`" in logs.unreachable_problem(error, other_port)
    cloud = logs.StorageTarget("prodjobs", "https://prodjobs.queue.core.windows.net", "AzureWebJobsStorage (app setting)")
    text = logs.unreachable_problem(error, cloud)
    assert "Azurite" not in text and text.endswith("Check the account name and endpoint in that setting, and the network")
    assert "Max retries" not in text and "NewConnectionError" not in text


def test_a_job_line_of_a_redelivery_shows_its_dequeue_count():
    stream = io.StringIO()
    logs.setup(0, "text", stream)
    logger = logging.getLogger("azjobs.test_cli_args")
    logger.info("job x 1 succeeded in 0.001s (attempt 1, queue q)", extra={"action": "job_succeeded", "dequeue_count": 2})
    logger.info("job x 2 succeeded in 0.001s (attempt 1, queue q)", extra={"action": "job_succeeded", "dequeue_count": 1})
    first, second = stream.getvalue().splitlines()
    assert first.endswith("job x 1 succeeded in 0.001s (attempt 1, queue q) [dequeue count 2: a redelivery]")
    assert second.endswith("job x 2 succeeded in 0.001s (attempt 1, queue q)")


def test_the_connection_origin_says_where_the_setting_was_found(tmp_path, monkeypatch):
    from azjobs.storage.connection import resolve_connection

    monkeypatch.chdir(tmp_path)
    for name in ("AzureWebJobsStorage", "JobsStorage", "JobsStorage__accountName"):
        monkeypatch.delenv(name, raising=False)
    connection = resolve_connection("AzureWebJobsStorage")
    assert cli.connection_origin("AzureWebJobsStorage", connection) == "the default, Azurite (AzureWebJobsStorage is not set)"
    (tmp_path / "local.settings.json").write_text('{"Values": {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}}')
    connection = resolve_connection("AzureWebJobsStorage")
    assert cli.connection_origin("AzureWebJobsStorage", connection) == (
        "AzureWebJobsStorage (local.settings.json, UseDevelopmentStorage=true)")
    monkeypatch.setenv("JobsStorage", f"DefaultEndpointsProtocol=https;AccountName=prodjobs;AccountKey={KEY}")
    connection = resolve_connection("JobsStorage")
    assert cli.connection_origin("JobsStorage", connection) == "JobsStorage (environment variable)"
    monkeypatch.delenv("JobsStorage")
    monkeypatch.setenv("JobsStorage__accountName", "prodjobs")
    connection = resolve_connection("JobsStorage")
    assert cli.connection_origin("JobsStorage", connection) == (
        "JobsStorage__accountName (environment variable, identity-based)")
    target = logs.storage_target(connection, cli.connection_origin("JobsStorage", connection))
    assert (target.account, target.endpoint, target.credential) == (
        "prodjobs", "https://prodjobs.queue.core.windows.net", "identity")


@pytest.mark.parametrize("typed,meant", [("stat", "stats"), ("statu", "status"), ("workflows", "workflow"),
                                         ("dashbaord", "dashboard"), ("schedule", "schedules"), ("poisn", "poison")])
def test_a_mistyped_subcommand_gets_did_you_mean_and_exit_2(typed, meant):
    out, err = io.StringIO(), io.StringIO()
    assert cli.main([typed, "x"], stdout=out, stderr=err) == 2
    assert (out.getvalue(), err.getvalue()) == (
        "", f"azjobs: {typed!r} is not a command; did you mean `azjobs {meant}`? (see azjobs --help)\n")


def test_a_poison_command_without_poison_keeps_its_own_hint(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["list", "emails"], stdout=io.StringIO(), stderr=io.StringIO())
    assert exc.value.code == 2
    assert "'list' is a poison command: azjobs poison list emails" in capsys.readouterr().err
