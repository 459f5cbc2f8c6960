"""Storage errors in words: what a failed SDK call means for the caller who sent a message.

One line each, with no XML body, no traceback and no secret (``azjobs.model.secrets``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import EnqueueError, PayloadTooLargeError, QueueNotFoundError
from ..model.secrets import redact

if TYPE_CHECKING:
    from .connection import Connection


def to_enqueue_error(exc: Exception, queue: str, connection: Connection | None = None) -> Exception:
    """Map an SDK error to a clear azjobs error (never with a secret in it)."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

    if isinstance(exc, ResourceNotFoundError) or getattr(exc, "error_code", None) == "QueueNotFound":
        return QueueNotFoundError(queue)
    if isinstance(exc, HttpResponseError) and exc.status_code == 413:
        return PayloadTooLargeError(f"queue {queue!r} refused the message as too large (413)")
    if isinstance(exc, ServiceRequestError):
        at = f" at {connection.queue_endpoint}" if connection is not None else ""
        # The SDK's own words follow (redacted), for whoever reads the log: they name the request.
        return EnqueueError(f"cannot reach the queue service{at} for {queue!r}: {network_reason(exc)}; "
                            f"{_first_line(str(exc))}")
    return EnqueueError(f"sending to queue {queue!r} failed: {storage_error_text(exc, connection)}")


def storage_error(status: int, code: str, message: str, response: Any = None) -> Exception:
    """The exception the SDK raises for a refused request, for an answer azjobs reads itself (a part of a
    table transaction's answer): by status, with ``status_code`` and ``error_code``."""
    from azure.core import exceptions

    kind = {401: exceptions.ClientAuthenticationError, 403: exceptions.ClientAuthenticationError,
            404: exceptions.ResourceNotFoundError, 409: exceptions.ResourceExistsError,
            412: exceptions.ResourceModifiedError}.get(status, exceptions.HttpResponseError)
    error = kind(message=f"{status} {code}: {message}".strip(), response=response)
    error.status_code = status
    error.error_code = code
    return error


def storage_error_text(exc: BaseException, connection: Connection | None = None) -> str:
    """One line saying what went wrong with a storage call: no XML body, no traceback, no secret."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    at = f" at {connection.queue_endpoint}" if connection is not None else ""
    source = _source_label(connection)
    if isinstance(exc, ServiceRequestError):
        return f"cannot reach the queue service{at}: {network_reason(exc)}"
    if isinstance(exc, ServiceResponseError):
        return f"the queue service{at} did not answer: {network_reason(exc)}"
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        code = exc.error_code or (exc.reason or "")
        if status == 403 and (code == "AuthenticationFailed" or isinstance(exc, ClientAuthenticationError)):
            return (f"storage{at} rejected the credentials (403 AuthenticationFailed): the AccountKey or "
                    f"SharedAccessSignature of {source} is wrong, or the SAS has expired")
        if status == 403:
            return (f"storage{at} denied the request (403 {code}): the credentials of {source} lack a permission "
                    "(a SAS needs queue read, add, update and process rights; an identity needs "
                    "Storage Queue Data Contributor)")
        first = _first_line(getattr(exc, "message", None) or str(exc))
        return f"storage{at} answered {status} {code}: {first}".replace("  ", " ")
    return _first_line(str(exc)) or type(exc).__name__


def _source_label(connection: Connection | None) -> str:
    if connection is None:
        return "the connection string"
    if connection.source == "argument" or connection.source.startswith("argument "):
        return "the connection string given to azjobs.configure() or azjobs.Client()"
    return f"app setting {connection.source.split(' ')[0]}"


def _first_line(text: str) -> str:
    for line in redact(text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def network_reason(exc: BaseException) -> str:
    """Why a connection failed, in words: refused, unknown host, timed out."""
    import errno
    import socket

    seen: set[int] = set()
    pending: list[Any] = [exc]
    texts = []
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        texts.append(str(error))
        if isinstance(error, ConnectionRefusedError) or getattr(error, "errno", None) == errno.ECONNREFUSED:
            return REFUSED
        if isinstance(error, socket.gaierror):
            return UNKNOWN_HOST
        if isinstance(error, BaseException):
            pending.extend([error.__cause__, error.__context__, getattr(error, "inner_exception", None),
                            getattr(error, "os_error", None),
                            *(a for a in error.args if isinstance(a, BaseException))])
    text = " ".join(texts)
    if "Connection refused" in text or "Connect call failed" in text or "ECONNREFUSED" in text:
        return REFUSED
    if any(marker in text for marker in ("Name or service not known", "nodename nor servname", "getaddrinfo",
                                         "Temporary failure in name resolution", "No address associated")):
        return UNKNOWN_HOST
    if "timed out" in text.lower() or "timeout" in text.lower():
        return "the connection timed out"
    return _first_line(str(exc)) or type(exc).__name__


REFUSED = "connection refused (nothing listens there: is storage running, is the endpoint right?)"
UNKNOWN_HOST = "the host name does not resolve (check the account name or the endpoint)"


__all__ = ["REFUSED", "UNKNOWN_HOST", "network_reason", "storage_error", "storage_error_text", "to_enqueue_error"]
