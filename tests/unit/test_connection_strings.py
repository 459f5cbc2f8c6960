"""A connection string is checked when the Client/Connection is built, never echoing a secret.

Before: ``azjobs.configure("garbage")`` was accepted (the SDK failed at the first send), and a
truncated account key failed at the first send with binascii's "Incorrect padding".
"""

from __future__ import annotations

import base64

import pytest

import azjobs
from azjobs.storage.client import Client
from azjobs.storage.connection import AZURITE_KEY, Connection, azurite_connection_string, resolve_connection
from azjobs.errors import ConfigurationError

KEY = base64.b64encode(b"a perfectly fine account key of 32+ bytes").decode("ascii")
GOOD = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net"
ARGUMENT = "the connection string given to azjobs.configure() or azjobs.Client()"


@pytest.mark.parametrize("value,message", [
    ("garbage", f"{ARGUMENT} is not a connection string: expected key=value pairs separated by ';' "
                "(DefaultEndpointsProtocol, AccountName and AccountKey from the storage account's Access keys, "
                "or UseDevelopmentStorage=true)"),
    (";;", f"{ARGUMENT} is not a connection string"),
    ("AccountName=acct;pastedkeywithoutitsname", f"{ARGUMENT} is not a connection string"),
    (GOOD.replace(KEY, KEY[:-3]), f"{ARGUMENT}: AccountKey is not a valid base64 key (is it truncated, or cut at a "
                                  "';'? copy the whole key from the storage account's Access keys)"),
    (GOOD.replace(KEY, ""), f"{ARGUMENT}: AccountKey is not a valid base64 key"),
    (GOOD.replace(KEY, KEY[:10] + "!" + KEY[11:]), f"{ARGUMENT}: AccountKey is not a valid base64 key"),
    (f"AccountKey={KEY}", f"{ARGUMENT} has an AccountKey but no AccountName"),
    ("DefaultEndpointsProtocol=https;AccountName=acct", f"{ARGUMENT} has no credential: give AccountName and "
                                                        "AccountKey, or SharedAccessSignature"),
    ("SharedAccessSignature=sv=1&sig=abcdefghijkl", f"{ARGUMENT} has a SharedAccessSignature but neither "
                                                    "QueueEndpoint nor AccountName"),
    (GOOD.replace("https", "ftp"), f"{ARGUMENT}: DefaultEndpointsProtocol must be http or https"),
    (f"{GOOD};QueueEndpoint=acct.queue.core.windows.net", f"{ARGUMENT}: QueueEndpoint must be an http(s) URL"),
], ids=["garbage", "empty-pairs", "bare-key", "truncated-key", "empty-key", "not-base64", "no-account",
        "no-credential", "sas-without-endpoint", "protocol", "endpoint-without-scheme"])
def test_a_connection_string_that_cannot_work_fails_when_built(value, message):
    for build in (lambda: Client(value), lambda: azjobs.configure(value), lambda: Connection(connection_string=value,
                                                                                             source="argument")):
        with pytest.raises(ConfigurationError) as info:
            build()
        assert str(info.value).startswith(message)
        assert KEY not in str(info.value) and KEY[:-3] not in str(info.value) and "abcdefghijkl" not in str(info.value)


def test_an_app_setting_is_named_in_the_error():
    with pytest.raises(ConfigurationError) as info:
        resolve_connection(environ={"AzureWebJobsStorage": GOOD.replace(KEY, KEY[:-3])})
    assert str(info.value).startswith("the connection string in app setting AzureWebJobsStorage: AccountKey is not "
                                      "a valid base64 key")
    with pytest.raises(ConfigurationError, match="^the connection string in app setting JobsStorage is not a"):
        resolve_connection("JobsStorage", environ={"JobsStorage": "oops"})


@pytest.mark.parametrize("value", [
    GOOD,
    f"{GOOD};",
    f"accountname=acct;accountkey={KEY}",  # keys are case-insensitive, as for the SDK
    azurite_connection_string(),
    "UseDevelopmentStorage=true",
    "QueueEndpoint=https://acct.queue.core.windows.net;SharedAccessSignature=sv=2026-01-01&sig=abc%2Bdef",
    "AccountName=acct;SharedAccessSignature=sv=2026-01-01&sig=abc",
])
def test_working_connection_strings_are_accepted(value):
    client = Client(value)
    assert client.connection.connection_string
    client.close()


def test_use_development_storage_given_to_configure_is_azurite():
    client = Client("UseDevelopmentStorage=true")
    assert client.connection.connection_string == azurite_connection_string()
    assert client.connection.queue_endpoint == "http://127.0.0.1:10001/devstoreaccount1"


def test_queue_endpoint_for_messages_has_no_secret():
    assert Connection(connection_string=GOOD).queue_endpoint == "https://acct.queue.core.windows.net"
    sas = ("QueueEndpoint=https://acct.queue.core.windows.net/?sv=1&sig=secretsignature;"
           "SharedAccessSignature=sv=1&sig=secretsignature")
    assert Connection(connection_string=sas).queue_endpoint == "https://acct.queue.core.windows.net"
    assert AZURITE_KEY not in Connection(connection_string=azurite_connection_string()).queue_endpoint
