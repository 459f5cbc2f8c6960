"""The dashboard's jobs pages over the job state store (Table Storage on Azurite), over real HTTP."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest

import azjobs
from azjobs.hosting import executor as hosted_executor
from azjobs.dashboard import create_app
from azjobs.model.settings import QueueSettings
from azjobs.model import tracking as tracker
from tests.integration.dashboard_support import Browserless, Served
from tests.integration.drivers import drop_queues

SETTINGS = QueueSettings(max_dequeue_count=5, visibility_timeout=timedelta(0))


def double(n: int) -> dict:
    return {"doubled": n * 2}


def broken(key: str) -> None:
    raise KeyError(f"no such thing: {key}")


def echo(text: str) -> str:
    return text


def registry_for(queue: str) -> azjobs.Registry:
    reg = azjobs.Registry()
    azjobs.job(queue=queue, registry=reg, name="dash.double")(double)
    azjobs.job(queue=queue, registry=reg, name="dash.broken", retry=azjobs.NoRetry())(broken)
    return reg


@pytest.fixture
def worked(connection_string, queue_name):
    """Three jobs that succeeded and one that failed, with job state on in a table of this test's own."""
    table = f"dash{uuid.uuid4().hex[:16]}"
    client = azjobs.configure(connection_string, state=True, state_table=table)
    reg = registry_for(queue_name)
    ok = [reg.get("dash.double").options(queue=queue_name).enqueue(n) for n in range(3)]
    failed = reg.get("dash.broken").options(queue=queue_name).enqueue("thing")
    from azjobs.runtime.worker import drain

    drain(client, [queue_name], executor=hosted_executor(registry=reg, client=client, settings=SETTINGS), fetch=8, lease_s=30)
    yield client, table, ok, failed
    try:
        client.connection.table_service().delete_table(table)
    except Exception:
        pass
    drop_queues(client, queue_name)
    client.close()
    tracker._process_state = None


def test_the_jobs_page_lists_recent_jobs_with_their_status_and_finished_per_minute(worked, queue_name):
    client, table, ok, failed = worked
    app = create_app(client.connection, queues=[queue_name], state=True, state_table=table, background_sampling=False)
    with Served(app) as server:
        browser = Browserless(server.port)
        assert 'href="/jobs">Jobs</a>' in browser.get("/").text
        page = browser.get("/jobs").text
        rows = dict(re.findall(r'<tr data-job="([^"]+)">.*?class="status [^"]*">([A-Z_]+)<', page))
        assert rows == {**{job_id: "SUCCESSFUL" for job_id in ok}, failed: "FAILED"}
        bars = re.findall(r"<title>(\d+) (successful|failed)</title>", page)
        assert sum(int(n) for n, kind in bars if kind == "successful") == 3
        assert sum(int(n) for n, kind in bars if kind == "failed") == 1
        only_failed = browser.get("/jobs?status=FAILED").text
        assert re.findall(r'<tr data-job="([^"]+)">', only_failed) == [failed]
        assert browser.get("/jobs?status=NOPE").status == 404
        assert browser.get(f"/jobs?id={ok[0]}").status == 303


def test_a_job_page_shows_the_return_value_or_the_traceback_of_each_failed_attempt(worked, queue_name):
    client, table, ok, failed = worked
    app = create_app(client.connection, queues=[queue_name], state=True, state_table=table, background_sampling=False)
    with Served(app) as server:
        browser = Browserless(server.port)
        good = browser.get(f"/jobs/{ok[2]}").text
        assert re.search(r'<pre id="return-value">\{\s*&quot;doubled&quot;: 4\s*\}</pre>', good)
        assert "SUCCESSFUL" in good and "dash.double" in good
        bad = browser.get(f"/jobs/{failed}").text
        traceback = re.search(r'<pre class="traceback">(.*?)</pre>', bad, re.S).group(1)
        assert "Traceback (most recent call last)" in traceback and "KeyError" in traceback
        assert "no such thing: thing" in bad and f'href="/queues/{queue_name}"' in bad
        missing = browser.get(f"/jobs/{uuid.uuid4()}")
        assert missing.status == 404 and "no record of job" in missing.text


def test_without_the_state_store_there_are_no_jobs_pages(client, queue_name):
    client.ensure_queue(queue_name)
    try:
        with Served(create_app(client.connection, queues=[queue_name], background_sampling=False)) as server:
            browser = Browserless(server.port)
            assert 'href="/jobs"' not in browser.get("/").text
            assert browser.get("/jobs").status == 404
    finally:
        drop_queues(client, queue_name)


def test_arguments_over_a_table_property_say_not_kept_in_status_and_on_the_job_page(worked, queue_name):
    import io

    from azjobs import cli

    client, table, _, _ = worked
    big = "😀" * 20_000  # 20,000 characters, 40,000 UTF-16 units: over a Table string property
    reg = azjobs.Registry()
    azjobs.job(queue=queue_name, registry=reg, name="dash.echo")(echo)
    job_id = reg.get("dash.echo").options(queue=queue_name).enqueue(big)  # READY, its arguments not in the record
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["status", job_id, "--table", table], stdout=out, stderr=err) == 0, err.getvalue()
    assert ("\narguments     not kept: over 32K characters (a Table string property holds 32K UTF-16 units)\n"
            in out.getvalue())
    out = io.StringIO()
    assert cli.main(["status", job_id, "--table", table, "--json"], stdout=out, stderr=err) == 0
    assert azjobs.result(job_id).arguments_note == ("not kept: over 32K characters (a Table string property holds "
                                                    "32K UTF-16 units)")
    assert '"arguments_note": "not kept: over 32K characters' in out.getvalue()
    app = create_app(client.connection, queues=[queue_name], state=True, state_table=table, background_sampling=False)
    with Served(app) as server:
        page = Browserless(server.port).get(f"/jobs/{job_id}").text
    assert ('<pre id="arguments">not kept: over 32K characters (a Table string property holds 32K UTF-16 '
            'units)</pre>') in page
