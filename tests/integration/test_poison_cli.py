"""``azjobs poison list|show|requeue|purge`` against Azurite."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from azjobs.cli import poison as poison_cli
from azjobs.storage.client import Client
from azjobs.model.outcome import Outcome
from azjobs.model.envelope import Envelope
from azjobs.model.poison_record import PoisonRecord
from azjobs.model.settings import QueueSettings
from tests.conftest import ROOT, unique_queue
from tests.integration.drivers import RunnerDriver, drop_queues
from tests.jobs import failure_jobs as jobs


@pytest.fixture
def state_table_for_poison(client, monkeypatch):
    """Job state on for this test's jobs, in a table of its own."""
    import uuid

    table = f"pst{uuid.uuid4().hex[:16]}"
    client.state, client.state_table = True, table
    yield table
    try:
        client.connection.table_service().delete_table(table)
    except Exception:
        pass


@pytest.fixture
def setup(client):
    queue = unique_queue("pcli")
    client.ensure_queue(queue)
    driver = RunnerDriver(client, queue, jobs.registry_for(queue))
    yield driver
    drop_queues(client, queue)


def run(client, *argv, stdin=None) -> tuple[int, str]:
    code, out, _ = run_full(client, *argv, stdin=stdin)
    return code, out


def run_full(client, *argv, stdin=None) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``azjobs poison ARGV``."""
    out, err = io.StringIO(), io.StringIO()
    code = poison_cli.main(list(argv), client=client, out=out, err=err, stdin=stdin)
    return code, out.getvalue(), err.getvalue()


def poison_some(driver, tokens) -> None:
    for t in tokens:
        jobs.gives_up.options(queue=driver.queue).enqueue(t)
    driver.run_until(lambda: all(jobs.calls(t) for t in tokens))


def test_list_shows_errors_as_table_and_json(setup):
    poison_some(setup, ["list-a", "list-b"])
    code, text = run(setup.client, "list", setup.queue)
    assert code == 0
    lines = text.strip().splitlines()
    assert lines[0].split()[:5] == ["JOB", "ID", "JOB", "REASON", "ATTEMPTS"]
    assert len(lines) == 3 and all("azjobs.errors.Fail: cannot ever work" in line for line in lines[1:])
    code, text = run(setup.client, "list", setup.queue, "--json")
    data = json.loads(text)
    assert sorted(d["envelope"]["args"][0] for d in data) == ["list-a", "list-b"]
    assert all(d["error"]["reason"] == "fail" and "Traceback" in d["error"]["traceback"] for d in data)


def test_show_prints_the_traceback(setup):
    poison_some(setup, ["show-a"])
    [message] = setup.client.queue(setup.queue + "-poison").peek_messages()
    code, text = run(setup.client, "show", setup.queue, message.id)
    assert code == 0
    assert "Traceback (most recent call last)" in text and "cannot ever work for show-a" in text
    assert "reason          fail" in text
    record = PoisonRecord.decode(message.content)
    code, by_job_id = run(setup.client, "show", setup.queue, record.envelope.id)
    assert code == 0 and message.id in by_job_id
    assert run(setup.client, "show", setup.queue, "does-not-exist")[0] == 1


def test_requeue_one_brings_it_back_and_it_runs(setup):
    poison_some(setup, ["rq-a", "rq-b"])
    records = {PoisonRecord.decode(m.content).envelope.args[0]: m.id
               for m in setup.client.queue(setup.queue + "-poison").peek_messages(max_messages=32)}
    code, text = run(setup.client, "requeue", setup.queue, "--id", records["rq-a"])
    assert code == 0 and "1 requeued" in text
    [back] = setup.client.queue(setup.queue).peek_messages()
    envelope = Envelope.decode(back.content)
    assert envelope.args == ("rq-a",) and envelope.attempt == 1 and envelope.first_failed_at is None
    remaining = [PoisonRecord.decode(m.content).envelope.args[0]
                 for m in setup.client.queue(setup.queue + "-poison").peek_messages(max_messages=32)]
    assert remaining == ["rq-b"]
    setup.run_until(lambda: len(jobs.calls("rq-a")) == 2)  # it ran again (and failed again: Fail)
    # Requeueing an id that is no longer there is reported, not an error that loses anything.
    code, text = run(setup.client, "requeue", setup.queue, "--id", "no-such-id")
    assert code == 1 and "not found: no-such-id" in text


class _CrashAfterSend(poison_cli.PoisonQueue):
    def _delete(self, message):
        raise RuntimeError("crash between the send and the delete")


def test_requeue_sends_before_deleting_so_a_crash_duplicates_rather_than_loses(setup):
    poison_some(setup, ["crash-a"])
    report = _CrashAfterSend(setup.client, setup.queue).requeue(None)
    assert report.failed and not report.requeued
    # The copy is on the queue and the poison message is still there: nothing lost.
    assert len(setup.client.queue(setup.queue).peek_messages()) == 1
    assert len(setup.client.queue(setup.queue + "-poison").peek_messages()) == 1
    # Repeating the replay is safe.
    assert run(setup.client, "requeue", setup.queue, "--all")[0] == 0
    assert setup.client.queue(setup.queue + "-poison").peek_messages() == []
    assert len(setup.client.queue(setup.queue).peek_messages(max_messages=32)) == 2


def test_more_than_32_messages_list_and_requeue_all(setup):
    poison_client = setup.client.queue(setup.queue + "-poison")
    setup.client.ensure_queue(setup.queue + "-poison")
    tokens = [f"many-{i}" for i in range(40)]
    for t in tokens:
        envelope = Envelope.build(jobs.record.name, (t,), {}, queue=setup.queue, attempt=5)
        poison_client.send_message(envelope.encode())  # as the host poisons: the bare body
    code, text = run(setup.client, "list", setup.queue, "--json", "--limit", "100")
    listed = json.loads(text)
    assert len(listed) == 40 and all(d["from_host"] and d["error"]["reason"] == "host_poison" for d in listed)
    assert run(setup.client, "list", setup.queue, "--json")[1].count('"poison_message_id"') == 40
    code, text = run(setup.client, "requeue", setup.queue, "--all")
    assert code == 0 and "40 requeued" in text
    setup.run_until(lambda: all(jobs.calls(t) for t in tokens))
    assert all(r.outcome is Outcome.SUCCEEDED and r.envelope.attempt == 1 for r in setup.results)
    assert poison_client.peek_messages() == []


def test_host_poisoned_garbage_lists_and_requeues_verbatim(setup):
    setup.client.ensure_queue(setup.queue + "-poison")
    poison_client = setup.client.queue(setup.queue + "-poison")
    poison_client.send_message("%%% not base64 %%%")
    poison_client.send_message(base64.b64encode(b"{not json").decode())
    code, text = run(setup.client, "list", setup.queue, "--json")
    assert sorted(d["error"]["reason"] for d in json.loads(text)) == ["not_base64", "not_json"]
    assert run(setup.client, "requeue", setup.queue, "--all")[0] == 0
    bodies = sorted(m.content for m in setup.client.queue(setup.queue).peek_messages(max_messages=32))
    assert bodies == sorted(["%%% not base64 %%%", base64.b64encode(b"{not json").decode()])


def test_purge_needs_confirmation(setup):
    poison_some(setup, ["purge-a"])

    class Pipe(io.StringIO):
        def isatty(self):
            return False

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    poison = setup.queue + "-poison"
    code, text, err = run_full(setup.client, "purge", setup.queue, stdin=Pipe("y\n"))
    assert (code, text) == (2, "")
    assert err == "azjobs poison: refusing to purge without confirmation: stdin is not a terminal (pass --yes)\n"
    assert len(setup.client.queue(poison).peek_messages()) == 1
    # Answering N is a refusal like the missing --yes: exit 2, and it says so.
    code, text, err = run_full(setup.client, "purge", setup.queue, stdin=Terminal("n\n"))
    assert (code, text) == (2, "")
    assert err == f"delete about 1 message(s) from {poison}? [y/N] azjobs poison: purge cancelled, nothing deleted " \
                  f"from {poison}\n"
    assert len(setup.client.queue(poison).peek_messages()) == 1
    code, text = run(setup.client, "purge", setup.queue, stdin=Terminal("y\n"))
    assert code == 0 and text == f"purged 1 message(s) from {poison}\n"
    assert setup.client.queue(setup.queue + "-poison").peek_messages() == []


def test_module_entry_point(setup, connection_string):
    poison_some(setup, ["module-a"])
    env = {**os.environ, "AzureWebJobsStorage": connection_string}
    proc = subprocess.run([sys.executable, "-m", "azjobs.cli.poison", "list", setup.queue, "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["envelope"]["args"] == ["module-a"]
    assert connection_string.split("AccountKey=")[1].split(";")[0] not in proc.stdout + proc.stderr


def test_routed_through_the_azjobs_command(setup, capsys):
    from azjobs import cli

    poison_some(setup, ["routed-a"])
    assert cli.main(["poison", "list", setup.queue, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["envelope"]["args"] == ["routed-a"]


# -- one job, four ids ----------------------------------------------------------------------------------
def test_show_accepts_every_id_of_a_job(setup):
    poison_some(setup, ["ids-a"])
    [message] = setup.client.queue(setup.queue + "-poison").peek_messages()
    record = PoisonRecord.decode(message.content)
    ids = {"poison message id": message.id, "record id": record.id, "job id": record.envelope.id,
           "failed message id": record.message_id}
    assert all(ids.values()) and len(set(ids.values())) == 4, ids
    for what, wanted in ids.items():
        for form in (wanted, wanted[:8]):
            code, text, err = run_full(setup.client, "show", setup.queue, form)
            assert (code, err) == (0, ""), f"show by {what} ({form})"
            # The job id first: what `azjobs status` and every log line use.
            assert text.startswith(f"job id          {record.envelope.id}\njob             {record.job}\n"), what
    assert (f"poison message  {message.id}\nrecord          {record.id}\nfailed message  {record.message_id}\n"
            in text)  # show prints the four ids
    code, text, err = run_full(setup.client, "requeue", setup.queue, "--id", record.message_id)
    assert code == 0 and text.startswith(
        f"requeued job {record.envelope.id} (poison message {message.id}) to {setup.queue}\n")


def test_poison_list_shows_the_job_id_that_status_takes(state_table_for_poison, setup):
    """#25 item 1: the id `poison list` shows is the job id, and `azjobs status <that id>` finds the job."""
    from azjobs import cli

    poison_some(setup, ["ids-list"])
    [message] = setup.client.queue(setup.queue + "-poison").peek_messages()
    record = PoisonRecord.decode(message.content)
    code, text = run(setup.client, "list", setup.queue)
    assert code == 0
    header, row = text.strip().splitlines()
    assert header.startswith("JOB ID") and row.split()[:2] == [record.envelope.id, "tests.jobs.failure_jobs.gives_up"]
    assert message.id not in text
    shown_id = row.split()[0]
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["status", shown_id, "--table", state_table_for_poison], stdout=out, stderr=err) == 0, err.getvalue()
    assert f"id            {record.envelope.id}\n" in out.getvalue() and "status        FAILED\n" in out.getvalue()
    # Given another of the job's ids, status says which id it takes.
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["status", message.id, "--table", state_table_for_poison], stdout=out, stderr=err) == 1
    assert err.getvalue().endswith(
        f". It takes the job id ({message.id!r} was given): what enqueue returned, the JOB ID column of `azjobs "
        "poison list`, the job_id of a log line; a message id, a poison message id or a record id is not one\n")


