"""One entity group transaction on Table Storage: up to 100 writes to one partition, one request.

Table Storage bills and serves a transaction (``POST $batch``) as one request, and applies
its writes all or none. The state writer (``azjobs.state.writer``) gathers the RUNNING and
SUCCESSFUL writes of concurrent jobs into these: on Azurite a transaction of 8 writes costs
the service a fifth, and the worker a sixth, of 8 single calls.

The request body is built here rather than with ``TableClient.submit_transaction``, which
runs each write through the SDK's whole request pipeline before sending (about 1.3 ms of
CPU per write). The one request is sent through the table client's own pipeline
(``TableTransactions``), whatever its credential: its authentication (key, SAS, Entra ID
token, a rotated credential), retries with back-off (a 503 ServerBusy is retried, honouring
``Retry-After``), request id, user agent and transport (azjobs.storage.transport) apply.

``send(writes)`` answers each write in order: its new ETag, an exception carrying the status
(404, 412, ...) for the write the service refused, or ``RETRY`` for the writes of a refused
transaction that were not at fault (they were not applied and may be sent again).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Sequence
from urllib.parse import quote, urlsplit

from azure.core.rest import HttpRequest

from ..storage.errors import storage_error

try:
    from azure.data.tables import TableClient
except ImportError:  # pragma: no cover - the state extra installs it
    TableClient = None  # type: ignore[assignment,misc]
from ..storage.table_rules import MAX_TRANSACTION_BYTES

MAX_WRITES = 100  # the service's limit per transaction
# The service refuses a transaction of 4 MiB or more (413 RequestBodyTooLarge; Azurite does not check):
# the writer keeps each body under this, with room for the multipart boundaries.
MAX_BYTES = MAX_TRANSACTION_BYTES - 64 * 1024
RETRY = object()
RESENT_METHODS = frozenset({"POST"})
_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})", re.M)
_INT32 = (-(2 ** 31), 2 ** 31 - 1)


@dataclass(frozen=True)
class Write:
    """Insert-or-merge ``entity`` (no ``etag``), or merge it if the entity still has ``etag``."""

    entity: dict[str, Any]
    etag: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.entity["PartitionKey"], self.entity["RowKey"]

    @cached_property
    def body(self) -> bytes:
        """The entity's JSON as a transaction carries it (encoded once, when first asked)."""
        return json.dumps(wire_entity(self.entity), ensure_ascii=False, separators=(",", ":")).encode()

    @property
    def size(self) -> int:
        """Bytes this write takes in a transaction's body: its JSON and its part's headers (the request
        line names the keys, percent-encoded; 1 KiB covers the rest, the account's URL included)."""
        partition, row = self.key
        return len(self.body) + 1024 + 3 * (len(partition.encode()) + len(row.encode()))


def _key(value: str) -> str:
    return quote(value.replace("'", "''"), safe="")


