"""CPU per storage call of a worker's two hottest calls, side by side in one run.

``python -m benchmarks.transport [--calls 600]`` starts two Azurites (HTTP with the account key,
HTTPS with ``--oauth basic`` for an Entra ID token credential) and measures, in this process,
the CPU time (``resource.getrusage``: user + system) per ``QueueClient.delete_message`` and per
job-state table transaction of 8 writes (``azjobs.state.batch.TableTransactions``), on:

- ``sdk-default``: the SDK's own transport (``RequestsTransport``, its own session);
- ``sdk-tuned``: ``RequestsTransport`` on a pooled session without per-call environment look-ups
  (the transport azjobs used before it had its own);
- ``azjobs``: ``azjobs.storage.transport.StorageTransport`` (what every azjobs client uses).

Every variant goes through the SDK's whole pipeline (authentication, retries, request id, user
agent): only the transport differs. Calls run on one thread, so the figure is CPU per call,
not contention.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import uuid
from pathlib import Path

from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient

from azjobs.state.batch import TableTransactions, Write
from azjobs.storage.transport import StorageTransport
from benchmarks.raw_sdk import tuned_session
from devtools.azurite import ACCOUNT, Azurite
from devtools.tls import StorageToken, make_tls_files

TRANSPORTS = ("sdk-default", "sdk-tuned", "azjobs")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _transport(kind: str):
    if kind == "sdk-default":
        return {}
    if kind == "sdk-tuned":
        session = tuned_session(8)
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or True  # trust_env is off: say it here
        return {"transport": RequestsTransport(session=session, session_owner=False)}
    return {"transport": StorageTransport()}


def _clients(kind: str, server: Azurite, token: StorageToken | None, queue: str, table: str):
    options = _transport(kind)
    if token is None:
        queue_client = QueueClient.from_connection_string(server.connection_string, queue, **options)
        tables = TableServiceClient.from_connection_string(server.connection_string, **_transport(kind))
    else:
        queue_client = QueueClient(f"https://127.0.0.1:{server.queue_port}/{ACCOUNT}", queue, credential=token,
                                   **options)
        tables = TableServiceClient(f"https://127.0.0.1:{server.table_port}/{ACCOUNT}", credential=token,
                                    **_transport(kind))
    return queue_client, tables.get_table_client(table)


def measure(kind: str, server: Azurite, token: StorageToken | None, calls: int) -> tuple[float, float]:
    """(ms of CPU per delete, ms of CPU per 8-write transaction)."""
    queue, table = f"bench-{uuid.uuid4().hex[:12]}", f"bench{uuid.uuid4().hex[:12]}"
    queue_client, table_client = _clients(kind, server, token, queue, table)
    try:
        queue_client.create_queue()
        for _ in range(calls):
            queue_client.send_message("m")
        received = []
        while len(received) < calls:
            page = list(queue_client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=300))
            if not page:
                break
            received.extend(page)
        for message in received[:16]:  # warm-up: connections open, tokens fetched
            queue_client.delete_message(message)
        timed = received[16:]
        before = _cpu()
        for message in timed:
            queue_client.delete_message(message, retry_read=0)
        per_delete = (_cpu() - before) / len(timed) * 1000
        table_client.create_table()
        sender = TableTransactions(table_client)
        rounds = max(10, calls // 8)
        batches = [[Write({"PartitionKey": "p", "RowKey": f"{r}-{i}", "Status": "RUNNING", "Attempts": 1})
                    for i in range(8)] for r in range(rounds + 4)]
        for writes in batches[:4]:
            sender.send(writes)
        before = _cpu()
        for writes in batches[4:]:
            sender.send(writes)
        per_transaction = (_cpu() - before) / rounds * 1000
        return per_delete, per_transaction
    finally:
        for cleanup in (queue_client.delete_queue, table_client.delete_table):
            try:
                cleanup()
            except Exception:
                pass
        queue_client.close()
        table_client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=600, help="deletes per variant (default 600)")
    parser.add_argument("--transport", action="append", choices=TRANSPORTS, help="only these (repeatable)")
    parser.add_argument("--credential", action="append", choices=("key", "token"), help="only these (repeatable)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    ca, cert, key = make_tls_files(folder)
    os.environ["REQUESTS_CA_BUNDLE"] = ca  # both transports trust the test CA the same way
    plain, secure = Azurite().start(), Azurite(cert=cert, key=key, oauth="basic").start()
    try:
        print(f"{'credential':<28} {'transport':<12} {'CPU/delete ms':>14} {'CPU/8-write tx ms':>18}")
        for name, label, server, token in (("key", "account key, HTTP", plain, None),
                                           ("token", "Entra ID token, HTTPS", secure, StorageToken())):
            if args.credential and name not in args.credential:
                continue
            for kind in args.transport or TRANSPORTS:
                per_delete, per_transaction = measure(kind, server, token, args.calls)
                print(f"{label:<28} {kind:<12} {per_delete:>14.3f} {per_transaction:>18.3f}", flush=True)
    finally:
        plain.stop()
        secure.stop()


if __name__ == "__main__":
    main()
