"""The dashboard end to end in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against Azurite.

``azjobs dashboard`` runs as a subprocess (the real command); one browser serves the
module and each test gets a fresh browser context (no shared cookies). Playwright's own
browser download is never used: ``scripts/setup`` installs Debian's chromium.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import azjobs
from tests.conftest import ROOT, unique_queue
from tests.integration.dashboard_support import ADMIN_KEY, count
from tests.integration.drivers import RunnerDriver, drop_queues
from tests.jobs import dashboard_jobs

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch_chromium(playwright, *extra_args: str):
    """Debian's chromium with a fresh profile (Playwright makes a temporary user-data-dir for each launch)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: the dashboard's browser tests need Debian's chromium "
                    "(scripts/setup installs it with apt-get)", pytrace=False)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + list(extra_args), headless=True)


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright):
    chromium = launch_chromium(playwright)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def dashboard(connection_string, tmp_path_factory):
    """``azjobs dashboard`` on a free port with the admin key; yields its base URL."""
    cwd = tmp_path_factory.mktemp("dashboard")
    env = dict(os.environ, AzureWebJobsStorage=connection_string, AZJOBS_DASHBOARD_KEY=ADMIN_KEY,
               PYTHONPATH=str(ROOT), AZJOBS_DASHBOARD_TABLE=f"dashsess{uuid.uuid4().hex[:16]}")
    process = subprocess.Popen([sys.executable, "-m", "azjobs", "dashboard", "--port", "0", "--sample-interval", "1"],
                               cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    match = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
    if not match:
        process.kill()
        pytest.fail(f"azjobs dashboard did not start: {line}{process.stdout.read()}", pytrace=False)
    yield match.group(1)
    process.terminate()
    process.wait(20)


@pytest.fixture
def page(browser):
    context = browser.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture
def jobs(client, test_dir):
    """A queue ``broken`` with one dead-lettered ``repaired`` job, and ``waiting`` with two jobs nobody works."""
    broken, waiting = unique_queue("brw"), unique_queue("brw")
    for queue in (broken, waiting):
        client.ensure_queue(queue)
    dashboard_jobs.repaired.options(queue=broken).enqueue("browser-job")
    driver = RunnerDriver(client, broken, azjobs.registry)
    driver.run_until(lambda: count(client, broken + "-poison") == 1)
    for n in range(2):
        dashboard_jobs.repaired.options(queue=waiting).enqueue(f"waiting-{n}")
    yield broken, waiting
    drop_queues(client, broken)
    drop_queues(client, waiting)


def row(page, queue: str):
    return page.locator(f'#queues tr[data-queue="{queue}"]')


def test_the_queues_are_listed_with_their_depths(page, dashboard, jobs):
    broken, waiting = jobs
    page.goto(dashboard + "/")
    assert row(page, broken).locator("td.depth").inner_text() == "0"
    assert row(page, broken).locator("td.poison-depth").inner_text() == "1"
    assert row(page, waiting).locator("td.depth").inner_text() == "2"
    assert row(page, waiting).locator("td.poison-depth").inner_text() == "none"
    assert page.locator(f'figure:has(a:text-is("{waiting}")) svg.chart').count() == 1


def test_a_poison_record_is_shown_with_its_traceback(page, dashboard, jobs):
    broken, _ = jobs
    page.goto(dashboard + "/")
    row(page, broken).locator("a").click()
    page.locator("#poison tbody tr a").first.click()
    traceback = page.locator("#traceback").inner_text()
    assert traceback.startswith("Traceback (most recent call last)")
    assert "azjobs.errors.Fail: browser-job: the bug is not fixed yet" in traceback
    assert '"browser-job"' in page.locator("#envelope").inner_text()


def test_an_unauthenticated_action_is_refused_and_changes_nothing(page, dashboard, client, jobs):
    broken, _ = jobs
    page.goto(f"{dashboard}/queues/{broken}/poison/purge")
    assert page.locator("form #confirm").count() == 0 and page.locator("a.button", has_text="Log in").count() == 1
    # The action itself, posted by the page without a session (same origin, a guessed token): refused.
    status = page.evaluate("""async (url) => {
        const r = await fetch(url, {method: "POST", body: new URLSearchParams({csrf: "guessed"})});
        return r.status; }""", f"{dashboard}/queues/{broken}/poison/purge")
    assert status == 403
    assert count(client, broken + "-poison") == 1


def test_requeue_from_the_browser_moves_the_job_back_and_a_worker_runs_it(page, dashboard, client, jobs, test_dir,
                                                                          connection_string):
    broken, _ = jobs
    page.goto(dashboard + "/login")
    page.fill("#key", ADMIN_KEY)
    page.click("#login")
    assert "actions allowed" in page.locator("header").inner_text()
    page.goto(f"{dashboard}/queues/{broken}")
    page.locator("#poison tbody tr a").first.click()
    page.click("#requeue")
    assert "Send poison message" in page.locator("#question").inner_text()
    page.click("#confirm")
    assert "1 requeued, 0 failed, 0 not found" in page.locator("#result").inner_text()
    assert count(client, broken + "-poison") == 0 and count(client, broken) == 1

    (test_dir / "repaired").write_text("")  # the bug is fixed: the requeued job can now succeed
    env = dict(os.environ, AzureWebJobsStorage=connection_string, AZJOBS_TEST_DIR=str(test_dir), PYTHONPATH=str(ROOT))
    worker = subprocess.run([sys.executable, "-m", "azjobs", "-i", "tests.jobs.dashboard_jobs", "-q", broken,
                             "--burst"], cwd=test_dir, env=env, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0, worker.stderr
    assert (test_dir / "browser-job.done").exists()
    page.goto(dashboard + "/")
    assert row(page, broken).locator("td.depth").inner_text() == "0"
    assert row(page, broken).locator("td.poison-depth").inner_text() == "0"


def test_a_copy_of_the_session_cookie_is_refused_after_logout(browser, page, dashboard, client, jobs):
    broken, _ = jobs
    page.goto(dashboard + "/login")
    page.fill("#key", ADMIN_KEY)
    page.click("#login")
    assert "actions allowed" in page.locator("header").inner_text()
    copied = page.context.cookies()
    assert [c["name"] for c in copied] == ["azjobs_dashboard_session"] and copied[0]["httpOnly"]
    token = page.locator('header input[name="csrf"]').get_attribute("value")
    page.click("header button")  # Log out
    assert "Log in to act" in page.locator("header").inner_text() and page.context.cookies() == []

    # Someone who copied the cookie before the logout (another browser) gets nothing from it.
    other = browser.new_context()
    try:
        other.add_cookies(copied)
        thief = other.new_page()
        thief.goto(f"{dashboard}/queues/{broken}/poison/purge")
        assert thief.locator("form #confirm").count() == 0 and thief.locator("a.button", has_text="Log in").count() == 1
        status = thief.evaluate("""async ([url, csrf]) => {
            const r = await fetch(url, {method: "POST", body: new URLSearchParams({csrf})});
            return r.status; }""", [f"{dashboard}/queues/{broken}/poison/purge", token])
        assert status == 403
    finally:
        other.close()
    assert count(client, broken + "-poison") == 1


def test_a_dns_rebinding_page_gets_400_from_every_page(playwright, dashboard, client, jobs):
    broken, _ = jobs
    port = dashboard.rsplit(":", 1)[1]
    message_id = client.queue(broken + "-poison").peek_messages()[0].id
    # The attack: attacker.example resolves to 127.0.0.1, so its page reaches the dashboard as same-origin.
    rebinding = launch_chromium(playwright, "--host-resolver-rules=MAP attacker.example 127.0.0.1")
    try:
        page = rebinding.new_page()
        for path in ("/", f"/queues/{broken}", f"/queues/{broken}/poison/{message_id}", "/login"):
            response = page.goto(f"http://attacker.example:{port}{path}")
            assert response.status == 400, path
            body = page.locator("body").inner_text()
            assert "does not answer to Host 'attacker.example:" in body and "browser-job" not in body
        # The page's own script reading the dashboard, as a rebinding page would: 400, nothing to read.
        read = page.evaluate("""async (url) => {
            const r = await fetch(url); return [r.status, await r.text()]; }""", f"/queues/{broken}/poison/{message_id}")
        assert read[0] == 400 and "browser-job" not in read[1]
        # The same browser under the dashboard's own name is served.
        assert page.goto(f"{dashboard}/queues/{broken}/poison/{message_id}").status == 200
    finally:
        rebinding.close()