def wire_entity(entity: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of an entity, with the OData types Table Storage needs for non-string values."""
    body: dict[str, Any] = {}
    for name, value in entity.items():
        if value is None:
            continue
        if isinstance(value, bool) or isinstance(value, str):
            body[name] = value
        elif isinstance(value, int):
            if _INT32[0] <= value <= _INT32[1]:
                body[name] = value
            else:
                body[name], body[f"{name}@odata.type"] = str(value), "Edm.Int64"
        elif isinstance(value, float):
            body[name], body[f"{name}@odata.type"] = value, "Edm.Double"
        elif isinstance(value, datetime):
            moment = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
            body[name] = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            body[f"{name}@odata.type"] = "Edm.DateTime"
        else:
            raise TypeError(f"entity property {name!r}: {type(value).__name__} is not written in a transaction")
    return body


def build(base_url: str, table: str, writes: Sequence[Write]) -> tuple[str, bytes]:
    """The ``multipart/mixed`` content type and body of one transaction."""
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()]
    for index, write in enumerate(writes):
        body = write.body
        partition, row = write.key
        lines = [f"MERGE {base_url}/{table}(PartitionKey='{_key(partition)}',RowKey='{_key(row)}') HTTP/1.1",
                 "Content-Type: application/json", "Accept: application/json;odata=nometadata",
                 "DataServiceVersion: 3.0", f"Content-ID: {index + 1}"]
        if write.etag:
            lines.append(f"If-Match: {write.etag}")
        lines.append(f"Content-Length: {len(body)}")
        parts.append(f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                     .encode() + "\r\n".join(lines).encode() + b"\r\n\r\n" + body + b"\r\n")
    parts.append(f"--{changeset}--\r\n--{batch}--\r\n".encode())
    return f"multipart/mixed; boundary={batch}", b"".join(parts)


def _odata_error(text: str) -> tuple[str, str]:
    start = text.find("{")
    try:  # the JSON is followed by the multipart's closing boundaries
        detail = json.JSONDecoder().raw_decode(text[start:])[0]["odata.error"] if start >= 0 else {}
        message = detail.get("message", {})
        return str(detail.get("code", "")), str(message.get("value", "") if isinstance(message, dict) else message)
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", text.strip()[:500]


def parse(status: int, body: bytes, count: int, error_code: str = "", response: Any = None) -> list[Any]:
    """Each write's answer from the response to a transaction of ``count`` writes (see module doc).

    ``error_code`` is the response's ``x-ms-error-code`` header, for a transaction refused whole
    (raised as the SDK raises it: 401/403 ``ClientAuthenticationError``, 404 ``ResourceNotFoundError``, ...).
    """
    if status != 202:
        code, message = _odata_error(body.decode("utf-8", "replace"))
        raise storage_error(status, code or error_code or "", message, response)
    text = body.decode("utf-8", "replace")
    found = list(_STATUS.finditer(body))
    answers: list[Any] = []
    for number, match in enumerate(found):
        end = found[number + 1].start() if number + 1 < len(found) else len(body)
        part = body[match.start():end].decode("utf-8", "replace")
        head, _, rest = part.partition("\r\n\r\n")
        code = int(match.group(1))
        headers = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 200 <= code < 300:
            answers.append(headers.get("etag"))
            continue
        error_code, message = _odata_error(rest)
        index = None
        if headers.get("content-id", "").isdigit():
            index = int(headers["content-id"]) - 1
        elif re.match(r"^\d+:", message):
            index = int(message.split(":", 1)[0])
        error = storage_error(code, error_code, message)
        if index is None or not 0 <= index < count:
            raise error  # the service refused the transaction without saying which write
        return [error if i == index else RETRY for i in range(count)]
    if len(answers) != count:
        raise storage_error(502, "BadBatchResponse", f"{len(answers)} answers to {count} writes: {text[:300]!r}")
    return answers


class TableTransactions:
    """Sends transactions for one table through its ``TableClient``'s pipeline.

    ``azure-data-tables`` has no public call for a request it did not build: the request goes to
    the pipeline client the ``TableClient`` holds (``table_client._client._client``, azure-core's
    ``PipelineClient``), so every policy the SDK configured for that client applies.
    """

    def __init__(self, table_client: Any) -> None:
        self.table_client = table_client
        self.table = table_client.table_name
        # The account URL the client was made with (public ``url``: scheme, host, the account's path in
        # an emulator, and the SAS query when the credential is a SAS in the URL).
        parts = urlsplit(table_client.url)
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.url = f"{self.base_url}/$batch" + (f"?{parts.query}" if parts.query else "")
        self._pipeline = table_client._client._client
        self.api_version = table_client.api_version

    def send(self, writes: Sequence[Write]) -> list[Any]:
        content_type, body = build(self.base_url, self.table, writes)
        request = HttpRequest("POST", self.url, content=body, headers={
            "Content-Type": content_type, "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx",
            "Accept": "application/json", "x-ms-version": self.api_version})
        # stream=True: the SDK's content decoding would try to read the multipart answer as JSON.
        # retry_on_methods: the SDK's retry policy sends a POST again after a lost answer too (the writer
        # knows its own landed writes in the answer to the re-sent transaction: OWN_WRITE).
        response = self._pipeline.send_request(request, stream=True, retry_on_methods=RESENT_METHODS)
        try:
            data = response.read()
        finally:
            response.close()
        return parse(response.status_code, data, len(writes),
                     response.headers.get("x-ms-error-code", ""), response=response)

    def close(self) -> None:
        """Nothing of its own to close: the table client's transport is closed with the client."""


class EachWrite:
    """Writes one at a time through ``update_entity`` / ``upsert_entity`` (for the in-memory table)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def send(self, writes: Sequence[Write]) -> list[Any]:
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        answers: list[Any] = []
        for write in writes:
            try:
                if write.etag:
                    answer = self.table.update_entity(write.entity, mode=UpdateMode.MERGE, etag=write.etag,
                                                      match_condition=MatchConditions.IfNotModified)
                else:
                    answer = self.table.upsert_entity(write.entity, mode=UpdateMode.MERGE)
            except Exception as exc:
                if getattr(exc, "status_code", None) in (404, 409, 412):
                    answers.append(exc)
                    continue
                raise
            answers.append(answer.get("etag") if isinstance(answer, dict) else None)
        return answers


def transactions_for(table: Any) -> Any:
    """The sender for ``table``: transactions through a ``TableClient``'s pipeline, single writes otherwise
    (the in-memory table of ``azjobs.state.testing``)."""
    if TableClient is not None and isinstance(table, TableClient):
        return TableTransactions(table)
    return EachWrite(table)


__all__ = ["MAX_BYTES", "MAX_WRITES", "RETRY", "EachWrite", "TableTransactions", "Write",
           "build", "parse", "transactions_for", "wire_entity"]
