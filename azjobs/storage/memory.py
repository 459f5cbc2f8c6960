"""In-memory stand-ins for storage, for tests of pure logic (re-exported by ``azjobs.testing``)."""

from __future__ import annotations

import threading

from .payloads import CONSUMED_PREFIX, PayloadError, PayloadStore


class MemoryPayloads(PayloadStore):
    """The real reference checks and argument parsing over a dict instead of Blob Storage."""

    def __init__(self, container: str = "azjobs-payloads") -> None:
        super().__init__(connection=None, container=container)  # type: ignore[arg-type]
        self.blobs: dict[str, bytes] = {}
        self._blobs_lock = threading.Lock()

    def put(self, name: str, data: bytes) -> str:
        with self._blobs_lock:
            self.blobs[name] = bytes(data)
        return self.ref_for(name)

    def get(self, ref: str) -> bytes:
        name = self.blob_name(ref)
        with self._blobs_lock:
            if name not in self.blobs:
                raise PayloadError(f"payload blob {ref!r} does not exist (already deleted?)", "payload_missing")
            return self.blobs[name]

    def delete(self, ref: str) -> bool:
        with self._blobs_lock:
            return self.blobs.pop(self.blob_name(ref), None) is not None

    def exists(self, ref: str) -> bool:
        with self._blobs_lock:
            return self.blob_name(ref) in self.blobs

    def consumed(self) -> list[str]:
        """Names of the consumed markers left behind."""
        with self._blobs_lock:
            return [name for name in self.blobs if name.startswith(CONSUMED_PREFIX)]

    def close(self) -> None:
        pass


__all__ = ["MemoryPayloads"]
