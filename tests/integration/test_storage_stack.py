"""One storage stack (issue #24): every call azjobs makes goes through the SDK's pipeline on azjobs' transport.

Against Azurite, with real faults: HTTPS with a private CA, Entra ID tokens (Azurite's
``--oauth basic``), a forward proxy from ``HTTP_PROXY``, throttling (503 ServerBusy) on deletes and
table transactions, a credential rotated with ``update()``, and credentials storage rejects.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ClientAuthenticationError

import azjobs
from azjobs import Call, QueueSettings
from azjobs.errors import EnqueueError
from azjobs.runtime.worker import Worker
from azjobs.state.store import store_for
from azjobs.state.record import JobStatus
from azjobs.storage.client import Client, set_default_client
from azjobs.storage.connection import Connection
from devtools.azurite import ACCOUNT, KEY, Azurite
from devtools.proxy import FaultProxy
from tests.conftest import unique_queue
from devtools.tls import ManagedIdentityEndpoint, StorageToken, make_tls_files
from tests.integration.storage_stack_support import ForwardProxy
from tests.integration.worker_support import Background, wait_for
from tests.jobs import worker_jobs as wj

FAST = QueueSettings(max_polling_interval=timedelta(seconds=0.5))
CA_SETTINGS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
PROXY_SETTINGS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY",
                  "all_proxy")
TABLE_BUSY = (b'{"odata.error":{"code":"ServerBusy","message":{"lang":"en-US","value":"The server is busy.\\n'
              b'RequestId:0f0e0d0c-0000-0000-0000-000000000000\\nTime:2026-12-05T01:00:00.0000000Z"}}}')
QUEUE_BUSY = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>The server is busy.'
              b'\nRequestId:0f0e0d0c-0000-0000-0000-000000000000</Message></Error>')


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secure_azurite(tls):
    """Azurite over HTTPS (a certificate signed by a CA made for this module) that also takes bearer tokens."""
    _, cert, key = tls
    server = Azurite(cert=cert, key=key, oauth="basic").start()
    yield server
    server.stop()


@pytest.fixture
def trusted(tls, monkeypatch):
    for name in CA_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls[0])
    return tls[0]


@pytest.fixture
def no_proxy_settings(monkeypatch):
    for name in PROXY_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def _tracked_client(connection, table: str) -> Client:
    client = Client(connection, state=True, state_table=table)
    set_default_client(client)
    return client


def _drain(client: Client, queue: str, count: int, test_dir, **worker_options):
    keys = [f"k{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    wj.record.options(queue=queue).enqueue_many([Call(key) for key in keys]).raise_for_failures()
    stats = Worker([queue], client=client, settings=FAST, fetch=8, concurrency=8, burst=True, **worker_options).run()
    return keys, stats


def _left(client: Client, queue: str) -> int:
    return client.queue(queue).get_queue_properties().approximate_message_count


# -- HTTPS with a private CA ---------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_https_storage_signed_by_a_private_ca_is_trusted_through_the_ca_bundle_setting(
        secure_azurite, tls, setting, monkeypatch, no_proxy_settings):
    for name in CA_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(setting, tls[0])
    client = Client(secure_azurite.connection_string)
    queue = unique_queue("tls")
    try:
        client.send_text(queue, "over TLS")
        (message,) = client.queue(queue).receive_messages(max_messages=1)
        assert message.content == "over TLS"
        client.queue(queue).delete_message(message)
        assert _left(client, queue) == 0
    finally:
        client.close()


def test_https_storage_whose_certificate_is_not_trusted_is_refused_with_a_clear_error(
        secure_azurite, monkeypatch, no_proxy_settings):
    for name in CA_SETTINGS:
        monkeypatch.delenv(name, raising=False)  # certifi's public CAs only: the test CA is not among them
    client = Client(secure_azurite.connection_string)
    try:
        with pytest.raises(EnqueueError) as caught:
            client.send_text(unique_queue("tls"), "never sent")
        text = str(caught.value)
        assert "certificate is not trusted" in text and "REQUESTS_CA_BUNDLE" in text and "SSL_CERT_FILE" in text
        assert KEY not in text
    finally:
        client.close()


# -- Entra ID --------------------------------------------------------------------------------------------------
def test_a_worker_with_an_entra_id_token_drains_deletes_and_writes_job_state(
        secure_azurite, trusted, test_dir, no_proxy_settings):
    base = f"https://127.0.0.1:{{}}/{ACCOUNT}"
    token = StorageToken()
    connection = Connection(queue_service_uri=base.format(secure_azurite.queue_port),
                            blob_service_uri=base.format(secure_azurite.blob_port),
                            table_service_uri=base.format(secure_azurite.table_port), credential=token)
    queue, table = unique_queue("entra"), f"entra{uuid.uuid4().hex[:12]}"
    client = _tracked_client(connection, table)
    try:
        client.ensure_queue(queue)
        keys, stats = _drain(client, queue, 24, test_dir)
        assert stats.succeeded == 24 and stats.delete_failed == 0
        assert {key: len(wj.runs(test_dir, key)) for key in keys} == {key: 1 for key in keys}
        assert _left(client, queue) == 0  # every message deleted with the token
        store = store_for(client)
        assert store.writer.transactions > 0  # job state went in table transactions, with the token too
        assert {azjobs.result(job_id).status for job_id in _job_ids(client, store, keys)} == {JobStatus.SUCCESSFUL}
        assert token.scopes and all(scopes == ("https://storage.azure.com/.default",) for scopes in token.scopes)
    finally:
        client.close()


def test_a_worker_process_on_an_identity_setting_drains_with_default_azure_credential(
        secure_azurite, trusted, test_dir, no_proxy_settings):
    # What App Service gives an app with a managed identity: DefaultAzureCredential finds it by itself.
    identity = ManagedIdentityEndpoint().start()
    queue = unique_queue("identity")
    client = Client(secure_azurite.connection_string)  # enqueues and checks with the key
    try:
        client.ensure_queue(queue)
        set_default_client(client)
        keys = [f"mi{i:02d}" for i in range(12)]
        wj.record.options(queue=queue).enqueue_many([Call(key) for key in keys]).raise_for_failures()
        base = f"https://127.0.0.1:{{}}/{ACCOUNT}"
        env = {**os.environ, **identity.environment, "AzureWebJobsStorage": "", "AZJOBS_TEST_DIR": str(test_dir),
               "AzureWebJobsStorage__queueServiceUri": base.format(secure_azurite.queue_port),
               "AzureWebJobsStorage__blobServiceUri": base.format(secure_azurite.blob_port),
               "AzureWebJobsStorage__tableServiceUri": base.format(secure_azurite.table_port),
               "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        done = subprocess.run([sys.executable, "-m", "azjobs", "-q", queue, "-i", wj.__name__, "--burst"], env=env,
                              cwd=test_dir, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout + done.stderr
        assert {key: len(wj.runs(test_dir, key)) for key in keys} == {key: 1 for key in keys}
        assert _left(client, queue) == 0  # deleted with the identity's tokens
        assert identity.requests >= 1
    finally:
        identity.stop()
        client.close()


def _job_ids(client, store, keys):
    """The ids of the jobs recorded for ``keys`` (every record in the table holds one of them)."""
    ids = [e["RowKey"] for e in store.table.list_entities() if e.get("Job") == "wt.record"]
    assert len(ids) == len(keys)
    return ids


# -- proxies -----------------------------------------------------------------------------------------------
@pytest.fixture
def forward_proxy():
    proxy = ForwardProxy().start()
    yield proxy
    proxy.stop()


def test_with_http_proxy_every_worker_call_goes_through_the_proxy(connection_string, forward_proxy, monkeypatch,
                                                                  test_dir, no_proxy_settings):
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    queue, table = unique_queue("proxy"), f"proxy{uuid.uuid4().hex[:12]}"
    client = _tracked_client(connection_string, table)
    try:
        client.ensure_queue(queue)
        keys, stats = _drain(client, queue, 12, test_dir)
        assert stats.succeeded == 12 and _left(client, queue) == 0
        seen = forward_proxy.snapshot()
        deletes = [path for method, path in forward_proxy.paths if method == "DELETE" and "/messages/" in path]
        batches = [path for method, path in forward_proxy.paths if method == "POST" and "$batch" in path]
        assert len(deletes) == 12  # every message delete
        assert len(batches) == store_for(client).writer.transactions > 0  # every table transaction
        assert seen["GET"] > 0 and seen["PUT"] > 0  # receives; the queue's creation
    finally:
        client.close()


def test_with_no_proxy_covering_the_endpoint_no_call_goes_through_the_proxy(connection_string, forward_proxy,
                                                                            monkeypatch, test_dir,
                                                                            no_proxy_settings):
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.invalid,127.0.0.0/8")  # a CIDR range covers 127.0.0.1
    queue, table = unique_queue("noproxy"), f"noproxy{uuid.uuid4().hex[:12]}"
    client = _tracked_client(connection_string, table)
    try:
        client.ensure_queue(queue)
        keys, stats = _drain(client, queue, 6, test_dir)
        assert stats.succeeded == 6 and _left(client, queue) == 0
        assert store_for(client).writer.transactions > 0
        assert sum(forward_proxy.snapshot().values()) == 0
    finally:
        client.close()


def test_an_https_endpoint_goes_through_the_proxy_in_a_connect_tunnel(secure_azurite, trusted, forward_proxy,
                                                                      monkeypatch, no_proxy_settings):
    monkeypatch.setenv("HTTPS_PROXY", forward_proxy.url)
    client = Client(secure_azurite.connection_string)
    queue = unique_queue("tunnel")
    try:
        client.send_text(queue, "tunnelled")
        (message,) = client.queue(queue).receive_messages(max_messages=1)
        client.queue(queue).delete_message(message)
        assert message.content == "tunnelled" and forward_proxy.snapshot()["CONNECT"] >= 1
    finally:
        client.close()


# -- throttling is not an outage ---------------------------------------------------------------------------------
def _through(connection_string: str, name: str, port: int) -> str:
    return re.sub(rf"({name}=https?://)([^/;]+)", lambda m: f"{m.group(1)}127.0.0.1:{port}", connection_string)


def test_503_on_deletes_and_table_transactions_is_retried_with_back_off_and_pauses_nothing(
        azurite, connection_string, test_dir, no_proxy_settings):
    queues_proxy = FaultProxy(azurite.queue_port, reconnect_upstream=True).start()
    tables_proxy = FaultProxy(azurite.table_port, reconnect_upstream=True).start()
    proxied = _through(_through(connection_string, "QueueEndpoint", queues_proxy.port), "TableEndpoint",
                       tables_proxy.port)
    queue, table = unique_queue("busy"), f"busy{uuid.uuid4().hex[:12]}"
    client = _tracked_client(proxied, table)
    try:
        client.ensure_queue(queue)
        store = store_for(client)
        store.ensure_table()
        queues_proxy.fail("DELETE", status=503, error_code="ServerBusy", body=QUEUE_BUSY, times=6)
        tables_proxy.fail("POST", status=503, path_contains="$batch", error_code="ServerBusy", body=TABLE_BUSY,
                          content_type="application/json;odata=minimalmetadata;streaming=true;charset=utf-8",
                          times=4)
        keys, stats = _drain(client, queue, 16, test_dir)
        assert queues_proxy.faults["DELETE"] == 6 and tables_proxy.faults["POST"] == 4, "the 503s were not injected"
        assert {key: len(wj.runs(test_dir, key)) for key in keys} == {key: 1 for key in keys}  # none ran twice
        assert stats.succeeded == 16 and stats.delete_failed == 0 and _left(client, queue) == 0
        assert not store.in_outage() and store._outage_until == 0.0  # duplicate protection was never paused
        records = [e for e in store.table.list_entities() if e.get("Job") == "wt.record"]
        assert len(records) == 16 and {r["Status"] for r in records} == {JobStatus.SUCCESSFUL.value}
    finally:
        client.close()
        queues_proxy.stop()
        tables_proxy.stop()


def test_only_an_unreachable_table_pauses_job_state_calls(azurite, connection_string, no_proxy_settings):
    from azjobs.state.errors import StateUnavailable
    from azjobs.state.store import StateStore

    proxy = FaultProxy(azurite.table_port, reconnect_upstream=True).start()
    store = StateStore.from_connection(Connection(connection_string=_through(connection_string, "TableEndpoint",
                                                                             proxy.port)),
                                       f"pause{uuid.uuid4().hex[:12]}")
    try:
        store.ensure_table()
        proxy.fail("GET", status=503, error_code="ServerBusy", body=TABLE_BUSY,
                   content_type="application/json;odata=minimalmetadata;streaming=true;charset=utf-8")
        with pytest.raises(StateUnavailable):
            store.get("a-job-id")  # throttled past the SDK's retries: this call fails ...
        assert proxy.faults["GET"] == 4 and not store.in_outage()  # ... after 3 retries, and nothing pauses
        proxy.heal()
        proxy.cut()
        with pytest.raises(StateUnavailable):
            store.get("a-job-id")
        assert store.in_outage()  # unreachable: calls pause
    finally:
        store.close()
        proxy.stop()


# -- credentials ----------------------------------------------------------------------------------------------
def _keyed(azurite, credential) -> Client:
    return Client(Connection(queue_service_uri=f"http://127.0.0.1:{azurite.queue_port}/{ACCOUNT}",
                             credential=credential))


def test_a_key_rotated_with_update_is_used_by_the_next_delete(azurite, no_proxy_settings):
    credential = AzureNamedKeyCredential(ACCOUNT, KEY)
    client = _keyed(azurite, credential)
    queue = unique_queue("rotate")
    try:
        client.send_text(queue, "a")
        client.send_text(queue, "b")
        first, second = client.queue(queue).receive_messages(max_messages=2, visibility_timeout=60)
        credential.update(ACCOUNT, "d3Jvbmcga2V5LCByZXZva2Vk")  # base64 of a key storage does not know
        with pytest.raises(ClientAuthenticationError) as caught:
            client.queue(queue).delete_message(first)
        assert caught.value.status_code == 403
        credential.update(ACCOUNT, KEY)
        client.queue(queue).delete_message(first)
        client.queue(queue).delete_message(second)
        assert _left(client, queue) == 0
    finally:
        client.close()


def test_a_sas_rotated_with_update_is_used_by_the_next_call(azurite, no_proxy_settings):
    from azure.core.credentials import AzureSasCredential
    from azure.storage.queue import AccountSasPermissions, ResourceTypes, generate_account_sas

    def sas(key: str) -> str:
        return generate_account_sas(ACCOUNT, key, resource_types=ResourceTypes(service=True, container=True,
                                                                               object=True),
                                    permission=AccountSasPermissions(read=True, add=True, update=True, process=True,
                                                                     delete=True, list=True, create=True, write=True),
                                    expiry=datetime.now(timezone.utc) + timedelta(hours=1))

    credential = AzureSasCredential(sas(KEY))
    client = _keyed(azurite, credential)
    queue = unique_queue("sas")
    try:
        client.send_text(queue, "a")
        (message,) = client.queue(queue).receive_messages(max_messages=1, visibility_timeout=60)
        credential.update(sas("d3Jvbmcga2V5LCByZXZva2Vk"))  # signed with a key storage does not know
        with pytest.raises(ClientAuthenticationError):
            client.queue(queue).delete_message(message)
        credential.update(sas(KEY))
        client.queue(queue).delete_message(message)
        assert _left(client, queue) == 0
    finally:
        client.close()


def test_the_asyncio_client_honours_a_rotated_key_too(azurite, no_proxy_settings):
    import asyncio

    credential = AzureNamedKeyCredential(ACCOUNT, "d3Jvbmcga2V5LCByZXZva2Vk")  # a key storage does not know
    connection = Connection(queue_service_uri=f"http://127.0.0.1:{azurite.queue_port}/{ACCOUNT}",
                            credential=credential)
    queue = unique_queue("aio")
    checker = Client(Connection(queue_service_uri=connection.queue_service_uri,
                                credential=AzureNamedKeyCredential(ACCOUNT, KEY)))

    async def rotate_mid_use() -> None:
        async with connection.queue_service_async() as service:
            client = service.get_queue_client(queue)  # one client, before and after the rotation
            with pytest.raises(ClientAuthenticationError):
                await client.send_message("refused")
            credential.update(ACCOUNT, KEY)
            await client.send_message("async")
            async for message in client.receive_messages(max_messages=1, visibility_timeout=60):
                await client.delete_message(message)

    try:
        checker.ensure_queue(queue)
        asyncio.run(rotate_mid_use())
        assert _left(checker, queue) == 0
    finally:
        checker.close()


def test_a_delete_refused_for_its_credentials_takes_the_workers_rejected_credential_path(
        azurite, test_dir, caplog, no_proxy_settings):
    credential = AzureNamedKeyCredential(ACCOUNT, KEY)
    client = _keyed(azurite, credential)
    set_default_client(client)
    queue = unique_queue("rejected")
    try:
        client.ensure_queue(queue)
        wj.slow.options(queue=queue).enqueue("held", 1.5)
        caplog.set_level(logging.DEBUG, logger="azjobs")
        worker = Background(Worker([queue], client=client, settings=FAST, lease=30)).start()
        try:
            assert wait_for(lambda: wj.starts(test_dir, "held"), timeout=30)
            credential.update(ACCOUNT, "d3Jvbmcga2V5LCByZXZva2Vk")  # while the job runs: its delete is refused
            assert wait_for(lambda: worker.worker.stats.delete_failed == 1, timeout=60)
        finally:
            credential.update(ACCOUNT, KEY)
            stats = worker.stop()
        assert stats.credentials_rejected
        deletes = [r for r in caplog.records if getattr(r, "action", "").startswith("delete_")]
        assert [r.action for r in deletes] == ["delete_failed"]  # refused once, not retried as a transient fault
        assert "rejected the credentials" in deletes[0].getMessage()
        assert any(getattr(r, "action", "") == "storage_auth_failed" for r in caplog.records)
    finally:
        client.close()
