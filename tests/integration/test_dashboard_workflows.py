"""The dashboard's workflow pages over a real workflow history on Azurite, over HTTP and by the Functions blueprint.

The workflows are run by the real worker (``Worker(..., workflows=queue)``) with their own
step queue, workflows queue and history table (``AZJOBS_WORKFLOWS_TABLE``), as in
tests/integration/test_workflows.py.
"""

from __future__ import annotations

import html
import re
import uuid
from datetime import timedelta

import pytest

import azjobs
import azjobs.dashboard
from azjobs import QueueSettings
from azjobs.storage.connection import AZURITE_KEY
from azjobs.dashboard import create_app
from azjobs.runtime.worker import Worker
from azjobs.workflows import WorkflowFailed
from tests.conftest import unique_queue
from tests.integration.dashboard_support import Browserless, Served
from tests.integration.test_dashboard_functions import HOST, call, indexed, the_dashboard
from tests.integration.worker_support import Background
from tests.jobs import workflow_jobs as wf

BROKEN = "ValueError: broken step got 2"
SIGNATURE = "c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
SAS_URL = f"https://acct.blob.core.windows.net/c/b?sv=2024-08-04&sp=r&sig={SIGNATURE}"
FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.5))


@pytest.fixture(scope="module")
def ran(connection_string, tmp_path_factory):
    """Workflows run once for this module by the worker: ``ok`` (add(1, 2) then double: output 6), ``bad`` (add,
    then a step that always fails) and ``leaky`` (a step returning a SAS URL, unredacted in the history); their
    history in a table of this module's own (``AZJOBS_WORKFLOWS_TABLE`` while the module runs)."""
    from azure.storage.queue import QueueClient

    table = f"wfdash{uuid.uuid4().hex[:16]}"
    steps, queue = unique_queue("wfds"), unique_queue("wfdq")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AZJOBS_WORKFLOWS_TABLE", table)
        env.setenv("AZJOBS_TEST_DIR", str(tmp_path_factory.mktemp("wfdash")))
        client = azjobs.configure(connection_string)
        client.ensure_queue(steps)
        on = {"queue": steps}
        ok = azjobs.chain(wf.add.options(**on).s(1, 2), wf.double.options(**on).s()).enqueue(queue=queue)
        bad = azjobs.chain(wf.add.options(**on).s(1, 1), wf.broken.options(**on).s(key="br")).enqueue(queue=queue)
        leaky = azjobs.chain(wf.add.options(**on).s(SAS_URL[:20], SAS_URL[20:], key="leak")).enqueue(queue=queue)
        try:
            with Background(Worker([steps], client=client, settings=FAST, lease=2, workflows=queue)):
                assert ok.result(timeout=30) == 6
                with pytest.raises(WorkflowFailed):
                    bad.result(timeout=30)
                assert leaky.result(timeout=30) == SAS_URL
            yield ok.id, bad.id, table, leaky.id
        finally:
            for name in (steps, queue, f"{queue}-poison", f"{steps}-poison"):
                try:
                    QueueClient.from_connection_string(connection_string, name).delete_queue()
                except Exception:
                    pass
            try:
                client.connection.table_service().delete_table(table)
            except Exception:
                pass
            client.close()


def steps_of(page: str) -> list[tuple[str, str, str]]:
    """(job, state, result or error) of each row of the steps table."""
    rows = re.findall(r'<tr data-task="\d+">.*?<td class="job">(.*?)</td><td class="state[^"]*">(.*?)</td>'
                      r'<td class="num">\d+</td><td><pre class="[^"]+">(.*?)</pre></td></tr>', page, re.S)
    return [(job, state, html.unescape(detail).strip()) for job, state, detail in rows]


def attempts_of(page: str) -> list[tuple[str, int]]:
    """(job, attempts) of each row of the steps table."""
    return [(job, int(n)) for job, n in re.findall(
        r'<td class="job">(.*?)</td><td class="state[^"]*">.*?</td><td class="num">(\d+)</td>', page, re.S)]