def test_a_queue_that_does_not_exist_is_not_an_empty_queue(setup):
    missing = unique_queue("nosuch")
    expected = (f"azjobs poison: queue {missing!r} does not exist, nor '{missing}-poison' (in devstoreaccount1): "
                "check the name\n")
    for argv in (["list", missing], ["list", missing, "--json"], ["show", missing, "0123456789"],
                 ["requeue", missing, "--all"], ["purge", missing, "--yes"]):
        assert run_full(setup.client, *argv) == (1, "", expected), argv
    # A job queue that exists but never poisoned anything is empty, not missing.
    assert run_full(setup.client, "list", setup.queue) == (0, f"{setup.queue}-poison: empty\n", "")
    assert run_full(setup.client, "list", setup.queue, "--json") == (0, "[]\n", "")
    assert run_full(setup.client, "purge", setup.queue, "--yes") == (
        0, f"purged 0 message(s) from {setup.queue}-poison\n", "")


# -- exit status: 0 done, 1 failed or not found, 2 usage error or refused ------------------------------
def test_exit_status_convention(setup):
    poison_some(setup, ["exit-a"])
    assert run_full(setup.client, "show", setup.queue, "does-not-exist") == (
        1, "", f"azjobs poison: no poison message 'does-not-exist' in {setup.queue}-poison\n")
    code, text, _ = run_full(setup.client, "requeue", setup.queue, "--id", "does-not-exist")
    assert code == 1 and text.endswith("0 requeued, 0 failed, 1 not found\n")
    assert run_full(setup.client, "list", "Not_A_Queue") == (
        2, "", "azjobs poison: queue name 'Not_A_Queue' is invalid: use lowercase letters, digits and single "
               "dashes, not starting or ending with a dash\n")
    assert run_full(setup.client, "list", setup.queue + "-poison") == (
        2, "", f"azjobs poison: give the job queue, not its poison queue: `{setup.queue}` "
               f"(the tooling reads {setup.queue}-poison)\n")
    with pytest.raises(SystemExit) as info:
        run_full(setup.client, "requeue", setup.queue)  # neither --id nor --all
    assert info.value.code == 2
    code, text, err = run_full(setup.client, "list", setup.queue, "--host-json", str(ROOT / "no-such-host.json"))
    assert (code, text) == (2, "") and err.startswith("azjobs poison: cannot read host.json at ")


