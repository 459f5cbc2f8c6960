"""``azjobs poison list|show|requeue|purge`` against Azurite."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys

import pytest

from azjobs import poison_cli
from azjobs.core import Outcome
from azjobs.message import Envelope
from azjobs.poison import PoisonRecord
from tests.conftest import ROOT, unique_queue
from tests.integration.drivers import RunnerDriver, drop_queues
from tests.jobs import failure_jobs as jobs


@pytest.fixture
def setup(client):
    queue = unique_queue("pcli")
    client.ensure_queue(queue)
    driver = RunnerDriver(client, queue, jobs.registry_for(queue))
    yield driver
    drop_queues(client, queue)


def run(client, *argv, stdin=None) -> tuple[int, str]:
    out = io.StringIO()
    code = poison_cli.main(list(argv), client=client, out=out, stdin=stdin)
    return code, out.getvalue()


def poison_some(driver, tokens) -> None:
    for t in tokens:
        jobs.gives_up.options(queue=driver.queue).enqueue(t)
    driver.run_until(lambda: all(jobs.calls(t) for t in tokens))


def test_list_shows_errors_as_table_and_json(setup):
    poison_some(setup, ["list-a", "list-b"])
    code, text = run(setup.client, "list", setup.queue)
    assert code == 0
    lines = text.strip().splitlines()
    assert lines[0].split()[:4] == ["ID", "JOB", "REASON", "ATTEMPTS"]
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

    code, text = run(setup.client, "purge", setup.queue, stdin=Pipe("y\n"))
    assert code == 2 and "--yes" in text
    assert len(setup.client.queue(setup.queue + "-poison").peek_messages()) == 1
    code, _ = run(setup.client, "purge", setup.queue, stdin=Terminal("n\n"))
    assert code == 2 and len(setup.client.queue(setup.queue + "-poison").peek_messages()) == 1
    code, text = run(setup.client, "purge", setup.queue, stdin=Terminal("y\n"))
    assert code == 0 and "purged 1" in text
    assert setup.client.queue(setup.queue + "-poison").peek_messages() == []


def test_module_entry_point(setup, connection_string):
    poison_some(setup, ["module-a"])
    env = {**os.environ, "AzureWebJobsStorage": connection_string}
    proc = subprocess.run([sys.executable, "-m", "azjobs.poison_cli", "list", setup.queue, "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["envelope"]["args"] == ["module-a"]
    assert connection_string.split("AccountKey=")[1].split(";")[0] not in proc.stdout + proc.stderr


def test_routed_through_the_azjobs_command(setup, capsys):
    from azjobs import cli

    poison_some(setup, ["routed-a"])
    assert cli.main(["poison", "list", setup.queue, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["envelope"]["args"] == ["routed-a"]
