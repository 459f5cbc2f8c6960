"""Example jobs for the demo and the function app: one function-style, one class-style, one async."""

from __future__ import annotations

import asyncio
import logging

import azjobs

log = logging.getLogger("example_jobs")


@azjobs.job(queue="emails")
def send_welcome_email(address: str, name: str = "there") -> str:
    """Pretend to send an email."""
    message = f"Hello {name}! Welcome aboard. (to: {address})"
    print(f"[send_welcome_email] {message}", flush=True)
    return message


class ResizeImage(azjobs.Job):
    """A class-style job, like the seed's worker classes."""

    queue = "images"
    max_retries = 2

    def perform(self, blob_name: str, width: int = 256) -> None:
        print(f"[ResizeImage] resized {blob_name} to {width}px wide", flush=True)


@azjobs.job(queue="emails")
async def notify_slack(channel: str, text: str) -> None:
    """An async job: it runs on an event loop."""
    await asyncio.sleep(0.01)
    print(f"[notify_slack] #{channel}: {text}", flush=True)


@azjobs.job(queue="emails", retry=azjobs.Fixed(1, max_retries=2))
def sync_crm_contact(contact_id: int) -> None:
    """A flaky call: its first attempt fails, and azjobs retries it 1 s later."""
    attempt = azjobs.current_job().attempt
    if attempt == 1:
        raise ConnectionError(f"CRM timed out for contact {contact_id}")
    print(f"[sync_crm_contact] contact {contact_id} synced on attempt {attempt}", flush=True)


@azjobs.job(queue="emails")
def charge_card(order_id: str, card: str) -> None:
    """A job that gives up at once on bad input: azjobs.Fail sends it straight to the poison queue."""
    if card == "declined":
        raise azjobs.Fail(f"card declined for order {order_id}")
    print(f"[charge_card] charged order {order_id}", flush=True)


@azjobs.job(queue="emails")
def summarize_emails(messages: list) -> str:
    """The demo workflow's fan-in step: it gets the list of the group's results, in order."""
    words = sum(len(message.split()) for message in messages)
    return f"{len(messages)} welcome emails sent, {words} words in all"