# -- producers and workers that disagree on messageEncoding ------------------------------------------------
NONE = QueueSettings(max_dequeue_count=5, visibility_timeout=timedelta(0), message_encoding="none")
HINT_BASE64_READ_AS_NONE = ("the body is base64-encoded JSON: this looks like a message sent with "
                            "messageEncoding=base64, read with messageEncoding=none; producers and workers must agree "
                            "(host.json extensions.queues.messageEncoding, azjobs.configure(message_encoding=...))")
HINT_NONE_READ_AS_BASE64 = ("the body is plain JSON: this looks like a message sent with messageEncoding=none, read "
                            "with messageEncoding=base64; producers and workers must agree (host.json "
                            "extensions.queues.messageEncoding, azjobs.configure(message_encoding=...))")


def host_json(tmp_path, encoding: str) -> str:
    path = tmp_path / f"host-{encoding}.json"
    path.write_text(json.dumps({"version": "2.0", "extensions": {"queues": {"messageEncoding": encoding}}}))
    return str(path)


def only_message(client, queue):
    [message] = client.queue(queue).peek_messages(max_messages=32)
    return message


def test_a_worker_reading_none_hints_at_a_base64_producer_and_requeue_reencodes(setup, tmp_path):
    job_id = jobs.record.options(queue=setup.queue).enqueue("enc-a", 1)  # base64, the default
    worker = RunnerDriver(setup.client, setup.queue, setup.registry, settings=NONE)
    worker.run_until(lambda: bool(worker.results))
    [result] = worker.results
    assert result.extra["reason"] == "not_json"
    record = PoisonRecord.decode(only_message(setup.client, setup.queue + "-poison").content, "none")
    assert record.error.message == f"message body is not JSON: Expecting value: line 1 column 1 (char 0); " \
                                   f"{HINT_BASE64_READ_AS_NONE}"

    # Read with the default (base64) the record is still a record, with a note about the encoding.
    code, text, err = run_full(setup.client, "list", setup.queue, "--json")
    [listed] = json.loads(text)
    assert code == 0 and listed["error"]["reason"] == "not_json" and listed["poison_message_encoding"] == "none"
    assert err.startswith(f"azjobs poison: note: some messages in {setup.queue}-poison are written with "
                          "messageEncoding=none, but this command uses messageEncoding=base64")
    # With the worker's host.json there is nothing to note.
    code, text, err = run_full(setup.client, "list", setup.queue, "--host-json", host_json(tmp_path, "none"))
    assert code == 0 and err == "" and "not_json" in text

    # Requeue sends the job back, never the record: re-encoded as the producers' base64.
    code, text, err = run_full(setup.client, "requeue", setup.queue, "--all", "--host-json",
                               host_json(tmp_path, "base64"))
    assert code == 0, err
    assert "(re-encoded with messageEncoding=base64: it failed as not_json, sent with another messageEncoding)" in text
    back = Envelope.decode(only_message(setup.client, setup.queue).content, "base64")
    assert (back.id, back.args, back.attempt) == (job_id, ("enc-a", 1), 1)
    setup.run_until(lambda: bool(jobs.calls("enc-a")))  # a base64 worker runs it


