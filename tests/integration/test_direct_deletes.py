"""The worker's message deletes on its own connections (azjobs.storage.deletes), against Azurite's queues.

Signed with the account key or carrying a SAS, a delete removes the message; a stale pop
receipt or a message already gone raise what the SDK raises, which the settler reads as "not
ours"; a connection Azurite closed while idle is opened again.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceResponseError
from azure.storage.queue import QueueClient

from azjobs.storage.deletes import DirectDeleteQueue, with_direct_deletes
from azjobs.runtime.leases import is_lost_error


@pytest.fixture
def sdk_queue(connection_string, queue_name):
    queue = QueueClient.from_connection_string(connection_string, queue_name)
    queue.create_queue()
    yield queue
    queue.delete_queue()
    queue.close()


def _received(queue, count):
    for i in range(count):
        queue.send_message(f"m{i}")
    return list(queue.receive_messages(messages_per_page=count, max_messages=count, visibility_timeout=60))


def test_a_key_signed_delete_removes_the_message_and_other_calls_stay_the_sdks(sdk_queue):
    queue = with_direct_deletes(sdk_queue)
    assert isinstance(queue, DirectDeleteQueue)
    first, second = _received(sdk_queue, 2)
    queue.delete_message(first.id, first.pop_receipt)
    queue.delete_message(second)  # a QueueMessage carries its receipt
    assert queue.get_queue_properties().approximate_message_count == 0  # delegated to the SDK client


def test_a_message_already_gone_or_a_stale_receipt_is_read_as_not_ours(sdk_queue):
    queue = with_direct_deletes(sdk_queue)
    (message,) = _received(sdk_queue, 1)
    renewed = sdk_queue.update_message(message.id, message.pop_receipt, visibility_timeout=60)
    with pytest.raises(HttpResponseError) as stale:
        queue.delete_message(message.id, message.pop_receipt)  # the receipt before the renewal
    assert stale.value.status_code == 400 and stale.value.error_code == "PopReceiptMismatch"
    assert is_lost_error(stale.value)
    queue.delete_message(message.id, renewed.pop_receipt)
    with pytest.raises(ResourceNotFoundError) as gone:
        queue.delete_message(message.id, renewed.pop_receipt)
    assert gone.value.error_code == "MessageNotFound" and is_lost_error(gone.value)


def test_a_sas_delete_carries_the_signature_and_works(azurite, sdk_queue, queue_name):
    from azure.storage.queue import AccountSasPermissions, ResourceTypes, generate_account_sas

    from devtools.azurite import ACCOUNT, KEY

    sas = generate_account_sas(ACCOUNT, KEY, ResourceTypes(service=True, container=True, object=True),
                               AccountSasPermissions(read=True, add=True, update=True, process=True, delete=True),
                               expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    endpoint = f"http://127.0.0.1:{azurite.queue_port}/{ACCOUNT}"
    client = QueueClient.from_connection_string(f"QueueEndpoint={endpoint};SharedAccessSignature={sas}", queue_name)
    queue = with_direct_deletes(client)
    assert isinstance(queue, DirectDeleteQueue) and queue._deletes.signing.key is None
    (message,) = _received(sdk_queue, 1)
    queue.delete_message(message.id, message.pop_receipt)
    assert sdk_queue.get_queue_properties().approximate_message_count == 0


def test_a_connection_azurite_closed_while_idle_is_opened_again(sdk_queue):
    queue = with_direct_deletes(sdk_queue)
    first, second = _received(sdk_queue, 2)
    queue.delete_message(first.id, first.pop_receipt)
    time.sleep(6.5)  # Azurite closes a keep-alive connection after 5 s idle
    queue.delete_message(second.id, second.pop_receipt)
    assert queue._deletes.connections.reopened == 1
    assert sdk_queue.get_queue_properties().approximate_message_count == 0


def test_a_delete_whose_answer_is_lost_on_a_reused_connection_is_not_sent_again(azurite, connection_string,
                                                                                  sdk_queue, queue_name):
    from devtools.proxy import FaultProxy

    proxy = FaultProxy(azurite.queue_port, reconnect_upstream=True).start()
    client = QueueClient.from_connection_string(proxy.connection_string(connection_string), queue_name)
    try:
        queue = with_direct_deletes(client)
        first, second = _received(sdk_queue, 2)
        queue.delete_message(first.id, first.pop_receipt)  # the connection stays open, to be reused
        proxy.fail("DELETE", "drop_after", path_contains="/messages/", times=1)
        with pytest.raises(ServiceResponseError):  # the caller learns the answer was lost
            queue.delete_message(second.id, second.pop_receipt)
        assert proxy.faults["DELETE"] == 1 and proxy.requests["DELETE"] == 2  # not sent a second time
        assert sdk_queue.get_queue_properties().approximate_message_count == 0  # storage applied it
        assert queue._deletes.connections.reopened == 0
    finally:
        client.close()
        proxy.stop()


def test_through_the_sdks_pipeline_too_a_lost_delete_answer_then_not_found_is_our_delete(azurite, connection_string,
                                                                                           sdk_queue, queue_name):
    """An Entra ID worker deletes through the SDK (so will every worker once deletes move onto an azure-core
    transport): its pipeline must not retry inside the settler's try, or the lost answer is hidden."""
    from azjobs.storage.http import sdk_retry
    from azjobs.runtime.settler import Settler
    from devtools.proxy import FaultProxy

    proxy = FaultProxy(azurite.queue_port, reconnect_upstream=True).start()
    client = QueueClient.from_connection_string(proxy.connection_string(connection_string), queue_name,
                                                retry_policy=sdk_retry())  # retries of its own, as the worker's
    settler = Settler(1).start()
    try:
        (message,) = _received(sdk_queue, 1)
        proxy.fail("DELETE", "drop_after", path_contains="/messages/", times=1)
        deleted = []
        settler.delete(client, queue_name, message.id, message.pop_receipt, on_deleted=lambda: deleted.append(1),
                       held=lambda: True)
        assert settler.flush(30)
        assert proxy.faults["DELETE"] == 1 and proxy.requests["DELETE"] == 2
        assert deleted == [1]  # the settler's second try read 404 after its first lost its answer
        assert sdk_queue.get_queue_properties().approximate_message_count == 0
    finally:
        settler.stop()
        client.close()
        proxy.stop()


def test_a_token_credential_keeps_the_sdk_client(azurite, queue_name):
    class Token:
        def get_token(self, *scopes, **kwargs):  # never called: nothing is sent
            raise AssertionError("no request expected")

    client = QueueClient(f"https://127.0.0.1:{azurite.queue_port}/devstoreaccount1", queue_name, credential=Token())
    assert with_direct_deletes(client) is client
