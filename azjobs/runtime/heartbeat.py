"""The worker's heartbeat file, read by ``azjobs check`` (an exec liveness/readiness probe).

A file and not an HTTP endpoint: an exec probe needs no port, no server thread in the worker and
no network surface, works the same in a Deployment, a ScaledJob and a Container Apps Job, and a
process that cannot run its threads any more stops writing it. The file is replaced atomically
(write, then rename), so a reader never sees half of it.

Two threads: one writes the file every ``interval_s``; the other asks storage for the first
queue's properties every ``interval_s`` and records when it last answered. A storage call that
hangs therefore never delays the heartbeat itself: the file stays fresh and says that storage
has not answered since a given time.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..model.secrets import get_logger
from ..storage.diagnosis import short_reason

log = get_logger("azjobs.worker")

HEARTBEAT_ENV = "AZJOBS_HEARTBEAT"
FORMAT_VERSION = 1


class Heartbeat:
    """Writes ``path`` every ``interval_s`` seconds while the worker runs."""

    def __init__(self, path: str | os.PathLike[str], interval_s: float, probe: Callable[[], Any],
                 snapshot: Callable[[], dict[str, Any]]) -> None:
        if interval_s <= 0:
            raise ValueError(f"heartbeat interval must be positive, got {interval_s}")
        self.path = Path(path)
        self.interval_s = float(interval_s)
        self._probe = probe
        self._snapshot = snapshot
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._storage_ok_at: float | None = None
        self._storage_error: str | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> "Heartbeat":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write()
        for target, name in ((self._beat, "azjobs-heartbeat"), (self._check_storage, "azjobs-heartbeat-storage")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop writing; a last write says the worker is stopping (the probe thread is not waited for)."""
        self._stop.set()
        if not self._threads:
            return  # never started (the worker failed its start-up checks): no file claims otherwise
        self._threads[0].join(5)
        self.write(stopping=True)

    def storage_answered(self) -> None:
        with self._lock:
            self._storage_ok_at, self._storage_error = time.time(), None

    def write(self, stopping: bool = False) -> None:
        with self._lock:
            record = {"version": FORMAT_VERSION, "pid": os.getpid(), "written_at": time.time(),
                      "interval_s": self.interval_s, "storage_ok_at": self._storage_ok_at,
                      "storage_error": self._storage_error, "stopping": stopping}
        try:
            record.update(self._snapshot())
            record["stopping"] = stopping or bool(record.get("stopping"))
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(record), encoding="utf-8")
            os.replace(temporary, self.path)
        except Exception as exc:  # a full disk must not stop the worker; the probe then reports a stale file
            log.warning("could not write the heartbeat file %s: %s", self.path, exc,
                        extra={"action": "heartbeat_write_failed", "path": str(self.path)})

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write(stopping=False)

    def _check_storage(self) -> None:
        while True:
            try:
                self._probe()
            except Exception as exc:
                with self._lock:
                    self._storage_error = short_reason(exc)
            else:
                self.storage_answered()
            if self._stop.wait(self.interval_s):
                return


__all__ = ["FORMAT_VERSION", "HEARTBEAT_ENV", "Heartbeat"]
