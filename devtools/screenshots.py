"""Screenshots of the dashboard's main pages for the README (``docs/dashboard-*.png``).

Run it from the repo root after ``scripts/setup``:  ``.venv/bin/python -m devtools.screenshots``

It starts Azurite on free ports and ``azjobs dashboard`` (sampling every second), enqueues
the example jobs for a while with no worker running (the queues grow), then starts an
``azjobs`` worker on ``emails`` only (that queue drains; two ``charge_card`` jobs with a
declined card land in ``emails-poison``), and photographs the pages in Debian's headless
chromium, logged in with the admin key. Job state is on, so the jobs pages have records.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools.azurite import Azurite  # noqa: E402

DOCS = ROOT / "docs"
ADMIN_KEY = "screenshots-admin-key-0123456789"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    with Azurite() as azurite:
        # Job state on everywhere (AZJOBS_STATE), so the dashboard has its jobs pages.
        env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string, "AZJOBS_DASHBOARD_KEY": ADMIN_KEY,
               "AZJOBS_STATE": "1", "PYTHONPATH": str(ROOT)}
        os.environ["AzureWebJobsStorage"] = azurite.connection_string
        import azjobs
        import example_jobs

        client = azjobs.configure(azurite.connection_string, state=True)
        for queue in ("emails", "images", "reports"):
            client.ensure_queue(queue)
        dashboard = subprocess.Popen([sys.executable, "-m", "azjobs", "dashboard", "--port", "0",
                                      "--sample-interval", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        worker = None
        try:
            line = dashboard.stdout.readline()
            match = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
            if not match:
                print(f"the dashboard did not start: {line}", file=sys.stderr)
                return 1
            base = match.group(1)
            print(line.strip())
            # The queues grow while no worker runs.
            for n in range(16):
                for k in range(3):
                    example_jobs.send_welcome_email.enqueue(f"user{n}-{k}@example.com", f"user {n}")
                example_jobs.ResizeImage.enqueue(f"photos/{n}.jpg", width=512)
                if n in (4, 11):
                    example_jobs.charge_card.enqueue(f"order-{1000 + n}", "declined")
                time.sleep(0.5)
            # A worker on `emails` only: it drains; `images` waits for a worker of its own.
            worker = subprocess.Popen([sys.executable, "-m", "azjobs", "-q", "emails", "-i", "example_jobs", "-c", "1"],
                                      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                props = client.queue("emails").get_queue_properties()
                if not props.approximate_message_count and _count(client, "emails-poison") == 2:
                    break
                time.sleep(0.5)
            time.sleep(4)  # a few samples at the bottom
            shoot(base)
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(20)
            dashboard.terminate()
            dashboard.wait(20)
    return 0


def _count(client, name: str) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return int(client.queue(name).get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0


def shoot(base: str) -> None:
    from playwright.sync_api import sync_playwright

    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
        page.goto(base + "/login")
        page.fill("#key", ADMIN_KEY)
        page.click("#login")
        page.goto(base + "/")
        page.screenshot(path=str(DOCS / "dashboard-queues.png"), full_page=True)
        page.goto(base + "/queues/emails")
        page.screenshot(path=str(DOCS / "dashboard-queue.png"), full_page=True)
        page.locator("#poison tbody tr a").first.click()
        page.screenshot(path=str(DOCS / "dashboard-poison.png"), full_page=True)
        page.click("#requeue")
        page.screenshot(path=str(DOCS / "dashboard-requeue.png"), full_page=True)
        page.goto(base + "/jobs")
        page.screenshot(path=str(DOCS / "dashboard-jobs.png"), full_page=False)
        page.goto(base + "/jobs?status=FAILED")
        page.locator("#jobs tbody tr a").first.click()
        page.screenshot(path=str(DOCS / "dashboard-job.png"), full_page=True)
        browser.close()
    for name in ("queues", "queue", "poison", "requeue", "jobs", "job"):
        print(f"wrote docs/dashboard-{name}.png")


if __name__ == "__main__":
    sys.exit(main())
