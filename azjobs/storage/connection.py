"""Where the storage account is: the Functions ``AzureWebJobsStorage`` convention.

- ``AzureWebJobsStorage`` holds a connection string (``UseDevelopmentStorage=true`` is Azurite);
- or identity-based ``AzureWebJobsStorage__queueServiceUri`` / ``__accountName`` with
  ``DefaultAzureCredential`` (``azure-identity``);
- unset means Azurite on its default ports.
A value from ``local.settings.json`` (``Values``) is used when the environment has none,
as ``func start`` does. Secrets never appear in ``repr`` or error messages.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigurationError
from ..model.secrets import redact, remember, secrets_in_connection_string
from .credentials import live_shared_key
from .transport import MAX_IDLE_PER_HOST, transport_options

DEFAULT_SETTING = "AzureWebJobsStorage"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(queue_port: int = 10001, blob_port: int = 10000, host: str = "127.0.0.1",
                              table_port: int = 10002) -> str:
    """A full connection string for Azurite on the given ports (what UseDevelopmentStorage means on defaults)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{AZURITE_ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{AZURITE_ACCOUNT};"
    )


@dataclass(frozen=True)
class Connection:
    """How to reach the storage account; build SDK clients with the methods."""

    connection_string: str | None = field(default=None, repr=False)
    queue_service_uri: str | None = None
    blob_service_uri: str | None = None
    table_service_uri: str | None = None
    source: str = "default"
    # With the service URIs: the credential to use (a TokenCredential such as a ManagedIdentityCredential,
    # an AzureNamedKeyCredential or an AzureSasCredential; its update() is honoured on every call). None:
    # DefaultAzureCredential.
    credential: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every secret this connection holds is hidden wherever azjobs writes text.
        if self.connection_string is not None:
            remember(secrets_in_connection_string(self.connection_string))
            check_connection_string(self.connection_string, self.source)

    @property
    def account_name(self) -> str | None:
        if self.connection_string:
            return _pairs(self.connection_string).get("accountname") or None
        host = urlsplit(self.queue_service_uri or "").hostname or ""
        return host.split(".")[0] or None

    @property
    def queue_endpoint(self) -> str:
        """The queue service URL (no query string, no secret): for messages."""
        if self.connection_string:
            pairs = _pairs(self.connection_string)
            url = pairs.get("queueendpoint")
            if not url:
                account = pairs.get("accountname", "")
                protocol = pairs.get("defaultendpointsprotocol", "https")
                url = f"{protocol}://{account}.queue.{pairs.get('endpointsuffix') or 'core.windows.net'}"
        else:
            url = self.queue_service_uri or ""
        parts = urlsplit(url)
        return redact(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")).rstrip("/"))

    def __repr__(self) -> str:
        where = self.queue_service_uri or (redact(self.connection_string) if self.connection_string else "")
        return f"Connection({where!r}, source={self.source!r})"

    @property
    def description(self) -> str:
        """Safe to log: endpoint and where the setting came from, never a key."""
        return repr(self)

    def _credential(self) -> Any:
        if self.credential is not None:
            return self.credential
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "identity-based AzureWebJobsStorage__queueServiceUri needs azure-identity: pip install azure-identity"
            ) from None
        return DefaultAzureCredential()

    # Every synchronous client below sends through azjobs' transport (azjobs.storage.transport) unless
    # the caller passes its own ``transport=`` or ``session=``; ``pool`` sizes its idle-connection pool.

    def queue_service(self, *, pool: int = MAX_IDLE_PER_HOST, **kwargs: Any):
        from azure.storage.queue import QueueServiceClient

        kwargs = transport_options(kwargs, pool=pool)
        if self.connection_string:
            return QueueServiceClient.from_connection_string(self.connection_string, **kwargs)
        return QueueServiceClient(self.queue_service_uri, credential=live_shared_key(self._credential(), "queue"),
                                  **kwargs)

    def queue_service_async(self, **kwargs: Any):
        """The asyncio client keeps the SDK's own async transport (aiohttp)."""
        from azure.storage.queue.aio import QueueServiceClient

        if self.connection_string:
            return QueueServiceClient.from_connection_string(self.connection_string, **kwargs)
        if self.credential is not None:
            get_token = getattr(self.credential, "get_token", None)
            if get_token is None or inspect.iscoroutinefunction(get_token):
                return QueueServiceClient(self.queue_service_uri, credential=live_shared_key(self.credential, "queue"),
                                          **kwargs)
            raise ConfigurationError("the asyncio client needs an asyncio token credential (azure.identity.aio); "
                                     "this connection holds a synchronous one")
        from azure.identity.aio import DefaultAzureCredential

        return QueueServiceClient(self.queue_service_uri, credential=DefaultAzureCredential(), **kwargs)

    def blob_service(self, *, pool: int = MAX_IDLE_PER_HOST, **kwargs: Any):
        from azure.storage.blob import BlobServiceClient

        kwargs = transport_options(kwargs, pool=pool)
        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string, **kwargs)
        uri = self.blob_service_uri
        if not uri:
            raise ConfigurationError(
                "large payloads need Blob Storage: set AzureWebJobsStorage__blobServiceUri (or __accountName)"
            )
        return BlobServiceClient(uri, credential=live_shared_key(self._credential(), "blob"), **kwargs)


    def table_service(self, *, pool: int = MAX_IDLE_PER_HOST, **kwargs: Any):
        """A ``TableServiceClient`` (azure-data-tables) for the same account: job state, workflow history."""
        from azure.data.tables import TableServiceClient

        kwargs = transport_options(kwargs, pool=pool)
        if self.connection_string:
            return TableServiceClient.from_connection_string(self.connection_string, **kwargs)
        uri = self.table_service_uri
        if not uri:
            raise ConfigurationError(
                "job state needs Table Storage: set AzureWebJobsStorage__tableServiceUri (or __accountName)"
            )
        return TableServiceClient(uri, credential=self._credential(), **kwargs)


