"""The main job, end to end: Azurite, queues, example jobs enqueued, worked by the local runner, a report.

Run it with ``scripts/demo`` (which sets up the venv and Azurite first).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from devtools.azurite import Azurite

ROOT = Path(__file__).resolve().parent.parent
QUEUES = ["emails", "images"]


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def azjobs_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "azjobs", *args]
    print("$ azjobs " + " ".join(args), flush=True)
    return subprocess.run(cmd, env=env, cwd=ROOT, check=False)


def main() -> int:
    step("starting Azurite (npm package pinned in package.json) on free ports")
    with Azurite() as azurite:
        env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string, "PYTHONUNBUFFERED": "1"}
        os.environ["AzureWebJobsStorage"] = azurite.connection_string
        print(f"queue endpoint http://127.0.0.1:{azurite.queue_port}/devstoreaccount1")

        step("creating the queues")
        for queue in QUEUES:
            if azjobs_cli("--create", queue, env=env).returncode != 0:
                return 1

        step("enqueueing the example jobs (example_jobs.py)")
        import azjobs
        import example_jobs

        azjobs.configure(azurite.connection_string)
        ids = [
            example_jobs.send_welcome_email.enqueue("ada@example.com", name="Ada"),
            example_jobs.send_welcome_email.enqueue("grace@example.com", name="Grace"),
            example_jobs.ResizeImage.enqueue("cat.png", width=128),
            example_jobs.notify_slack.enqueue("general", "azjobs demo is running"),
            example_jobs.send_welcome_email.enqueue_in(timedelta(seconds=1), "late@example.com", name="Late"),
            example_jobs.sync_crm_contact.enqueue(42),
            example_jobs.charge_card.enqueue("order-7", card="visa"),
            example_jobs.charge_card.enqueue("order-8", card="declined"),
        ]
        bulk = example_jobs.ResizeImage.enqueue_many([(f"photo-{i}.jpg",) for i in range(5)])
        ids += bulk.ids
        # Job state (Table Storage) for this one: its record says what became of it.
        tracked = example_jobs.send_welcome_email.options(track=True).enqueue("linus@example.com", name="Linus")
        ids.append(tracked)
        print(f"enqueued {len(ids)} jobs (one delayed by 1 s, one flaky, one that gives up, five with enqueue_many)")

        step("working them with the local runner until the queues are empty")
        import time

        time.sleep(1.2)  # let the delayed one become visible
        args = ["-i", "example_jobs", "--burst", "-c", "4"]
        for queue in QUEUES:
            args += ["-q", queue]
        if azjobs_cli(*args, env=env).returncode != 0:
            return 1

        step("the flaky job failed once; its retry is due 1 s later: work the queues again")
        time.sleep(1.5)
        if azjobs_cli(*args, env=env).returncode != 0:
            return 1

        step("what happened")
        client = azjobs.default_client()
        for queue in QUEUES:
            props = client.queue(queue).get_queue_properties()
            print(f"queue {queue:8s}: {props.approximate_message_count} message(s) left")
        print("\nThe job that gave up is in emails-poison, with its error and traceback:")
        azjobs_cli("poison", "list", "emails", env=env)
        print("\nOne job was enqueued with job state on (track=True); its record:")
        azjobs_cli("status", tracked, env=env)
        print(f"\nDone: {len(ids)} jobs enqueued and worked. Try `scripts/test` next.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
