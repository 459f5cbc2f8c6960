"""azjobs' HTTP transport: the Azure SDK's pipeline over pooled ``http.client`` connections.

Every queue, blob and table client azjobs creates sends through this transport. Everything
above it stays the SDK's: authentication (shared key, SAS, Entra ID tokens, credential
rotation), retries with back-off, request ids, the user agent and the mapping of answers to
errors. The transport only moves bytes, and does it with less CPU than ``requests``:

- keep-alive connections in one pool per (scheme, host, port, proxy), shared by all threads;
  an idle connection the server closed is noticed before it is used (as urllib3 does), so a
  request is never written into a dead socket;
- proxies from ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` (read once, when the transport
  is made), an ``https`` endpoint through a proxy by a ``CONNECT`` tunnel;
- TLS verified against ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or ``SSL_CERT_FILE`` when set
  (a private CA, TLS inspection, Azure Stack), else certifi's bundle as ``requests`` uses;
- connect and read timeouts per call (``connection_timeout``, ``read_timeout``).

Errors are the ones azure-core's own transports raise, so the SDK's retry policy treats
them alike: ``ServiceRequestError`` when the request cannot have reached the service (the
connection failed), ``ServiceResponseError`` when it was sent and the answer was lost, and
their ``...TimeoutError`` forms.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import select
import socket
import ssl
import threading
from base64 import b64encode
from typing import Any, Iterator, MutableMapping
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment

try:
    import certifi
except ImportError:  # pragma: no cover - azure-core's requests depends on certifi
    certifi = None

from azure.core.exceptions import (IncompleteReadError, ServiceRequestError, ServiceRequestTimeoutError,
                                   ServiceResponseError, ServiceResponseTimeoutError)
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict

DEFAULT_CONNECT_TIMEOUT_S = 20.0
DEFAULT_READ_TIMEOUT_S = 60.0
MAX_IDLE_PER_HOST = 64
BLOCK = 64 * 1024
CA_SETTINGS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


class ProxyError(ServiceRequestError):
    """The proxy refused the tunnel or could not be reached."""


def _default_ca_file() -> str | None:
    for name in CA_SETTINGS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return certifi.where() if certifi is not None else None


def _bypass(host: str, no_proxy: str) -> bool:
    """True when ``host`` is covered by ``NO_PROXY`` (names, domain suffixes, ``*``, IPs and CIDR ranges)."""
    if not no_proxy:
        return False
    if proxy_bypass_environment(host, {"no": no_proxy}):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    for entry in no_proxy.replace(" ", "").split(","):
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


class _Proxy:
    __slots__ = ("host", "port", "auth")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", ""):
            raise ValueError(f"proxy {parts.scheme}://{parts.hostname}: only http:// proxies are supported "
                             "(https endpoints still go through them, in a CONNECT tunnel)")
        if not parts.hostname:
            raise ValueError("a proxy URL needs a host")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.auth = None
        if parts.username is not None:
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("utf-8")
            self.auth = "Basic " + b64encode(token).decode("ascii")

    def __repr__(self) -> str:
        return f"{self.host}:{self.port}"


class HttpClientResponse(HttpResponseImpl):
    """A response whose body was read in full when it arrived (the connection went back to the pool)."""

    def __init__(self, *, request: Any, status: int, reason: str, headers: Any, body: bytes,
                 block_size: int = BLOCK) -> None:
        headers = case_insensitive_dict(headers)
        super().__init__(request=request, internal_response=None, block_size=block_size, status_code=status,
                         reason=reason, content_type=headers.get("Content-Type"), headers=headers,
                         stream_download_generator=_from_content)
        self._content = body

    def close(self) -> None:
        self._is_closed = True

    def body(self) -> bytes:  # the legacy response API the SDK still calls in places
        return self._content or b""


class _from_content:  # noqa: N801 - azure-core calls it like its StreamDownloadGenerator class
    """The body in blocks, for ``stream_download`` (the SDK sets attributes on what it returns)."""

    def __init__(self, pipeline: Any, response: HttpClientResponse, **_: Any) -> None:
        self.pipeline = pipeline
        self.response = response
        self.request = response.request
        self._content = response._content or b""
        self._block = self.block_size = response._block_size
        self._at = 0
        self.content_length = int(response.headers.get("Content-Length") or len(self._content))

    def __len__(self) -> int:
        return self.content_length

    def __iter__(self) -> "_from_content":
        return self

    def __next__(self) -> bytes:
        if self._at >= len(self._content):
            raise StopIteration
        chunk = self._content[self._at:self._at + self._block]
        self._at += len(chunk)
        return chunk


class StorageTransport(HttpTransport):
    """An azure-core ``HttpTransport`` over pooled ``http.client`` connections. Thread-safe.

    ``use_env_settings=False`` ignores proxy and CA variables; ``proxies`` ({"http": url,
    "https": url}) and ``connection_verify`` (False, or a CA bundle path) override them.
    """

    def __init__(self, *, connection_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
                 read_timeout: float = DEFAULT_READ_TIMEOUT_S, use_env_settings: bool = True,
                 proxies: MutableMapping[str, str] | None = None, connection_verify: bool | str = True,
                 connection_cert: Any = None, max_idle: int = MAX_IDLE_PER_HOST, **_: Any) -> None:
        self.connection_timeout = connection_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        env = getproxies_environment() if use_env_settings else {}
        chosen = dict(proxies) if proxies is not None else {k: v for k, v in env.items() if k in ("http", "https")}
        self._proxies = {scheme: _Proxy(url) for scheme, url in chosen.items() if url}
        self._no_proxy = env.get("no", "") if use_env_settings else ""
        self._verify = connection_verify
        self._cert = connection_cert
        self._ca_file = _default_ca_file() if use_env_settings else None
        self._contexts: dict[Any, ssl.SSLContext] = {}
        self._idle: dict[tuple, list[http.client.HTTPConnection]] = {}
        self._routes: dict[tuple[str, str], _Proxy | None] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- HttpTransport -------------------------------------------------------------
    def __enter__(self) -> "StorageTransport":
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()

    def open(self) -> None:
        self._closed = False

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def send(self, request: Any, **kwargs: Any) -> HttpClientResponse:
        connect_timeout = kwargs.pop("connection_timeout", self.connection_timeout)
        read_timeout = kwargs.pop("read_timeout", self.read_timeout)
        verify = kwargs.pop("connection_verify", self._verify)
        cert = kwargs.pop("connection_cert", self._cert)
        proxies = kwargs.pop("proxies", None)
        url = urlsplit(request.url)
        scheme = url.scheme.lower()
        if scheme not in ("http", "https"):
            raise ServiceRequestError(f"unsupported URL scheme {scheme!r} in {url.scheme}://{url.hostname}")
        host, port = url.hostname or "", url.port or (443 if scheme == "https" else 80)
        proxy = _Proxy(proxies[scheme]) if proxies and proxies.get(scheme) else self._route(scheme, host)
        key = (scheme, host, port, repr(proxy) if proxy else None, verify if scheme == "https" else None, cert)
        target = url.path or "/"
        if url.query:
            target += "?" + url.query
        if proxy is not None and scheme == "http":
            target = f"http://{url.netloc}{target}"  # absolute form, to a forward proxy
        headers = dict(request.headers)
        if proxy is not None and scheme == "http" and proxy.auth:
            headers["Proxy-Authorization"] = proxy.auth
        body = _body(request)
        connection, reused = self._acquire(key, scheme, host, port, proxy, verify, cert, connect_timeout)
        try:
            if connection.sock is None:
                connection.connect()
            connection.sock.settimeout(read_timeout)
        except socket.timeout as exc:
            connection.close()
            raise ServiceRequestTimeoutError(f"connecting to {host}:{port} timed out", error=exc) from exc
        except ssl.SSLCertVerificationError as exc:
            connection.close()
            raise ServiceRequestError(
                f"TLS with {host}:{port} failed: the service's certificate is not trusted ({exc.verify_message}); "
                "if a private CA signed it (TLS inspection, Azure Stack, a local emulator), set REQUESTS_CA_BUNDLE "
                "or SSL_CERT_FILE to a PEM file that holds that CA", error=exc) from exc
        except ssl.SSLError as exc:
            connection.close()
            raise ServiceRequestError(f"TLS with {host}:{port} failed: {exc}", error=exc) from exc
        except OSError as exc:
            connection.close()
            if "Tunnel connection failed" in str(exc):
                raise ProxyError(f"proxy {proxy} refused the tunnel to {host}:{port}: {exc}", error=exc) from exc
            raise ServiceRequestError(f"cannot connect to {host}:{port}"
                                      f"{f' through proxy {proxy}' if proxy else ''}: {exc}", error=exc) from exc
        try:
            connection.request(request.method, target, body=body, headers=headers)
        except socket.timeout as exc:
            connection.close()
            raise ServiceResponseTimeoutError(f"sending to {host}:{port} timed out", error=exc) from exc
        except OSError as exc:
            connection.close()
            raise ServiceResponseError(f"the connection to {host}:{port} broke while sending: {exc}",
                                       error=exc) from exc
        try:
            answer = connection.getresponse()
            content = answer.read()
        except socket.timeout as exc:
            connection.close()
            raise ServiceResponseTimeoutError(f"{host}:{port} did not answer within {read_timeout}s",
                                              error=exc) from exc
        except http.client.IncompleteRead as exc:
            connection.close()
            raise IncompleteReadError(f"{host}:{port} closed the connection mid-answer", error=exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise ServiceResponseError(f"{host}:{port} sent no answer: {type(exc).__name__}: {exc}",
                                       error=exc) from exc
        if answer.will_close:
            connection.close()
        else:
            self._release(key, connection)
        return HttpClientResponse(request=request, status=answer.status, reason=answer.reason,
                                  headers=answer.getheaders(), body=content)

    # -- connections -----------------------------------------------------------------
    def _route(self, scheme: str, host: str) -> _Proxy | None:
        route = (scheme, host)
        try:
            return self._routes[route]
        except KeyError:
            pass
        proxy = self._proxies.get(scheme)
        if proxy is not None and _bypass(host, self._no_proxy):
            proxy = None
        self._routes[route] = proxy
        return proxy

    def _context(self, verify: bool | str, cert: Any) -> ssl.SSLContext:
        key = (verify, cert if not isinstance(cert, list) else tuple(cert))
        context = self._contexts.get(key)
        if context is None:
            if verify is False:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                cafile = verify if isinstance(verify, str) else self._ca_file
                if cafile and os.path.isdir(cafile):
                    context = ssl.create_default_context(capath=cafile)
                else:
                    context = ssl.create_default_context(cafile=cafile)
            if cert:
                certfile, keyfile = (cert, None) if isinstance(cert, str) else tuple(cert)
                context.load_cert_chain(certfile, keyfile)
            self._contexts[key] = context
        return context

    def _acquire(self, key: tuple, scheme: str, host: str, port: int, proxy: _Proxy | None, verify: Any, cert: Any,
                 connect_timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                connection = idle.pop()
                if _usable(connection):
                    return connection, True
                connection.close()
        if scheme == "https":
            if proxy is not None:
                connection = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=connect_timeout,
                                                         context=self._context(verify, cert))
                connection.set_tunnel(host, port, headers={"Proxy-Authorization": proxy.auth} if proxy.auth else None)
            else:
                connection = http.client.HTTPSConnection(host, port, timeout=connect_timeout,
                                                         context=self._context(verify, cert))
        elif proxy is not None:
            connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=connect_timeout)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=connect_timeout)
        return connection, False

    def _release(self, key: tuple, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle:
                idle.append(connection)
                return
        connection.close()


def _usable(connection: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection is usable unless the server closed it (its socket reads EOF)."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _body(request: Any) -> Any:
    data = getattr(request, "data", None)
    if data is None:
        content = getattr(request, "content", None)
        data = content
    if data is None or isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if hasattr(data, "read"):
        return data
    if isinstance(data, dict):  # form fields: the SDK never sends these to storage
        raise ValueError("form-encoded bodies are not supported by azjobs' transport")
    return iter(data)


def transport_options(kwargs: dict[str, Any], *, pool: int = MAX_IDLE_PER_HOST) -> dict[str, Any]:
    """``kwargs`` for an SDK client, with a ``StorageTransport`` unless the caller chose one (``transport=``
    or a requests ``session=``: theirs wins). The client's ``connection_timeout`` / ``read_timeout`` go
    to the transport, as the SDK gives them to its own."""
    if kwargs.get("transport") is not None or kwargs.get("session") is not None:
        return kwargs
    options = dict(kwargs)
    options["transport"] = StorageTransport(
        connection_timeout=options.get("connection_timeout", DEFAULT_CONNECT_TIMEOUT_S),
        read_timeout=options.get("read_timeout", DEFAULT_READ_TIMEOUT_S), max_idle=pool)
    return options


__all__ = ["DEFAULT_CONNECT_TIMEOUT_S", "DEFAULT_READ_TIMEOUT_S", "HttpClientResponse", "ProxyError",
           "StorageTransport", "transport_options"]
