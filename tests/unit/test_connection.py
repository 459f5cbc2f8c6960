import json

import pytest

from azjobs.storage.connection import AZURITE_KEY, Connection, azurite_connection_string, redact, resolve_connection
from azjobs.errors import ConfigurationError

SECRET = "c2VjcmV0LWtleS12YWx1ZQ=="
REAL = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={SECRET};EndpointSuffix=core.windows.net"


def test_unset_means_azurite_on_default_ports(tmp_path):
    conn = resolve_connection(environ={}, local_settings=tmp_path / "none.json")
    assert conn.connection_string == azurite_connection_string()
    assert "10001" in conn.connection_string


@pytest.mark.parametrize("value", ["UseDevelopmentStorage=true", "UseDevelopmentStorage=true;", "usedevelopmentstorage = TRUE"])
def test_use_development_storage_is_azurite(value, tmp_path):
    conn = resolve_connection(environ={"AzureWebJobsStorage": value}, local_settings=tmp_path / "x.json")
    assert conn.connection_string == azurite_connection_string()


def test_connection_string_is_used_and_never_shown():
    conn = resolve_connection(environ={"AzureWebJobsStorage": REAL})
    assert conn.connection_string == REAL
    assert SECRET not in repr(conn) and SECRET not in str(conn) and SECRET not in conn.description
    assert "AccountKey=***" in repr(conn)


def test_identity_based_settings():
    conn = resolve_connection(environ={"AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net"})
    assert conn.connection_string is None
    assert conn.queue_service_uri == "https://acct.queue.core.windows.net"
    conn = resolve_connection(environ={"AzureWebJobsStorage__accountName": "acct"})
    assert conn.queue_service_uri == "https://acct.queue.core.windows.net"
    assert conn.blob_service_uri == "https://acct.blob.core.windows.net"
    assert conn.table_service_uri == "https://acct.table.core.windows.net"
    conn = resolve_connection(environ={"AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net",
                                       "AzureWebJobsStorage__tableServiceUri": "https://t.table.core.windows.net"})
    assert conn.table_service_uri == "https://t.table.core.windows.net"


def test_table_service_reaches_the_same_account_as_the_queues():
    azurite = resolve_connection(environ={"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert azurite.table_service().url.startswith("http://127.0.0.1:10002/devstoreaccount1")
    identity = Connection(queue_service_uri="https://acct.queue.core.windows.net",
                          table_service_uri="https://acct.table.core.windows.net")
    assert identity.table_service().account_name == "acct"
    with pytest.raises(ConfigurationError, match="tableServiceUri"):
        Connection(queue_service_uri="https://acct.queue.core.windows.net").table_service()


def test_identity_based_client_uses_default_azure_credential():
    from azure.identity import DefaultAzureCredential  # a test dependency: missing, the test fails

    conn = Connection(queue_service_uri="https://acct.queue.core.windows.net")
    service = conn.queue_service()
    assert isinstance(service.credential, DefaultAzureCredential)
    assert service.account_name == "acct"


def test_named_connection_setting():
    default = "DefaultEndpointsProtocol=http;AccountName=other;AccountKey=eA==;QueueEndpoint=http://x/other"
    conn = resolve_connection("MyStorage", environ={"AzureWebJobsStorage": default, "MyStorage": REAL})
    assert conn.connection_string == REAL and conn.source == "MyStorage"
    # A named connection that is not set is an error, never a fall back to AzureWebJobsStorage or Azurite.
    with pytest.raises(ConfigurationError, match="MyStorage"):
        resolve_connection("MyStorage", environ={"AzureWebJobsStorage": default})


def test_not_a_connection_string_is_a_clear_error_without_the_value():
    with pytest.raises(ConfigurationError) as info:
        resolve_connection(environ={"AzureWebJobsStorage": "hunter2secret"})
    assert "hunter2secret" not in str(info.value)


def test_bad_identity_uri():
    with pytest.raises(ConfigurationError, match="http"):
        resolve_connection(environ={"AzureWebJobsStorage__queueServiceUri": "acct.queue"})


def test_local_settings_values_are_used_when_env_has_none(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"AzureWebJobsStorage": REAL}}))
    assert resolve_connection(environ={}, local_settings=path).connection_string == REAL
    other = "DefaultEndpointsProtocol=http;AccountName=b;AccountKey=eA==;QueueEndpoint=http://x/b"
    assert resolve_connection(environ={"AzureWebJobsStorage": other}, local_settings=path).connection_string == other


def test_redact():
    text = redact(f"failed for {REAL} and https://x/q?sv=1&sig=abcdef&se=2")
    assert SECRET not in text and "abcdef" not in text
    assert AZURITE_KEY not in redact(azurite_connection_string())
