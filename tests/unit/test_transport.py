"""azjobs' HTTP transport (azjobs.storage.transport) on its own: proxy choice, proxy credentials, errors."""

from __future__ import annotations

import socket

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.core.rest import HttpRequest

from azjobs.storage.transport import StorageTransport, _bypass, _Proxy, transport_options
from devtools.azurite import free_port


@pytest.mark.parametrize("host, no_proxy, bypassed", [
    ("127.0.0.1", "127.0.0.0/8", True),  # a CIDR range (urllib alone does not read these)
    ("10.20.30.40", "example.invalid, 10.0.0.0/8", True),
    ("10.20.30.40", "127.0.0.0/8", False),
    ("myaccount.queue.core.windows.net", ".core.windows.net", True),  # a domain suffix
    ("myaccount.queue.core.windows.net", "blob.core.windows.net", False),
    ("anything.example", "*", True),
    ("127.0.0.1", "", False),
])
def test_no_proxy_covers_names_suffixes_addresses_and_cidr_ranges(host, no_proxy, bypassed):
    assert _bypass(host, no_proxy) is bypassed


def test_the_proxy_comes_from_the_environment_and_no_proxy_routes_around_it(monkeypatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.0/8")
    transport = StorageTransport()
    assert repr(transport._route("https", "acct.queue.core.windows.net")) == "proxy.internal:3128"
    assert transport._route("https", "127.0.0.1") is None
    assert transport._route("http", "acct.queue.core.windows.net") is None  # no HTTP_PROXY set
    assert StorageTransport(use_env_settings=False)._route("https", "acct.queue.core.windows.net") is None


def test_proxy_credentials_in_the_url_become_a_basic_proxy_authorization():
    proxy = _Proxy("http://us%40er:p%3Ass@proxy.internal:8080")
    assert (proxy.host, proxy.port) == ("proxy.internal", 8080)
    assert proxy.auth == "Basic dXNAZXI6cDpzcw=="  # base64 of "us@er:p:ss"


def test_an_https_proxy_url_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="only http:// proxies are supported"):
        _Proxy("https://proxy.internal:8443")


def test_a_refused_connection_is_a_service_request_error_that_never_shows_the_query():
    port = free_port()  # nothing listens there
    request = HttpRequest("DELETE", f"http://127.0.0.1:{port}/acct/q/messages/1?popreceipt=r&sig=TopSecretSig%3D")
    with pytest.raises(ServiceRequestError) as caught:
        StorageTransport(connection_timeout=2).send(request)
    text = str(caught.value)
    assert f"cannot connect to 127.0.0.1:{port}" in text and "TopSecret" not in text and "sig=" not in text


def test_a_server_that_closes_without_answering_is_a_service_response_error():
    from azure.core.exceptions import ServiceResponseError

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    import threading

    def accept_and_close():
        connection, _ = server.accept()
        connection.recv(65536)  # the request arrived ...
        connection.close()  # ... and no answer comes

    thread = threading.Thread(target=accept_and_close, daemon=True)
    thread.start()
    try:
        with pytest.raises(ServiceResponseError):
            StorageTransport(read_timeout=10).send(HttpRequest("GET", f"http://127.0.0.1:{port}/acct/q?sig=x"))
    finally:
        thread.join(10)
        server.close()


def test_a_callers_transport_or_session_wins_over_azjobs_own():
    mine = object()
    assert transport_options({"transport": mine})["transport"] is mine
    assert "transport" not in transport_options({"session": object()})
    made = transport_options({"connection_timeout": 5, "read_timeout": 30}, pool=7)["transport"]
    assert isinstance(made, StorageTransport)
    assert (made.connection_timeout, made.read_timeout, made.max_idle) == (5, 30, 7)


class _Answer:
    def __init__(self, headers):
        self.headers = headers


class _Try:
    def __init__(self, response=None, error=None):
        self.http_response, self.error = response, error


@pytest.mark.parametrize("headers, at_least", [({"Retry-After": "7"}, 7.0), ({"x-ms-retry-after-ms": "4500"}, 4.5),
                                               ({"Retry-After": "600"}, 60.0)])
def test_a_throttled_answer_waits_at_least_what_retry_after_asks(headers, at_least):
    from azure.storage.queue import ExponentialRetry

    from azjobs.storage.http import fast_connect_retry

    policy = fast_connect_retry(ExponentialRetry)(initial_backoff=0.5, increment_base=2, retry_total=3,
                                                  random_jitter_range=0)
    settings = {"count": 0, "history": [_Try(_Answer(headers))]}
    assert policy.get_backoff_time(settings) == at_least  # capped at a minute
    assert policy.get_backoff_time({"count": 0, "history": [_Try(_Answer({}))]}) == 0.5  # no header: back-off
