"""Logging for the ``azjobs`` command: readable text or one JSON object per line.

Every azjobs event carries a stable ``action`` key (``job_started``, ``job_succeeded``,
``receive_failed`` ...) plus fields such as ``job``, ``job_id``, ``queue``, ``attempt`` and
``duration_s``; the JSON format writes them all, so logs can be queried by field.
Messages are passed through ``redact`` so an account key never reaches a log.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from ..model.secrets import redact

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
FORMATS = ("text", "json")


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record_extras(record).items():
            data.setdefault(key, _jsonable(value))
        if record.exc_info:
            data["exc_info"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level message [action]`` with secrets redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # A job line of a redelivery (the message came back after a crash or a lost lease) says so.
        count = getattr(record, "dequeue_count", None)
        action = getattr(record, "action", None)
        if (isinstance(count, int) and count > 1 and isinstance(action, str) and action.startswith("job_")
                and "dequeue count" not in record.getMessage()):
            first, newline, rest = text.partition("\n")
            text = f"{first} [dequeue count {count}: a redelivery]{newline}{rest}"
        return redact(text)


def setup(verbose: int = 0, fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Send azjobs logs to ``stream`` (stderr): INFO, or DEBUG with ``-v``; returns the handler.

    Azure SDK request logging stays at WARNING unless ``-vv``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_azjobs", False):
            root.removeHandler(old)
    handler._azjobs = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("azure").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    return handler


# -- what the user reads about storage problems ----------------------------------------------------
# One place for the wording of the lines a user meets when storage says no or does not answer:
# the worker's start-up check and fetch loops, and the queue administration commands.

AUTH, UNREACHABLE, NOT_FOUND, OTHER = "auth", "unreachable", "not_found", "other"
DEVELOPMENT_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_QUEUE_PORT = 10001
# Azurite's default port per service, and the flag that moves it.
_AZURITE_PORTS = {"queue": (10001, "--queuePort"), "table": (10002, "--tablePort"), "blob": (10000, "--blobPort")}
# What each service's credentials need, for the "lacks a permission" hints.
_SAS_RIGHTS = {"queue": "the worker needs queue read, add, update and process (sp=raup), --create also create (c)",
               "table": "Table Storage needs read, add, update and delete (sp=raud) on the table resource type",
               "blob": "Blob Storage needs read, add, create, write and delete (sp=racwd)"}
_ROLES = {"queue": "Storage Queue Data Contributor", "table": "Storage Table Data Contributor",
          "blob": "Storage Blob Data Contributor"}
# 403 codes that mean "these credentials may not do this", as opposed to "these are not credentials".
_PERMISSION_CODES = ("AuthorizationPermissionMismatch", "AuthorizationFailure", "AuthorizationResourceTypeMismatch",
                     "AuthorizationServiceMismatch", "AuthorizationProtocolMismatch", "AuthorizationSourceIPMismatch",
                     "InsufficientAccountPermissions")


def describe_origin(source: str, setting: str = "AzureWebJobsStorage") -> str:
    """Where a ``Connection`` came from, in words, from its ``source`` (never a value)."""
    if source.startswith("default"):
        return f"the default, Azurite ({setting} is not set)"
    if source.startswith("argument"):
        return "the connection string given to azjobs.configure() or azjobs.Client()"
    name = source.split(" ")[0]
    if source.endswith("(identity)"):
        return f"{name} (identity-based app settings)"
    if source.endswith("(Azurite)"):
        return f"{name} (app setting, UseDevelopmentStorage=true)"
    return f"{name} (app setting)"


def _pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in (text or "").split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            pairs[name.strip().lower()] = value.strip()
    return pairs


@dataclass(frozen=True)
class StorageTarget:
    """The storage account a command talks to, safe to print: account, endpoint, where the setting came from."""

    account: str | None
    endpoint: str
    origin: str
    credential: str = "key"  # key, sas, identity
    sas_expiry: str | None = None  # the SAS's se= (not a secret), to say when it expired
    service: str = "queue"  # queue, table or blob: the endpoint is that service's
    identity: str = "DefaultAzureCredential"  # with credential "identity": the credential class that asked for tokens

    @property
    def host(self) -> str:
        return (urlsplit(self.endpoint).hostname or "").lower()

    @property
    def development(self) -> bool:
        """A local emulator endpoint (Azurite): loopback, or the well-known development account."""
        return self.host in DEVELOPMENT_HOSTS or self.account == AZURITE_ACCOUNT

    @property
    def where(self) -> str:
        account = f"storage account {self.account}" if self.account else "the storage account"
        return f"{account} at {self.endpoint}"

    @property
    def start_azurite(self) -> str:
        """How to start Azurite so that this endpoint answers."""
        port = urlsplit(self.endpoint).port
        default, flag = _AZURITE_PORTS.get(self.service, _AZURITE_PORTS["queue"])
        extra = f" {flag} {port}" if port and port != default else ""
        return (f"start Azurite with `npx azurite --silent --location .azurite{extra}` (in the azjobs repository: "
                f"`npm ci`, then `npx azurite --silent --location .azurite --skipApiVersionCheck{extra}`)")


def storage_target(connection: Any, origin: str | None = None, setting: str = "AzureWebJobsStorage",
                   service: str = "queue") -> StorageTarget:
    """The ``StorageTarget`` of a ``Connection``: its account, the endpoint of ``service`` (queue, table or blob:
    the one a command actually calls) and its credential kind."""
    source = getattr(connection, "source", "") or ""
    given = getattr(connection, "credential", None)  # a credential object handed to Connection(), if any
    if given is not None and origin is None and source in ("", "default"):
        origin = f"the {type(given).__name__} given to azjobs.Connection()"
    origin = origin or describe_origin(source, setting)
    text = getattr(connection, "connection_string", None)
    if text:
        pairs = _pairs(text)
        account = pairs.get("accountname") or None
        url = pairs.get(f"{service}endpoint")
        if not url:
            protocol = pairs.get("defaultendpointsprotocol") or "https"
            suffix = pairs.get("endpointsuffix") or "core.windows.net"
            url = f"{protocol}://{account or '<account>'}.{service}.{suffix}"
        parts = urlsplit(url)
        account = account or _account_in(parts)
        sas = pairs.get("sharedaccesssignature")
        credential = "key" if pairs.get("accountkey") else "sas" if sas is not None else "key"
        expiry = None
        if sas:
            from urllib.parse import parse_qs, unquote

            expiry = (parse_qs(sas.lstrip("?")).get("se") or [None])[0]
            expiry = unquote(expiry) if expiry else None
    else:
        url = getattr(connection, f"{service}_service_uri", None) or ""
        parts = urlsplit(url)
        account = _account_in(parts)
        credential = "sas" if "sig=" in (parts.query or "") else "identity"
        expiry = None
        if given is not None:  # the kind of the object itself: a key, a SAS, or a token credential
            credential = ("key" if hasattr(given, "named_key") else "sas" if hasattr(given, "signature")
                          else "identity")
    endpoint = redact(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")).rstrip("/"))
    identity = type(given).__name__ if given is not None and credential == "identity" else "DefaultAzureCredential"
    return StorageTarget(account, endpoint, origin, credential, expiry, service, identity)


def _account_in(parts: Any) -> str | None:
    """The account of a queue endpoint: ``<account>.queue...``, or the first path segment for an emulator's
    path-style URL (``http://127.0.0.1:10001/devstoreaccount1``)."""
    import ipaddress

    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        path_style = True
    except ValueError:
        path_style = host == "localhost" or "." not in host
    if path_style:
        return parts.path.strip("/").split("/")[0] or None
    return host.split(".")[0] or None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    pending: list[Any] = [exc]
    while pending and len(seen) < 20:
        error = pending.pop(0)
        if not isinstance(error, BaseException) or any(error is s for s in seen):
            continue
        seen.append(error)
        pending.extend([error.__cause__, error.__context__, getattr(error, "inner_exception", None)])
    return seen


def _sdk_error(exc: BaseException) -> BaseException:
    """The Azure SDK error inside ``exc`` (azjobs wraps them), or ``exc`` itself."""
    for error in _chain(exc):
        if type(error).__module__.startswith("azure.core"):
            return error
    return exc


def storage_error_kind(exc: BaseException) -> str:
    """``auth`` (credentials rejected: permanent), ``unreachable`` (no connection), ``not_found`` or ``other``."""
    try:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
        )
    except ImportError:  # pragma: no cover - azure-core is a dependency
        return OTHER
    for error in _chain(exc):
        if isinstance(error, ClientAuthenticationError):
            return AUTH
        if isinstance(error, ResourceNotFoundError):
            return NOT_FOUND
        if isinstance(error, HttpResponseError):
            status = getattr(error, "status_code", None)
            return AUTH if status in (401, 403) else NOT_FOUND if status == 404 else OTHER
        if isinstance(error, ServiceRequestError):
            return UNREACHABLE
    return OTHER


