"""The raw ``azure-storage-queue`` SDK: the bound azjobs is measured against.

Enqueue is ``send_message`` in a loop on 1 or 8 threads; the drain is the best plain drain
we know for Azurite: 8 threads, each receiving real batches of 32
(``messages_per_page=32``; without it the SDK fetches one message per call) and deleting
what it got. Timings are taken as favourably to the SDK as possible (from the first
message received to the last delete), so "≥ 90 % of raw" is a strict target.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from azure.storage.queue import QueueClient

BATCH = 32


def queue_client(connection_string: str, queue: str) -> QueueClient:
    return QueueClient.from_connection_string(connection_string, queue)


def enqueue(connection_string: str, queue: str, bodies: list[str], threads: int) -> float:
    """Send every body; seconds taken (the queue must exist)."""
    client = queue_client(connection_string, queue)
    start = time.perf_counter()
    if threads == 1:
        for body in bodies:
            client.send_message(body)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(client.send_message, bodies):
                pass
    elapsed = time.perf_counter() - start
    client.close()
    return elapsed


def drain(connection_string: str, queue: str, expected: int, threads: int = 8) -> float:
    """Receive-32-and-delete on ``threads`` threads until empty; seconds from first message to last delete."""
    client = queue_client(connection_string, queue)
    lock = threading.Lock()
    first: list[float] = []
    last = [0.0]
    deleted = [0]

    def work() -> None:
        while True:
            pages = client.receive_messages(messages_per_page=BATCH, max_messages=BATCH,
                                            visibility_timeout=30).by_page()
            batch = list(next(pages, []))
            if not batch:
                return
            with lock:
                if not first:
                    first.append(time.perf_counter())
            for message in batch:
                client.delete_message(message.id, message.pop_receipt)
            with lock:
                deleted[0] += len(batch)
                last[0] = time.perf_counter()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    client.close()
    if deleted[0] != expected:
        raise RuntimeError(f"raw drain deleted {deleted[0]} messages, expected {expected}")
    return last[0] - first[0]
