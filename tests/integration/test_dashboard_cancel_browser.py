"""The job page's Cancel button in a real headless Chromium against Azurite (``azjobs dashboard --state``).

The pattern of test_dashboard_browser.py: the real command as a subprocess, Debian's chromium, a fresh
browser context per test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest

import azjobs
from azjobs.model import tracking
from azjobs.state.record import JobStatus
from tests.conftest import ROOT
from tests.integration.dashboard_support import ADMIN_KEY, count
from tests.integration.drivers import RunnerDriver, drop_queues
from tests.integration.test_dashboard_browser import launch_chromium


def noted(key: str) -> str:
    raise AssertionError(f"a cancelled job ran: {key}")


@pytest.fixture(scope="module")
def state_table():
    return f"dc{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="module")
def dashboard(connection_string, tmp_path_factory, state_table):
    cwd = tmp_path_factory.mktemp("dashboard")
    env = dict(os.environ, AzureWebJobsStorage=connection_string, AZJOBS_DASHBOARD_KEY=ADMIN_KEY,
               PYTHONPATH=str(ROOT), AZJOBS_DASHBOARD_TABLE=f"dashsess{uuid.uuid4().hex[:16]}")
    process = subprocess.Popen([sys.executable, "-m", "azjobs", "dashboard", "--port", "0", "--sample-interval", "1",
                                "--state", "--state-table", state_table],
                               cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    match = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
    if not match:
        process.kill()
        pytest.fail(f"azjobs dashboard did not start: {line}{process.stdout.read()}", pytrace=False)
    yield match.group(1)
    process.terminate()
    process.wait(20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        chromium = launch_chromium(driver)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture
def waiting(connection_string, state_table, queue_name):
    """A tracked job nobody works yet, in the dashboard's state table."""
    client = azjobs.configure(connection_string, state=True, state_table=state_table)
    reg = azjobs.Registry()
    azjobs.job(queue=queue_name, registry=reg, name="dc.noted")(noted)
    job_id = reg.get("dc.noted").options(queue=queue_name).enqueue("from-the-browser")
    yield client, reg, job_id
    drop_queues(client, queue_name)
    client.close()
    tracking._process_state = None


def test_the_cancel_button_needs_a_session_then_cancels_and_no_worker_runs_the_job(page, dashboard, waiting,
                                                                                 queue_name):
    client, reg, job_id = waiting
    page.goto(f"{dashboard}/jobs/{job_id}")
    assert page.locator("#status").inner_text() == "READY"
    page.click("#cancel")
    assert page.locator("form #confirm").count() == 0  # no session: the form is not offered
    status = page.evaluate("""async (url) => {
        const r = await fetch(url, {method: "POST", body: new URLSearchParams({csrf: "guessed"})});
        return r.status; }""", f"{dashboard}/jobs/{job_id}/cancel")
    assert status == 403 and azjobs.result(job_id).status is JobStatus.READY

    page.goto(dashboard + "/login")
    page.fill("#key", ADMIN_KEY)
    page.click("#login")
    page.goto(f"{dashboard}/jobs/{job_id}")
    page.click("#cancel")
    assert "Not started, it never runs" in page.locator("#question").inner_text()
    page.click("#confirm")
    assert f"{job_id} CANCELLED: it does not run" in page.locator("#result").inner_text()
    assert azjobs.result(job_id).status is JobStatus.CANCELLED
    page.goto(f"{dashboard}/jobs/{job_id}")
    assert page.locator("#status").inner_text() == "CANCELLED" and page.locator("#cancel").count() == 0

    driver = RunnerDriver(client, queue_name, reg)
    driver.run_until(lambda: count(client, queue_name) == 0 and len(driver.results) == 1)
    assert driver.results[0].outcome.value == "cancelled"  # deleted without running (the job would raise)