def _pairs(text: str) -> dict[str, str]:
    """A connection string's key=value pairs, keys lowercased (the SDK reads them case-insensitively)."""
    pairs = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            pairs[name.strip().lower()] = value.strip()
    return pairs


def _describe_source(source: str) -> str:
    if source == "argument":
        return "the connection string given to azjobs.configure() or azjobs.Client()"
    if source == "default":
        return "the connection string"
    name = source.split(" ")[0]
    return f"the connection string in app setting {name}"


def check_connection_string(text: str, source: str = "argument") -> None:
    """Raise ConfigurationError unless ``text`` can be a storage connection string.

    Checked when a Connection is built, so a mistake fails where it is made instead of at
    the first send. The message never contains a value from the string (it may be a key).
    """
    where = _describe_source(source)
    parts = [part.strip() for part in text.split(";") if part.strip()]
    if not parts or any("=" not in part or not part.partition("=")[0].strip() for part in parts):
        raise ConfigurationError(
            f"{where} is not a connection string: expected key=value pairs separated by ';' "
            "(DefaultEndpointsProtocol, AccountName and AccountKey from the storage account's Access keys, "
            "or UseDevelopmentStorage=true)"
        )
    pairs = _pairs(text)
    if pairs.get("usedevelopmentstorage", "").lower() == "true":
        return
    protocol = pairs.get("defaultendpointsprotocol")
    if protocol is not None and protocol.lower() not in ("http", "https"):
        raise ConfigurationError(f"{where}: DefaultEndpointsProtocol must be http or https")
    for name in ("queueendpoint", "blobendpoint"):
        url = pairs.get(name)
        if url is not None and not url.lower().startswith(("http://", "https://")):
            label = "QueueEndpoint" if name == "queueendpoint" else "BlobEndpoint"
            raise ConfigurationError(f"{where}: {label} must be an http(s) URL")
    key = pairs.get("accountkey")
    if key is not None:
        if not pairs.get("accountname"):
            raise ConfigurationError(f"{where} has an AccountKey but no AccountName")
        try:
            decoded = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if not decoded:
            raise ConfigurationError(
                f"{where}: AccountKey is not a valid base64 key (is it truncated, or cut at a ';'? "
                "copy the whole key from the storage account's Access keys)"
            )
        return
    if pairs.get("sharedaccesssignature"):
        if not (pairs.get("queueendpoint") or pairs.get("accountname")):
            raise ConfigurationError(f"{where} has a SharedAccessSignature but neither QueueEndpoint nor AccountName")
        return
    raise ConfigurationError(
        f"{where} has no credential: give AccountName and AccountKey, or SharedAccessSignature "
        "(or use identity-based AzureWebJobsStorage__queueServiceUri)"
    )


def connection_from_string(value: str, source: str = "argument") -> Connection:
    """A Connection for a connection string (``UseDevelopmentStorage=true`` is Azurite on its default ports)."""
    if value.replace(" ", "").lower().rstrip(";") == "usedevelopmentstorage=true":
        label = "argument (Azurite)" if source == "argument" else f"{source} (Azurite)"
        return Connection(connection_string=azurite_connection_string(), source=label)
    return Connection(connection_string=value, source=source)


def _local_settings(path: str | os.PathLike | None) -> Mapping[str, str]:
    file = Path(path) if path else Path("local.settings.json")
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {file}: {exc}") from None
    values = data.get("Values") if isinstance(data, dict) else None
    return {k: v for k, v in (values or {}).items() if isinstance(v, str)}


def resolve_connection(
    setting: str = DEFAULT_SETTING,
    environ: Mapping[str, str] | None = None,
    local_settings: str | os.PathLike | None = None,
) -> Connection:
    """Resolve the connection named ``setting`` the way the Functions host does."""
    env = dict(_local_settings(local_settings))
    env.update(os.environ if environ is None else environ)
    value = env.get(setting, "").strip()
    if value:
        return connection_from_string(value, setting)
    queue_uri = env.get(f"{setting}__queueServiceUri", "").strip()
    blob_uri = env.get(f"{setting}__blobServiceUri", "").strip() or None
    table_uri = env.get(f"{setting}__tableServiceUri", "").strip() or None
    account = env.get(f"{setting}__accountName", "").strip()
    if account:
        queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
        blob_uri = blob_uri or f"https://{account}.blob.core.windows.net"
        table_uri = table_uri or f"https://{account}.table.core.windows.net"
    if queue_uri:
        if not queue_uri.startswith(("https://", "http://")):
            raise ConfigurationError(f"{setting}__queueServiceUri must be an http(s) URL, got {queue_uri!r}")
        return Connection(queue_service_uri=queue_uri, blob_service_uri=blob_uri, table_service_uri=table_uri,
                          source=f"{setting}__* (identity)")
    if setting != DEFAULT_SETTING:
        raise ConfigurationError(
            f"connection {setting!r} is not set: set the app setting {setting} to a connection string, "
            f"or {setting}__queueServiceUri for identity-based access"
        )
    return Connection(connection_string=azurite_connection_string(), source="default (Azurite)")
