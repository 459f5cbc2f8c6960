"""Transactions sent on the writer's own HTTP connections, signed with the account key or a SAS.

Through the table client's pipeline (``azure.core`` policies, then ``requests``, then
``urllib3``) one transaction costs the worker about 1.3 ms of CPU; on a kept-alive
``http.client`` connection per writer thread it costs about 0.5 ms, and the writer's threads
hold the GIL that much less while job threads wait for it. This is the sender for the two
credentials a connection string carries:

- an account key: the request is signed with ``SharedKeyLite`` (the string to sign is the
  date and the canonical resource, ``/<account>/<path>``);
- a shared access signature: its query goes on the URL.

An Entra ID token credential keeps the pipeline sender (``azjobs.state.batch.TableTransactions``),
which refreshes tokens. A connection the service closed while idle is opened again and the
request sent once more, as ``urllib3`` does; any other failure is the service's or the
network's, answered as ``ServiceRequestError`` (not sent) or ``ServiceResponseError`` (sent,
no answer), which the store treats as an outage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import threading
from email.utils import formatdate
from typing import Any, Sequence
from urllib.parse import urlsplit

from .batch import Write, build, parse

TIMEOUT_S = 10.0
API_VERSION = "2019-02-02"


class DirectTransactions:
    """Sends transactions for one table with a key (``key``) or a SAS (``sas``, the query without ``?``)."""

    def __init__(self, base_url: str, table: str, *, account: str | None = None, key: str | None = None,
                 sas: str | None = None, timeout_s: float = TIMEOUT_S) -> None:
        if (key is None) == (sas is None):
            raise ValueError("DirectTransactions needs exactly one of an account key and a SAS")
        if key is not None and not account:
            raise ValueError("signing with an account key needs the account name")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not a table endpoint URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.table = table
        self._https = parts.scheme == "https"
        self._host = parts.netloc
        self._path = parts.path.rstrip("/") + "/$batch"
        self._account = account
        self._key = base64.b64decode(key) if key is not None else None
        self._query = f"?{sas.lstrip('?')}" if sas else ""
        self._timeout_s = timeout_s
        self._local = threading.local()
        self.reopened = 0  # connections the service had closed while idle, opened again for a request

    @classmethod
    def for_client(cls, table_client: Any) -> "DirectTransactions | None":
        """The direct sender for a ``TableClient`` signed with a key or a SAS; None for other credentials."""
        from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential

        base_url = f"{table_client.scheme}://{table_client._primary_hostname}"
        credential = getattr(table_client, "credential", None)
        if isinstance(credential, AzureNamedKeyCredential):
            return cls(base_url, table_client.table_name, account=credential.named_key.name,
                       key=credential.named_key.key)
        if isinstance(credential, AzureSasCredential):
            return cls(base_url, table_client.table_name, sas=credential.signature)
        query = (getattr(table_client, "_query_str", "") or "").lstrip("?")
        if credential is None and "sig=" in query:
            return cls(base_url, table_client.table_name, sas=query)
        return None

    def _headers(self, content_type: str) -> dict[str, str]:
        date = formatdate(usegmt=True)
        headers = {"Content-Type": content_type, "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx",
                   "Accept": "application/json", "x-ms-version": API_VERSION, "x-ms-date": date}
        if self._key is not None:
            to_sign = f"{date}\n/{self._account}{self._path}".encode("utf-8")
            signature = base64.b64encode(hmac.new(self._key, to_sign, hashlib.sha256).digest()).decode("ascii")
            headers["Authorization"] = f"SharedKeyLite {self._account}:{signature}"
        return headers

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

    def send(self, writes: Sequence[Write]) -> list[Any]:
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError

        content_type, body = build(self.base_url, self.table, writes)
        headers = self._headers(content_type)
        for attempt in (1, 2):
            reused = getattr(self._local, "connection", None) is not None
            connection = self._connection()
            try:
                connection.request("POST", self._path + self._query, body=body, headers=headers)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                if reused and attempt == 1:
                    self.reopened += 1
                    continue  # the service closed the idle connection: nothing was sent
                raise ServiceRequestError(f"could not send to the state table: {exc!r}") from None
            try:
                response = connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop()
                if reused and attempt == 1:
                    self.reopened += 1
                    continue  # closed before it read the request, as an idle connection is
                raise ServiceResponseError(f"no answer from the state table: {exc!r}") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise ServiceResponseError(f"no answer from the state table: {exc!r}") from None
            if response.will_close:
                self._drop()
            return parse(response.status, data, len(writes), response.headers.get("x-ms-error-code", ""))
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._drop()


__all__ = ["DirectTransactions"]