def _error_code(error: BaseException) -> str:
    code = getattr(error, "error_code", None)
    code = getattr(code, "value", code)
    return str(code or getattr(error, "reason", None) or "").strip()


def _first_line(text: str, limit: int = 200) -> str:
    for line in redact(text or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""


def network_reason(exc: BaseException) -> str:
    """Why no connection could be made, in a few words (never urllib3's whole retry story)."""
    import errno
    import re
    import socket

    texts = []
    for error in _chain(exc):
        for item in (error, *getattr(error, "args", ())):
            if isinstance(item, ConnectionRefusedError) or getattr(item, "errno", None) == errno.ECONNREFUSED:
                return "connection refused"
            if isinstance(item, socket.gaierror):
                return "the host name does not resolve"
        texts.append(str(error))
    text = " ".join(texts)
    if "Connection refused" in text or "ECONNREFUSED" in text or "Connect call failed" in text:
        return "connection refused"
    if any(marker in text for marker in ("Name or service not known", "nodename nor servname", "getaddrinfo failed",
                                         "Temporary failure in name resolution", "No address associated")):
        return "the host name does not resolve"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return "the connection timed out"
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSLError" in text:
        return "the TLS certificate was not accepted"
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if match:
        return match.group(1).strip().rstrip(".")
    return _first_line(str(exc), 120) or type(exc).__name__


def short_reason(exc: BaseException) -> str:
    """A few words on a failed storage call: ``connection refused``, ``403 AuthenticationFailed``, ``503 ServerBusy``."""
    kind = storage_error_kind(exc)
    if kind == UNREACHABLE:
        return network_reason(exc)
    error = _sdk_error(exc)
    status = getattr(error, "status_code", None)
    if status:
        return f"{status} {_error_code(error)}".strip()
    try:
        from azure.core.exceptions import ServiceResponseError
    except ImportError:  # pragma: no cover
        ServiceResponseError = ()  # type: ignore[assignment]
    if isinstance(error, ServiceResponseError):  # type: ignore[arg-type]
        return f"no answer: {network_reason(error)}"
    return _first_line(f"{type(error).__name__}: {error}", 160)


def auth_problem(exc: BaseException, target: StorageTarget, doing: str = "") -> str:
    """One line for credentials that storage rejected: what failed, where, and which setting to fix (no secret)."""
    error = _sdk_error(exc)
    status = getattr(error, "status_code", None)
    code = _error_code(error)
    # Azurite has no network rules or policies: its blob and table services answer a wrong key with
    # 403 AuthorizationFailure, which on Azure means a network rule.
    emulated_key = target.development and target.credential == "key" and code == "AuthorizationFailure"
    permission = code in _PERMISSION_CODES and not emulated_key
    verb = "refused the request" if permission else "rejected the credentials"
    what = f"({status} {code})" if status else f"({type(error).__name__}: {_first_line(str(error), 160)})"
    head = f"{target.where} {verb} {what}" + (f" {doing}" if doing else "")
    if target.credential == "identity":
        if status is None:
            hint = (f"no token for the identity of {target.origin} ({target.identity}): sign in "
                    "(az login) or give the app a managed identity")
        else:
            hint = (f"the identity used by {target.origin} ({target.identity}) lacks a role on the account: "
                    f"grant it {_ROLES.get(target.service, _ROLES['queue'])}")
    elif target.credential == "sas":
        expired = _expired(target.sas_expiry)
        if permission:
            rights = _SAS_RIGHTS.get(target.service, _SAS_RIGHTS["queue"])
            hint = f"the SharedAccessSignature in {target.origin} lacks a permission: {rights}"
        elif expired:
            hint = f"the SharedAccessSignature in {target.origin} expired at {target.sas_expiry}: make a new one"
        else:
            hint = f"the SharedAccessSignature in {target.origin} is wrong or has expired"
    elif permission:
        hint = f"the credentials in {target.origin} may not do this (a network rule or a policy on the account)"
    else:
        account = f" of account {target.account}" if target.account else ""
        hint = (f"the AccountKey in {target.origin} is not a key{account} (copy key1 or key2 from the "
                "account's Access keys)")
    return f"{head}: {hint}"


def _expired(se: str | None) -> bool:
    if not se:
        return False
    try:
        moment = datetime.fromisoformat(se.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment <= datetime.now(timezone.utc)


def unreachable_problem(exc: BaseException, target: StorageTarget, doing: str = "") -> str:
    """A plain-words line for storage that does not answer, with how to start Azurite for a development endpoint."""
    head = f"cannot reach {target.where} ({network_reason(exc)})" + (f" {doing}" if doing else "")
    head = f"{head}, connection from {target.origin}"
    if target.development:
        return f"{head}. Is Azurite running? {target.start_azurite[0].upper()}{target.start_azurite[1:]}"
    return f"{head}. Check the account name and endpoint in that setting, and the network"


def storage_problem(exc: BaseException, target: StorageTarget, doing: str = "") -> str:
    """One line on any failed storage call, by kind."""
    kind = storage_error_kind(exc)
    if kind == AUTH:
        return auth_problem(exc, target, doing)
    if kind == UNREACHABLE:
        return unreachable_problem(exc, target, doing)
    return f"{target.where} answered {short_reason(exc)}" + (f" {doing}" if doing else "")