def test_a_workflow_page_shows_its_steps_results_and_output_and_a_failed_ones_error(client, ran):
    ok, bad, table, _ = ran
    with Served(create_app(client.connection, background_sampling=False)) as server:
        browser = Browserless(server.port)
        assert 'href="/workflows">Workflows</a>' in browser.get("/").text
        done = browser.get(f"/workflows/{ok}")
        assert done.status == 200
        assert re.search(r'id="status"><span class="status [^"]*">Completed<', done.text)
        assert steps_of(done.text) == [("wf.add", "done", "3"), ("wf.double", "done", "6")]
        assert "2 done, 0 running, 0 failed" in done.text and f"<dd>{table}</dd>" in done.text
        assert re.search(r'<pre id="output">6</pre>', done.text)
        failed = browser.get(f"/workflows/{bad}")
        assert failed.status == 200
        assert re.search(r'id="status"><span class="status [^"]*">Failed<', failed.text)
        # wf.broken has max_retries=1: one step, two attempts, each failed; the poison-record activity is not a step.
        assert steps_of(failed.text) == [("wf.add", "done", "2"), ("wf.broken", "failed", BROKEN)]
        assert attempts_of(failed.text) == [("wf.add", 1), ("wf.broken", 2)]
        assert "1 done, 0 running, 1 failed (3 attempts)" in failed.text and 'id="output"' not in failed.text
        assert "<dt>Retry waits</dt><dd>2</dd>" in failed.text and "<dt>Sleeps</dt><dd>0</dd>" in failed.text
        assert re.search(r"<dt>Created</dt><dd>20\d\d-.*?Z</dd><dt>Finished</dt><dd>20\d\d-.*?Z</dd>", failed.text)
        assert BROKEN in re.search(r'<pre id="error"[^>]*>(.*?)</pre>', failed.text, re.S).group(1)


def test_the_lookup_box_redirects_to_the_workflow_and_an_unknown_id_is_a_404(client, monkeypatch):
    table = f"wfdash{uuid.uuid4().hex[:16]}"  # the worker creates it; never here: the dashboard only reads
    monkeypatch.setenv("AZJOBS_WORKFLOWS_TABLE", table)
    ok = str(uuid.uuid4())
    with Served(create_app(client.connection, background_sampling=False)) as server:
        browser = Browserless(server.port)
        form = browser.get("/workflows")
        assert form.status == 200 and 'id="workflow-id"' in form.text
        found = browser.get(f"/workflows?id=+{ok}+")
        assert found.status == 303 and found.headers["location"] == f"/workflows/{ok}"
        missing = browser.get("/workflows/no-such-workflow")
        assert missing.status == 404
        text = html.unescape(missing.text)
        assert f"no workflow 'no-such-workflow' in table '{table}': it was never enqueued" in text
        impossible = browser.get("/workflows/order%2342")  # '#': no workflow can have it; nothing is asked of storage
        assert impossible.status == 404 and "no workflow can have the id" in impossible.text


def test_a_credential_in_a_step_result_and_the_output_is_redacted_on_the_workflow_page(client, ran):
    *_, leaky = ran
    with Served(create_app(client.connection, background_sampling=False)) as server:
        page = Browserless(server.port).get(f"/workflows/{leaky}")
    assert page.status == 200 and "Completed<" in page.text
    shown = '"' + SAS_URL.replace(SIGNATURE, "***") + '"'
    assert steps_of(page.text) == [("wf.add", "done", shown)]
    assert html.unescape(re.search(r'<pre id="output">(.*?)</pre>', page.text, re.S).group(1)) == shown
    assert SIGNATURE not in page.text and SIGNATURE not in html.unescape(page.text)


