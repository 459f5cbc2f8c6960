"""The worker's message deletes on its own connections: the call it makes once per job.

A delete through ``QueueClient.delete_message`` costs the worker about 1.1 ms of CPU (the
SDK's request pipeline, ``requests`` and ``urllib3``); the same request on a keep-alive
``http.client`` connection (``azjobs.storage.direct_http``), signed ``SharedKeyLite`` with the account
key or carrying a SAS, about 0.25 ms. ``with_direct_deletes(queue_client)`` wraps a queue
client so its ``delete_message`` goes that way and every other call stays the SDK's; for an
Entra ID credential it returns the client unchanged.

A refused delete raises what the SDK raises for it (``ResourceNotFoundError`` for
``MessageNotFound``, ``HttpResponseError`` with ``status_code`` and ``error_code`` for a
pop-receipt mismatch), so the settler reads the outcome the same way. A delete whose answer
was lost after it was sent raises ``ServiceResponseError`` and is not sent again here: the
settler's next try decides what a "message not found" then means.
"""

from __future__ import annotations

import re
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, urlsplit

from .direct_http import Connections, Signing, storage_error

API_VERSION = "2021-02-12"
_XML_FIELD = re.compile(r"<(Code|Message)>(.*?)</\1>", re.S)


def _error(status: int, code: str, body: bytes) -> Exception:
    fields = dict(_XML_FIELD.findall(body.decode("utf-8", "replace")))
    return storage_error(status, code or fields.get("Code", ""), fields.get("Message", "").split("\n", 1)[0])


class DirectDeletes:
    """``delete_message`` for one queue on this process's own connections, authorized by ``signing``."""

    def __init__(self, base_url: str, queue: str, signing: Signing, *, connections: Connections | None = None) -> None:
        parts = urlsplit(base_url)
        self.connections = connections or Connections(f"{parts.scheme}://{parts.netloc}")
        self._prefix = f"{parts.path.rstrip('/')}/{queue}/messages/"
        self.signing = signing

    def delete_message(self, message: Any, pop_receipt: str | None = None, **_: Any) -> None:
        message_id = message if isinstance(message, str) else message.id
        receipt = pop_receipt if pop_receipt is not None else getattr(message, "pop_receipt", None)
        if not receipt:
            raise ValueError("pop_receipt must be present")
        path = self._prefix + quote(message_id, safe="")
        query = f"popreceipt={quote(receipt, safe='')}" + (f"&{self.signing.sas}" if self.signing.sas else "")
        date = formatdate(usegmt=True)
        headers = {"x-ms-date": date, "x-ms-version": API_VERSION, "Content-Length": "0"}
        authorization = self.signing.authorization(
            f"DELETE\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n/{self.signing.account}{path}")
        if authorization:
            headers["Authorization"] = authorization
        status, answer, body = self.connections.send("DELETE", f"{path}?{query}", None, headers,
                                                     resend_unanswered=False)
        if status != 204:
            raise _error(status, answer.get("x-ms-error-code", "") or "", body)


class DirectDeleteQueue:
    """A ``QueueClient`` whose ``delete_message`` is a ``DirectDeletes``; every other call is the client's."""

    def __init__(self, queue_client: Any, deletes: DirectDeletes) -> None:
        self._queue_client = queue_client
        self._deletes = deletes

    def delete_message(self, message: Any, pop_receipt: str | None = None, **kwargs: Any) -> None:
        self._deletes.delete_message(message, pop_receipt, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue_client, name)


def with_direct_deletes(queue_client: Any, connections: Connections | None = None) -> Any:
    """``queue_client`` deleting on direct connections when it holds an account key or a SAS."""
    base_url = f"{queue_client.scheme}://{queue_client.primary_hostname}"
    credential = getattr(queue_client, "credential", None)
    account, key = getattr(credential, "account_name", None), getattr(credential, "account_key", None)
    if account and key:
        return DirectDeleteQueue(queue_client, DirectDeletes(base_url, queue_client.queue_name,
                                                             Signing(account=account, key=key), connections=connections))
    query = (getattr(queue_client, "_query_str", "") or "").lstrip("?")
    if credential is None and "sig=" in query:
        return DirectDeleteQueue(queue_client, DirectDeletes(base_url, queue_client.queue_name, Signing(sas=query),
                                                             connections=connections))
    return queue_client


__all__ = ["DirectDeleteQueue", "DirectDeletes", "with_direct_deletes"]