def test_a_worker_reading_base64_hints_at_a_plain_json_producer(setup, connection_string):
    plain = Client(connection_string, message_encoding="none")
    job_id = jobs.record.options(queue=setup.queue, client=plain).enqueue("enc-b", 2)
    setup.run_until(lambda: bool(setup.results))
    assert setup.results[0].extra["reason"] == "not_base64"
    record = PoisonRecord.decode(only_message(setup.client, setup.queue + "-poison").content)
    # binascii's reason in the middle is worded differently on Python 3.10; azjobs' text around it is not.
    assert record.error.message.startswith("message body is not valid base64: ")
    assert record.error.message.endswith(f"; {HINT_NONE_READ_AS_BASE64}")
    code, text, err = run_full(setup.client, "requeue", setup.queue, "--all")
    assert code == 0 and err == ""
    back = Envelope.decode(only_message(setup.client, setup.queue).content, "base64")
    assert (back.id, back.args) == (job_id, ("enc-b", 2))
    setup.run_until(lambda: bool(jobs.calls("enc-b")))


def test_requeue_reads_records_of_a_none_worker_with_host_json(setup, connection_string, tmp_path):
    plain = Client(connection_string, message_encoding="none")
    worker = RunnerDriver(plain, setup.queue, setup.registry, settings=NONE)
    job_id = jobs.gives_up.options(queue=setup.queue, client=plain).enqueue("enc-c")
    worker.run_until(lambda: bool(jobs.calls("enc-c")))
    poisoned = only_message(setup.client, setup.queue + "-poison")
    assert json.loads(poisoned.content)["azjobs_poison"] == 1  # a plain-JSON record

    code, text, err = run_full(setup.client, "show", setup.queue, job_id, "--host-json", host_json(tmp_path, "none"))
    assert code == 0 and err == "" and "reason          fail" in text and "cannot ever work for enc-c" in text
    code, text, err = run_full(setup.client, "requeue", setup.queue, "--id", job_id, "--host-json",
                               host_json(tmp_path, "none"))
    assert code == 0 and err == "" and text.endswith("1 requeued, 0 failed, 0 not found\n")
    back = only_message(setup.client, setup.queue)
    assert Envelope.decode(back.content, "none").id == job_id  # plain JSON, as the worker reads it
    worker.run_until(lambda: len(jobs.calls("enc-c")) == 2)


