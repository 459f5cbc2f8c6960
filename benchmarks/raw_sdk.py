"""The raw ``azure-storage-queue`` SDK: the bound azjobs is measured against.

Enqueue is ``send_message`` in a loop on 1 or 8 threads; the drain is the best plain drain
we know for Azurite: 8 threads, each receiving real batches of 32
(``messages_per_page=32``; without it the SDK fetches one message per call) and deleting
what it got. Timings are taken as favourably to the SDK as possible (from the first
message received to the last delete, in this process), so "≥ 90 % of raw" is a strict target.

Each runs on one of two transports:

- ``default``: what ``QueueClient.from_connection_string`` builds by itself (azure-core's
  ``RequestsTransport`` with its own ``requests`` session: ``trust_env`` on, so requests
  looks up proxy variables and ``~/.netrc`` on every call; a pool of 10 connections);
- ``tuned``: the requests session azjobs used for its calls before it had its own transport: one
  pooled ``requests`` session with ``trust_env=False`` and a pool as large as the threads,
  passed as ``RequestsTransport(session=..., session_owner=False)``. It is built here, not
  imported, so the bound does not move when azjobs changes.
"""

from __future__ import annotations

import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from azure.storage.queue import QueueClient

BATCH = 32
TRANSPORTS = ("default", "tuned")


def tuned_session(pool: int):
    """A requests session like azjobs' own: no per-call environment look-ups, a pool for ``pool`` threads."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def queue_client(connection_string: str, queue: str, transport: str = "default", threads: int = 8) -> QueueClient:
    """A QueueClient on the SDK's default transport, or on the tuned one (see the module doc)."""
    if transport == "default":
        return QueueClient.from_connection_string(connection_string, queue)
    if transport != "tuned":
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
    from azure.core.pipeline.transport import RequestsTransport

    session = tuned_session(threads)
    client = QueueClient.from_connection_string(
        connection_string, queue, transport=RequestsTransport(session=session, session_owner=False))
    client._bench_session = session  # closed with the client by close()
    return client


def close(client: QueueClient) -> None:
    client.close()
    session = getattr(client, "_bench_session", None)
    if session is not None:
        session.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def enqueue(connection_string: str, queue: str, bodies: list[str], threads: int, transport: str = "default") -> float:
    """Send every body; seconds taken (the queue must exist)."""
    client = queue_client(connection_string, queue, transport, threads)
    start = time.perf_counter()
    if threads == 1:
        for body in bodies:
            client.send_message(body)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(client.send_message, bodies):
                pass
    elapsed = time.perf_counter() - start
    close(client)
    return elapsed


@dataclass
class RawDrain:
    seconds: float  # first received batch → last delete
    cpu_s: float  # this process's CPU (user + system) over the drain: the drain threads' work
    jobs: int

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


def drain(connection_string: str, queue: str, expected: int, threads: int = 8, transport: str = "default",
          client: QueueClient | None = None) -> RawDrain:
    """Receive-32-and-delete on ``threads`` threads until empty; seconds from first message to last delete.

    The CPU figure is this whole process's over the drain; the harness runs nothing else meanwhile.
    ``client``: a QueueClient made by the caller (another credential), used instead of one for
    ``connection_string`` and ``transport``.
    """
    client = client or queue_client(connection_string, queue, transport, threads)
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

    cpu_before = _cpu()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu = _cpu() - cpu_before
    close(client)
    if deleted[0] != expected:
        raise RuntimeError(f"raw drain deleted {deleted[0]} messages, expected {expected}")
    return RawDrain(last[0] - first[0], cpu, deleted[0])
