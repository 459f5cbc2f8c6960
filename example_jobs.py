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
