"""Keep-alive HTTP connections of our own, one per thread, for azjobs' two hottest storage calls.

A worker deletes every message it finishes, and with job state on it sends a table
transaction for a few of them. Through the SDK's pipeline (``azure.core`` policies, then
``requests``, then ``urllib3``) each of those costs the worker about 1.1–1.3 ms of CPU; the
same request on an ``http.client`` connection costs 0.2–0.5 ms. ``azjobs.storage.deletes`` and
``azjobs.state.direct`` send them here, signed with the account key (``SharedKeyLite``) or
carrying a SAS; an Entra ID credential keeps the SDK's pipeline, which refreshes its tokens.

A connection the service closed while idle (Azurite closes them after 5 s) is noticed before
a request goes out on it (it reads as closed, as ``urllib3`` checks) and opened again; one that
fails while the request is written is opened again and the request sent once more. Any other
failure is raised as ``ServiceRequestError`` (not sent) or ``ServiceResponseError`` (sent, no
answer), the exceptions the SDK raises for the same faults. A request whose answer was lost
after it was sent is sent again only with ``resend_unanswered`` (the state writer's, which
recognises its own landed write in the answer to the re-sent one); a delete is not, so the
settler sees the lost answer and knows what a "message not found" on its next try means.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import select
import threading
from typing import Mapping
from urllib.parse import urlsplit

TIMEOUT_S = 10.0


class Signing:
    """How a direct request is authorized: signed ``SharedKeyLite`` with the account key, or a SAS query."""

    def __init__(self, *, account: str | None = None, key: str | None = None, sas: str | None = None) -> None:
        if (key is None) == (sas is None):
            raise ValueError("a direct request needs exactly one of an account key and a SAS")
        if key is not None and not account:
            raise ValueError("signing with an account key needs the account name")
        self.account = account
        self.key = base64.b64decode(key) if key is not None else None
        self.sas = sas.lstrip("?") if sas else ""  # the SAS query, without "?"

    def authorization(self, string_to_sign: str) -> str | None:
        """The ``Authorization`` header for ``string_to_sign`` (None with a SAS: the query carries it)."""
        if self.key is None:
            return None
        signed = base64.b64encode(hmac.new(self.key, string_to_sign.encode("utf-8"), hashlib.sha256).digest())
        return f"SharedKeyLite {self.account}:{signed.decode('ascii')}"


def storage_error(status: int, code: str, message: str) -> Exception:
    """The exception the SDK raises for a refused request: by status, with ``status_code`` and ``error_code``."""
    from azure.core import exceptions

    kind = {404: exceptions.ResourceNotFoundError, 409: exceptions.ResourceExistsError,
            412: exceptions.ResourceModifiedError}.get(status, exceptions.HttpResponseError)
    error = kind(message=f"{status} {code}: {message}".strip())
    error.status_code = status
    error.error_code = code
    return error


class Connections:
    """Per-thread keep-alive connections to one storage endpoint (``base_url``: scheme and host)."""

    def __init__(self, base_url: str, *, timeout_s: float = TIMEOUT_S) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not a storage endpoint URL: {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.netloc
        self._timeout_s = timeout_s
        self._local = threading.local()
        self.reopened = 0  # connections the service had closed while idle, opened again for a request

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            connection = self._local.connection = kind(self._host, timeout=self._timeout_s)
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def send(self, method: str, target: str, body: bytes | None, headers: Mapping[str, str], *,
             resend_unanswered: bool = True) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request (``target``: path and query); its status, headers and body.

        ``resend_unanswered``: a reused connection that closes after the request was sent, before
        any answer, is taken for one the service closed while idle and the request is sent once
        more; without it, that raises ``ServiceResponseError`` (the request may have been applied).
        """
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError

        for attempt in (1, 2):
            reused = getattr(self._local, "connection", None) is not None
            if reused and _closed_by_peer(self._local.connection):
                self._drop()  # the service closed it while it was idle: nothing is sent on it
                self.reopened += 1
                reused = False
            connection = self._connection()
            try:
                connection.request(method, target, body=body, headers=dict(headers))
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                if reused and attempt == 1:
                    self.reopened += 1
                    continue  # the service closed the idle connection: nothing was sent
                raise ServiceRequestError(f"could not send to storage: {exc!r}") from None
            try:
                response = connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop()
                if reused and attempt == 1 and resend_unanswered:
                    self.reopened += 1
                    continue  # closed before it read the request, as an idle connection is
                raise ServiceResponseError(f"no answer from storage: {exc!r}") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise ServiceResponseError(f"no answer from storage: {exc!r}") from None
            if response.will_close:
                self._drop()
            return response.status, response.headers, data
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._drop()


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle keep-alive connection can be read from: the service closed it (or it has no socket)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


__all__ = ["Connections", "Signing", "storage_error"]
