"""Where the storage account is: the Functions ``AzureWebJobsStorage`` convention.

- ``AzureWebJobsStorage`` holds a connection string (``UseDevelopmentStorage=true`` is Azurite);
- or identity-based ``AzureWebJobsStorage__queueServiceUri`` / ``__accountName`` with
  ``DefaultAzureCredential`` (``azure-identity``);
- unset means Azurite on its default ports.
A value from ``local.settings.json`` (``Values``) is used when the environment has none,
as ``func start`` does. Secrets never appear in ``repr`` or error messages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigurationError
from .secrets import redact, remember, secrets_in_connection_string

DEFAULT_SETTING = "AzureWebJobsStorage"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(queue_port: int = 10001, blob_port: int = 10000, host: str = "127.0.0.1") -> str:
    """A full connection string for Azurite on the given ports (what UseDevelopmentStorage means on defaults)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{AZURITE_ACCOUNT};"
    )


@dataclass(frozen=True)
class Connection:
    """How to reach the storage account; build SDK clients with the methods."""

    connection_string: str | None = field(default=None, repr=False)
    queue_service_uri: str | None = None
    blob_service_uri: str | None = None
    source: str = "default"

    def __post_init__(self) -> None:
        # Every secret this connection holds is hidden wherever azjobs writes text.
        if self.connection_string:
            remember(secrets_in_connection_string(self.connection_string))

    def __repr__(self) -> str:
        where = self.queue_service_uri or (redact(self.connection_string) if self.connection_string else "")
        return f"Connection({where!r}, source={self.source!r})"

    @property
    def description(self) -> str:
        """Safe to log: endpoint and where the setting came from, never a key."""
        return repr(self)

    def _credential(self) -> Any:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "identity-based AzureWebJobsStorage__queueServiceUri needs azure-identity: pip install azure-identity"
            ) from None
        return DefaultAzureCredential()

    def queue_service(self, **kwargs: Any):
        from azure.storage.queue import QueueServiceClient

        if self.connection_string:
            return QueueServiceClient.from_connection_string(self.connection_string, **kwargs)
        return QueueServiceClient(self.queue_service_uri, credential=self._credential(), **kwargs)

    def queue_service_async(self, **kwargs: Any):
        from azure.storage.queue.aio import QueueServiceClient

        if self.connection_string:
            return QueueServiceClient.from_connection_string(self.connection_string, **kwargs)
        from azure.identity.aio import DefaultAzureCredential

        return QueueServiceClient(self.queue_service_uri, credential=DefaultAzureCredential(), **kwargs)

    def blob_service(self, **kwargs: Any):
        from azure.storage.blob import BlobServiceClient

        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string, **kwargs)
        uri = self.blob_service_uri
        if not uri:
            raise ConfigurationError(
                "large payloads need Blob Storage: set AzureWebJobsStorage__blobServiceUri (or __accountName)"
            )
        return BlobServiceClient(uri, credential=self._credential(), **kwargs)


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
        if value.replace(" ", "").lower().rstrip(";") == "usedevelopmentstorage=true":
            return Connection(connection_string=azurite_connection_string(), source=f"{setting} (Azurite)")
        if "=" not in value:
            raise ConfigurationError(
                f"app setting {setting} is not a connection string (expected key=value pairs such as "
                "'DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...')"
            )
        return Connection(connection_string=value, source=setting)
    queue_uri = env.get(f"{setting}__queueServiceUri", "").strip()
    blob_uri = env.get(f"{setting}__blobServiceUri", "").strip() or None
    account = env.get(f"{setting}__accountName", "").strip()
    if account:
        queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
        blob_uri = blob_uri or f"https://{account}.blob.core.windows.net"
    if queue_uri:
        if not queue_uri.startswith(("https://", "http://")):
            raise ConfigurationError(f"{setting}__queueServiceUri must be an http(s) URL, got {queue_uri!r}")
        return Connection(queue_service_uri=queue_uri, blob_service_uri=blob_uri, source=f"{setting}__* (identity)")
    if setting != DEFAULT_SETTING:
        raise ConfigurationError(
            f"connection {setting!r} is not set: set the app setting {setting} to a connection string, "
            f"or {setting}__queueServiceUri for identity-based access"
        )
    return Connection(connection_string=azurite_connection_string(), source="default (Azurite)")
