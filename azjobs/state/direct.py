"""Transactions sent on the writer's own connections, signed with the account key or a SAS.

Through the table client's pipeline one transaction costs the worker about 1.3 ms of CPU; on
the keep-alive connections of ``azjobs.storage.direct_http`` it costs about 0.5 ms, and the writer's
threads hold the GIL that much less while job threads wait for it. This is the sender for
the two credentials a connection string carries:

- an account key: the request is signed with ``SharedKeyLite`` (the string to sign is the
  date and the canonical resource, ``/<account>/<path>``);
- a shared access signature: its query goes on the URL.

An Entra ID token credential keeps the pipeline sender (``azjobs.state.batch.TableTransactions``),
which refreshes tokens.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any, Sequence
from urllib.parse import urlsplit

from ..storage.direct_http import Connections, Signing
from .batch import EachWrite, TableTransactions, Write, build, parse

API_VERSION = "2019-02-02"


class DirectTransactions:
    """Sends transactions for one table, authorized by ``signing`` (the account key or a SAS)."""

    def __init__(self, base_url: str, table: str, signing: Signing, *, timeout_s: float = 10.0) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.table = table
        self.connections = Connections(f"{parts.scheme}://{parts.netloc}", timeout_s=timeout_s)
        self._path = parts.path.rstrip("/") + "/$batch"
        self.signing = signing
        self._query = f"?{signing.sas}" if signing.sas else ""

    @property
    def reopened(self) -> int:
        return self.connections.reopened

    @classmethod
    def for_client(cls, table_client: Any) -> "DirectTransactions | None":
        """The direct sender for a ``TableClient`` signed with a key or a SAS; None for other credentials."""
        from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential

        base_url = f"{table_client.scheme}://{table_client._primary_hostname}"
        credential = getattr(table_client, "credential", None)
        if isinstance(credential, AzureNamedKeyCredential):
            return cls(base_url, table_client.table_name,
                       Signing(account=credential.named_key.name, key=credential.named_key.key))
        if isinstance(credential, AzureSasCredential):
            return cls(base_url, table_client.table_name, Signing(sas=credential.signature))
        query = (getattr(table_client, "_query_str", "") or "").lstrip("?")
        if credential is None and "sig=" in query:
            return cls(base_url, table_client.table_name, Signing(sas=query))
        return None

    def _headers(self, content_type: str) -> dict[str, str]:
        date = formatdate(usegmt=True)
        headers = {"Content-Type": content_type, "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx",
                   "Accept": "application/json", "x-ms-version": API_VERSION, "x-ms-date": date}
        authorization = self.signing.authorization(f"{date}\n/{self.signing.account}{self._path}")
        if authorization:
            headers["Authorization"] = authorization
        return headers

    def send(self, writes: Sequence[Write]) -> list[Any]:
        content_type, body = build(self.base_url, self.table, writes)
        status, headers, data = self.connections.send("POST", self._path + self._query, body,
                                                      self._headers(content_type))
        return parse(status, data, len(writes), headers.get("x-ms-error-code", ""))

    def close(self) -> None:
        self.connections.close()


def transactions_for(table: Any) -> Any:
    """The sender for ``table``: transactions for a ``TableClient`` (on the writer's own connections
    with a key or a SAS, through the client's pipeline with a token), single writes otherwise."""
    try:
        from azure.data.tables import TableClient
    except ImportError:  # pragma: no cover - the state extra installs it
        TableClient = None  # type: ignore[assignment]
    if TableClient is not None and isinstance(table, TableClient):
        return DirectTransactions.for_client(table) or TableTransactions(table)
    return EachWrite(table)


__all__ = ["DirectTransactions", "transactions_for"]
