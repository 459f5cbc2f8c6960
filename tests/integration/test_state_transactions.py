"""The state writer's transactions on Azurite's Table Storage (azjobs.state.writer, .batch).

Concurrent jobs' RUNNING and SUCCESSFUL writes share entity group transactions, sent through
the table client's pipeline (its credential: the account key, a SAS), and every record lands
as the single calls would have written it; the failure forms are the real ones: a keep-alive
connection Azurite closed while idle, and an answer lost after Azurite applied the write.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from azjobs.storage.connection import connection_from_string
from azjobs.model.envelope import Envelope
from azjobs.state.batch import TableTransactions
from azjobs.state.record import JobStatus
from azjobs.state.store import StateStore
from azjobs.state.entities import partition_of
from azjobs.state.writer import StateWriter
from devtools.proxy import FaultProxy


@pytest.fixture
def table_name():
    return f"tx{uuid.uuid4().hex[:16]}"


def _store(connection_string: str, table: str, *, writer_threads: int | None = None) -> StateStore:
    store = StateStore.from_connection(connection_from_string(connection_string), table)
    if writer_threads is not None:
        store.writer.close()
        store.writer = StateWriter(store._send, threads=writer_threads)
    store.ensure_table()
    return store


def _enqueued(store: StateStore, count: int) -> list[Envelope]:
    envelopes = []
    for _ in range(count):
        envelope = Envelope.build("tx.job", (1,), queue="tx-q")
        etag = store.enqueued(envelope)
        envelopes.append(envelope.evolve(options={"state_etag": etag}))
    return envelopes


def _start(store: StateStore, envelope: Envelope, message_id: str = "m-1", dequeue_count: int = 1):
    return store.start(envelope, message_id=message_id, dequeue_count=dequeue_count, worker_id="host:1",
                       etag=envelope.options["state_etag"])


def test_concurrent_jobs_share_transactions_and_every_record_lands(connection_string, table_name):
    store = _store(connection_string, table_name)
    try:
        assert isinstance(store._transactions, TableTransactions)  # the client's pipeline, signed with the key
        envelopes = _enqueued(store, 60)
        starts: dict[str, str] = {}
        barrier = threading.Barrier(len(envelopes))

        def job(envelope: Envelope) -> None:
            barrier.wait()
            starts[envelope.id] = _start(store, envelope).action
            store.succeeded(envelope, {"id": envelope.id})

        threads = [threading.Thread(target=job, args=(e,)) for e in envelopes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert set(starts.values()) == {"run"} and len(starts) == 60
        assert store.writer.writes == 120
        assert store.writer.transactions < 120  # writes waiting together went out together
        for envelope in envelopes:
            record = store.get(envelope.id)
            assert record.status is JobStatus.SUCCESSFUL and record.return_value == {"id": envelope.id}
            assert record.attempts == 1 and record.worker_ids == ["host:1"] and record.job == "tx.job"
            assert record.started_at is not None and record.finished_at >= record.started_at
    finally:
        store.close()


def test_a_stale_etag_refuses_only_its_own_write_in_a_shared_transaction(connection_string, table_name):
    store = _store(connection_string, table_name, writer_threads=1)
    try:
        # Four jobs in one partition; one of them already started elsewhere (its READY ETag is stale).
        envelopes = []
        while len(envelopes) < 4:
            candidate = Envelope.build("tx.job", queue="tx-q")
            if partition_of(candidate.id) == "jobs-0":
                etag = store.enqueued(candidate)
                envelopes.append(candidate.evolve(options={"state_etag": etag}))
        assert _start(store, envelopes[0], message_id="elsewhere").action == "run"
        results: dict[int, object] = {}
        gate = threading.Event()
        original = store._transactions.send

        def held(writes):
            gate.wait(10)
            return original(writes)

        store._transactions.send = held  # the first transaction waits, so the four writes pile up
        first = threading.Thread(target=lambda: store.succeeded(_enqueued(store, 1)[0], None))
        first.start()
        time.sleep(0.3)
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _start(store, envelopes[i])))
                   for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        gate.set()
        for thread in [first, *threads]:
            thread.join(30)
        assert [results[i].action for i in range(1, 4)] == ["run"] * 3
        assert results[0].action == "defer"  # running under the other delivery's live lease
        assert [store.get(e.id).attempts for e in envelopes] == [1, 1, 1, 1]
        assert store.writer.transactions <= 4  # the first alone, the four together, the three again
    finally:
        store.close()


def test_a_connection_azurite_closed_while_idle_is_opened_again_and_the_write_lands(connection_string,
                                                                                    table_name):
    store = _store(connection_string, table_name, writer_threads=1)
    try:
        first, second = _enqueued(store, 2)
        assert _start(store, first).action == "run"
        time.sleep(6.5)  # Azurite closes a keep-alive connection after 5 s idle
        assert _start(store, second).action == "run"  # a POST whose answer is lost is not re-sent by the SDK
        assert store.get(second.id).status is JobStatus.RUNNING
    finally:
        store.close()


def test_an_answer_lost_after_the_running_write_landed_still_runs_the_delivery_once(azurite, connection_string,
                                                                                    table_name):
    proxy = FaultProxy(azurite.table_port).start()
    proxied = re.sub(r"(TableEndpoint=https?://)([^/;]+)", lambda m: f"{m.group(1)}127.0.0.1:{proxy.port}",
                     connection_string)
    store = _store(proxied, table_name, writer_threads=1)
    try:
        warm, envelope = _enqueued(store, 2)
        assert _start(store, warm).action == "run"  # the writer's connection is open and kept alive
        proxy.fail("POST", "drop_after", path_contains="$batch", times=1)
        start = _start(store, envelope)
        assert proxy.faults["POST"] == 1  # the RUNNING write reached the table; its answer did not come back
        assert start.action == "run" and "own RUNNING write" in start.why
        record = store.get(envelope.id)
        assert record.status is JobStatus.RUNNING and record.attempts == 1
        # Another delivery of the same job is not started while this one runs.
        assert _start(store, envelope, message_id="m-2").action == "defer"
    finally:
        store.close()
        proxy.stop()


def test_a_sas_connection_string_sends_transactions_with_its_signature(azurite, table_name):
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.data.tables import AccountSasPermissions, ResourceTypes, TableClient, generate_account_sas

    from devtools.azurite import ACCOUNT, KEY

    sas = generate_account_sas(AzureNamedKeyCredential(ACCOUNT, KEY),
                               resource_types=ResourceTypes(service=True, container=True, object=True),
                               permission=AccountSasPermissions(read=True, write=True, delete=True, list=True,
                                                                add=True, update=True),
                               expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    endpoint = f"http://127.0.0.1:{azurite.table_port}/{ACCOUNT}"
    client = TableClient.from_connection_string(f"TableEndpoint={endpoint};SharedAccessSignature={sas}",
                                                table_name=table_name)
    store = StateStore(client)
    try:
        assert isinstance(store._transactions, TableTransactions)  # the SAS goes on through the pipeline
        store.ensure_table()
        envelope = _enqueued(store, 1)[0]
        assert _start(store, envelope).action == "run"
        store.succeeded(envelope, 42)
        assert store.get(envelope.id).return_value == 42
        assert store.writer.transactions == 2
    finally:
        store.close()


# -- issue #22: a transaction's body stays under 4 MiB; a 413 splits it (7) -------------------------
def _one_partition(count: int, partition: str = "jobs-0") -> list[Envelope]:
    envelopes: list[Envelope] = []
    while len(envelopes) < count:
        envelope = Envelope.build("tx.job", (1,), queue="tx-q")
        if partition_of(envelope.id) == partition:
            envelopes.append(envelope)
    return envelopes


def _pile_up(store: StateStore, envelopes: list[Envelope], value, on_send=None) -> list[int]:
    """SUCCESSFUL writes of ``envelopes`` from as many threads, gathered while the writer's first transaction
    is held back: what a busy partition sends. Returns the body size of every transaction sent."""
    sizes: list[int] = []
    gate = threading.Event()
    pipeline = store._transactions._pipeline
    real_send = pipeline.send_request

    def send(request, **kwargs):
        sizes.append(len(request.content))
        if len(sizes) == 1:
            assert gate.wait(30)
        if on_send is not None:
            on_send(len(sizes))
        return real_send(request, **kwargs)

    pipeline.send_request = send
    threads = [threading.Thread(target=store.succeeded, args=(envelope, value)) for envelope in envelopes]
    threads[0].start()
    deadline = time.monotonic() + 30
    while not sizes:  # the first write is in flight, alone, held at the gate
        assert time.monotonic() < deadline, "the first write was not sent"
        time.sleep(0.01)
    for thread in threads[1:]:
        thread.start()
    while sum(len(q) for q in store.writer._pending.values()) < len(envelopes) - 1:
        assert time.monotonic() < deadline, "the writes did not pile up"
        time.sleep(0.01)
    gate.set()
    for thread in threads:
        thread.join(60)
    return sizes


def test_many_large_writes_to_one_partition_go_in_transactions_each_under_4_mib(connection_string, table_name):
    from azjobs.storage.table_rules import MAX_TRANSACTION_BYTES

    store = _store(connection_string, table_name, writer_threads=1)
    try:
        envelopes = _one_partition(100)
        value = "€" * 30_000  # 30,000 UTF-16 units (fits a property); 90,000 bytes of UTF-8 in the body
        sizes = _pile_up(store, envelopes, value)
        # Azurite takes any size; Table Storage refuses a transaction of 4 MiB or more (413).
        assert max(sizes) < MAX_TRANSACTION_BYTES, sizes
        assert len(sizes) >= 4 and max(sizes) > 3 * 1024 * 1024  # still shared: 40-odd writes a transaction
        assert store.writer.writes == 100
        assert {store.get(e.id).return_value == value for e in envelopes[::9]} == {True}
    finally:
        store.close()


# The service's answer to a transaction over its body limit.
TOO_LARGE = (b'{"odata.error":{"code":"RequestBodyTooLarge","message":{"lang":"en-US","value":"The request body is too '
             b'large and exceeds the maximum permissible limit.\\nRequestId:6c3bd3a8-b002-0058-2f1e-0a9e1c000000\\n'
             b'Time:2026-12-04T21:40:00.0000000Z"}}}')


def test_a_transaction_refused_as_too_large_is_split_and_every_write_lands(azurite, connection_string, table_name):
    proxy = FaultProxy(azurite.table_port).start()
    proxied = re.sub(r"(TableEndpoint=https?://)([^/;]+)", lambda m: f"{m.group(1)}127.0.0.1:{proxy.port}",
                     connection_string)
    store = _store(proxied, table_name, writer_threads=1)
    try:
        envelopes = _one_partition(12)

        def arm(number: int) -> None:
            if number == 2:  # the first shared transaction: the service says it is too large
                proxy.fail("POST", path_contains="$batch", status=413, times=1, body=TOO_LARGE,
                           content_type="application/json;odata=minimalmetadata;streaming=true;charset=utf-8",
                           error_code="RequestBodyTooLarge")

        sizes = _pile_up(store, envelopes, {"ok": True}, on_send=arm)
        assert proxy.faults["POST"] == 1, "the 413 was not injected: the test proved nothing"
        records = [store.get(e.id) for e in envelopes]
        assert {(r.status, json.dumps(r.return_value)) for r in records} == {(JobStatus.SUCCESSFUL, '{"ok": true}')}
        assert store.writer.writes == 12
        assert len(sizes) == 4 and store.writer.splits == 1  # the first alone, the refused 11, then 6 and 5
        assert sizes[2] + sizes[3] < sizes[1] + 4096
    finally:
        store.close()
        proxy.stop()