@pytest.mark.parametrize("cli_encoding", ["base64", "none"])
def test_requeue_never_sends_a_record_back_as_a_job(setup, cli_encoding):
    # A record written by a worker whose encoding differs from the command's used to be misread as a
    # bare body and sent back as it was: the record itself on the job queue.
    worker_encoding = "none" if cli_encoding == "base64" else "base64"
    writer = Client(setup.client.connection, message_encoding=worker_encoding)
    worker = RunnerDriver(writer, setup.queue, setup.registry,
                          settings=QueueSettings(max_dequeue_count=5, message_encoding=worker_encoding))
    job_id = jobs.gives_up.options(queue=setup.queue, client=writer).enqueue("enc-d")
    worker.run_until(lambda: bool(jobs.calls("enc-d")))
    reader = Client(setup.client.connection, message_encoding=cli_encoding)
    code, text, err = run_full(reader, "requeue", setup.queue, "--all")
    assert code == 0 and "1 requeued" in text
    content = only_message(setup.client, setup.queue).content
    assert "azjobs_poison" not in content  # the record as plain JSON
    assert "azjobs_poison" not in base64.b64decode(content + "==").decode("utf-8", "replace")  # or base64
    assert Envelope.decode(content, cli_encoding).id == job_id
    assert f"written with messageEncoding={worker_encoding}" in err


def test_a_record_sent_to_the_job_queue_is_unwrapped_on_requeue(setup):
    poison_some(setup, ["nested-a"])
    poison_queue = setup.client.queue(setup.queue + "-poison")
    [record_message] = list(poison_queue.receive_messages(max_messages=1))
    inner = PoisonRecord.decode(record_message.content)
    # What the old requeue did: the record itself back on the job queue, where it is poisoned again.
    poison_queue.delete_message(record_message)
    setup.client.send_text(setup.queue, record_message.content)
    setup.run_until(lambda: len(setup.results) == 2)
    assert setup.results[-1].extra["reason"] == "not_envelope"
    outer = PoisonRecord.decode(only_message(setup.client, setup.queue + "-poison").content)
    assert outer.error.message.startswith("the body is an azjobs poison record, not a job message")
    code, text, err = run_full(setup.client, "requeue", setup.queue, "--all")
    assert code == 0 and err == ""
    assert "(the job inside a poison record that had been sent back as a job)" in text
    back = Envelope.decode(only_message(setup.client, setup.queue).content)
    assert back.id == inner.envelope.id and back.args == ("nested-a",) and back.attempt == 1


def _to_closed_pipe(connection_string: str, *argv: str) -> subprocess.CompletedProcess:
    """``azjobs ARGV | head`` where head has already gone: stdout is a pipe whose reader is closed."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "azjobs", *argv], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60, cwd=ROOT,
                              env={**os.environ, "AzureWebJobsStorage": connection_string, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write_end)


def test_poison_list_and_show_into_a_closed_pipe_stop_quietly_with_status_0(setup, connection_string):
    poison_some(setup, ["pipe-a"])
    [message] = setup.client.queue(setup.queue + "-poison").peek_messages()
    for argv in (("poison", "list", setup.queue), ("poison", "show", setup.queue, message.id)):
        done = _to_closed_pipe(connection_string, *argv)
        assert (done.returncode, done.stderr) == (0, ""), argv
