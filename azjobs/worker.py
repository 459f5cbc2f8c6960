"""The local runner (minimal first cut: burst-drains queues through the execution core)."""

from __future__ import annotations

import logging

from .client import Client
from .core import Executor, MessageInfo, Redeliver

log = logging.getLogger("azjobs.worker")


def drain(client: Client, queues: list[str], *, executor: Executor | None = None, fetch: int = 16,
          lease_s: int = 30) -> int:
    """Work every visible message on ``queues`` until they are empty; returns messages handled."""
    executor = executor or Executor(client=client)
    handled = 0
    for queue in queues:
        queue_client = client.queue(queue)
        while True:
            batch = list(queue_client.receive_messages(messages_per_page=fetch, max_messages=fetch,
                                                       visibility_timeout=lease_s))
            if not batch:
                break
            for message in batch:
                info = MessageInfo(queue=queue, message_id=message.id, dequeue_count=message.dequeue_count,
                                   insertion_time=message.inserted_on, pop_receipt=message.pop_receipt)
                try:
                    executor.execute(message.content, info)
                except Redeliver:
                    queue_client.update_message(message.id, message.pop_receipt,
                                                visibility_timeout=int(executor.settings.visibility_timeout.total_seconds()))
                else:
                    queue_client.delete_message(message.id, message.pop_receipt)
                handled += 1
    return handled