def test_unreachable_storage_is_a_503_on_the_workflow_page(client):
    from azjobs.storage.connection import azurite_connection_string
    from devtools.azurite import free_port

    nowhere = azurite_connection_string(queue_port=free_port(), blob_port=free_port(), table_port=free_port())
    with Served(create_app(nowhere, background_sampling=False)) as server:
        reply = Browserless(server.port).get("/workflows/some-workflow")
    assert reply.status == 503 and "http://127.0.0.1:" in reply.text
    assert "Traceback" not in reply.text and AZURITE_KEY not in reply.text


def test_the_functions_blueprint_serves_the_workflow_page(ran, monkeypatch):
    monkeypatch.setenv("WEBSITE_HOSTNAME", HOST)
    _, bad, _, _ = ran
    function = the_dashboard(indexed(azjobs.dashboard.blueprint()))
    page = call(function, "GET", f"/api/dashboard/workflows/{bad}")
    assert page.status_code == 200
    text = page.get_body().decode()
    assert 'href="/api/dashboard/workflows">Workflows</a>' in text
    assert steps_of(text) == [("wf.add", "done", "2"), ("wf.broken", "failed", BROKEN)]
    assert call(function, "GET", "/api/dashboard/workflows/no-such-workflow").status_code == 404


def test_requeueing_a_failed_workflows_record_from_the_dashboard_is_refused(client):
    from azjobs.workflows.orchestrator import write_failure_record
    from tests.integration.dashboard_support import ADMIN_KEY

    queue = unique_queue("wfdr")
    client.ensure_queue(queue)
    write_failure_record(client, queue, {"workflow": "wf-r", "step": {"path": "0", "job": "wf.broken"},
                                         "error": "ValueError: x"})
    [target] = [m.id for m in client.queue(f"{queue}-poison").peek_messages()]
    try:
        app = create_app(client.connection, admin_key=ADMIN_KEY, queues=[queue], background_sampling=False)
        with Served(app) as server:
            operator = Browserless(server.port)
            operator.login()
            done = operator.post(f"/queues/{queue}/poison/{target}/requeue", {"csrf": operator.csrf()})
        assert done.status == 409, done.text  # before: 502, "the record holds neither an envelope nor a body"
        assert "it is the failure record of workflow wf-r" in html.unescape(done.text)
        assert [m.id for m in client.queue(f"{queue}-poison").peek_messages()] == [target]
    finally:
        for name in (queue, f"{queue}-poison"):
            client.queue(name).delete_queue()


def test_the_workflows_page_lists_recent_workflows_newest_first_with_filters(client, ran, monkeypatch):
    """#25 item 7: recent workflows are found on the dashboard without knowing their ids."""
    ok, bad, table, leaky = ran
    monkeypatch.setenv("AZJOBS_WORKFLOWS_TABLE", table)
    with Served(create_app(client.connection, background_sampling=False)) as server:
        browser = Browserless(server.port)
        page = browser.get("/workflows")
        assert page.status == 200 and 'id="workflow-id"' in page.text  # the lookup box stays
        rows = re.findall(r'<tr data-workflow="([^"]+)"><td><a href="/workflows/([^"]+)">.*?class="status [^"]*">'
                          r'(\w+)</span></td><td>(20[^<]+Z)</td><td>(20[^<]+Z)</td></tr>', page.text)
        assert {(row[0], row[2]) for row in rows} == {(ok, "Completed"), (bad, "Failed"), (leaky, "Completed")}
        assert all(row[0] == row[1] for row in rows)
        assert [row[3] for row in rows] == sorted((row[3] for row in rows), reverse=True)  # newest first
        failed = browser.get("/workflows?status=Failed&since=1h")
        assert re.findall(r'<tr data-workflow="([^"]+)">', failed.text) == [bad]
        assert '<a href="/workflows?since=1h"><b>all</b></a>' not in failed.text  # Failed is the chosen filter
        assert "<b>Failed</b>" in failed.text and "<b>last 1h</b>" in failed.text
        assert browser.get("/workflows?status=Nope").status == 404
        assert browser.get("/workflows?since=forever").status == 404
