"""Claim check: job arguments too large for a queue message live in Blob Storage.

An envelope over the 64 KiB message limit is sent with empty ``args``/``kwargs`` and a
``payload_ref`` naming a blob (``<container>/<name>``) that holds them as JSON. The
execution core loads them before the job runs and deletes the blob after success or
after the poison record is written; a retry copy keeps the reference. The same
container also holds poison records too large for the poison queue.

A reference can only name a blob in the configured container, and the blob can only
hold JSON arguments for a registered job: nothing in it is imported or unpickled.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import TYPE_CHECKING, Any

from ..errors import AzjobsError
from ..model.envelope import Envelope

if TYPE_CHECKING:
    from .connection import Connection

DEFAULT_CONTAINER = "azjobs-payloads"
POISON_PREFIX = "poison/"
# Markers left where a finished job's arguments were, so a redelivery is recognised (Functions path).
CONSUMED_PREFIX = "consumed/"


class PayloadError(AzjobsError):
    """A claim-check reference cannot be used. ``reason``: ``payload_missing``, ``bad_payload_ref``, ``bad_payload``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _blob_retry():
    """The queue client's retries for blobs: short back-off, a refused connection retried once quickly."""
    from azure.storage.blob import ExponentialRetry

    from .http import fast_connect_retry

    return fast_connect_retry(ExponentialRetry)(initial_backoff=1, increment_base=2, retry_total=3)


class PayloadStore:
    """Blobs in one container of the queue's storage account. Thread-safe."""

    def __init__(self, connection: "Connection", container: str = DEFAULT_CONTAINER) -> None:
        self.connection = connection
        self.container = container
        self._lock = threading.Lock()
        self._service: Any = None
        self._container_client: Any = None

    def _client(self):
        with self._lock:
            if self._container_client is None:
                from .http import CONNECT_TIMEOUT_S

                self._service = self.connection.blob_service(retry_policy=_blob_retry(),
                                                             connection_timeout=CONNECT_TIMEOUT_S)
                self._container_client = self._service.get_container_client(self.container)
            return self._container_client

    # -- references --------------------------------------------------------
    def ref_for(self, name: str) -> str:
        return f"{self.container}/{name}"

    def blob_name(self, ref: object) -> str:
        """The blob name in a reference, or PayloadError if it is not one of ours."""
        if not isinstance(ref, str) or "/" not in ref:
            raise PayloadError(f"payload reference {ref!r} is not '<container>/<blob>'", "bad_payload_ref")
        container, name = ref.split("/", 1)
        if container != self.container:
            raise PayloadError(
                f"payload reference {ref!r} names container {container!r}; this worker reads only "
                f"{self.container!r} (set the same payload container on producers and workers)",
                "bad_payload_ref",
            )
        if not name or len(name) > 1024 or ".." in name.split("/") or name.startswith("/"):
            raise PayloadError(f"payload reference {ref!r} has an invalid blob name", "bad_payload_ref")
        return name

    # -- blob operations ---------------------------------------------------
    def put(self, name: str, data: bytes) -> str:
        """Upload ``data`` as blob ``name`` (creating the container if missing); returns its reference."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        container = self._client()
        try:
            container.upload_blob(name, data, overwrite=True)
        except ResourceNotFoundError:
            try:
                container.create_container()
            except ResourceExistsError:
                pass
            container.upload_blob(name, data, overwrite=True)
        return self.ref_for(name)

    def get(self, ref: str) -> bytes:
        """The blob's bytes; PayloadError(``payload_missing``) if it is gone."""
        from azure.core.exceptions import ResourceNotFoundError

        name = self.blob_name(ref)
        try:
            return self._client().download_blob(name).readall()
        except ResourceNotFoundError:
            raise PayloadError(f"payload blob {ref!r} does not exist (already deleted?)", "payload_missing") from None

    def delete(self, ref: str) -> bool:
        """Delete the blob; False if it was already gone."""
        from azure.core.exceptions import ResourceNotFoundError

        name = self.blob_name(ref)
        try:
            self._client().delete_blob(name)
            return True
        except ResourceNotFoundError:
            return False

    def exists(self, ref: str) -> bool:
        return bool(self._client().get_blob_client(self.blob_name(ref)).exists())

    # -- envelopes ---------------------------------------------------------
    def offload(self, envelope: Envelope) -> Envelope:
        """Store the envelope's arguments and return it with ``payload_ref`` instead of them."""
        data = json.dumps({"args": list(envelope.args), "kwargs": dict(envelope.kwargs)},
                          ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        ref = self.put(f"{envelope.id}/{uuid.uuid4().hex}.json", data)
        return envelope.evolve(args=(), kwargs={}, payload_ref=ref)

    def load_arguments(self, ref: str) -> tuple[tuple, dict[str, Any]]:
        """The ``(args, kwargs)`` stored under ``ref``."""
        raw = self.get(ref)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise PayloadError(f"payload blob {ref!r} is not UTF-8 JSON: {exc}", "bad_payload") from None
        if not isinstance(data, dict) or not isinstance(data.get("args", []), list) \
                or not isinstance(data.get("kwargs", {}), dict):
            raise PayloadError(f"payload blob {ref!r} does not hold {{args: [...], kwargs: {{...}}}}", "bad_payload")
        return tuple(data.get("args", [])), dict(data.get("kwargs", {}))

    def inline(self, envelope: Envelope) -> Envelope:
        """The envelope with its stored arguments put back in place of ``payload_ref``."""
        if envelope.payload_ref is None:
            return envelope
        args, kwargs = self.load_arguments(envelope.payload_ref)
        return envelope.evolve(args=args, kwargs=kwargs, payload_ref=None)

    # -- after the run -----------------------------------------------------
    def consume(self, ref: str) -> None:
        """Replace the arguments of a finished job by a small marker, then delete them.

        For a runner that cannot delete the blob after the message (on Functions the host
        deletes the message after the function returns): a redelivery then finds the marker
        and is skipped instead of being poisoned as ``payload_missing``. Markers are a few
        bytes under ``consumed/``; a lifecycle rule on that prefix removes old ones.
        """
        name = self.blob_name(ref)
        self.put(f"{CONSUMED_PREFIX}{name}", b"{}")
        self.delete(ref)

    def was_consumed(self, ref: str) -> bool:
        """True if a finished run left its marker for ``ref``."""
        return self.exists(self.ref_for(f"{CONSUMED_PREFIX}{self.blob_name(ref)}"))

    def close(self) -> None:
        with self._lock:
            if self._service is not None:
                self._service.close()
            self._service = self._container_client = None
