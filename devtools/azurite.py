"""Start and stop Azurite (the npm package pinned in package.json) on free loopback ports.

Used by the test suite and the demo. Azurite runs in its own process group and is
ended with SIGKILL after a short grace, since it does not always exit on SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def azurite_binary() -> Path:
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise RuntimeError(
            f"Azurite is not installed at {binary}; run `npm ci` (or `npm install`) in {ROOT}"
        )
    return binary


class Azurite:
    """One Azurite process serving queues and blobs on free ports."""

    def __init__(self, queue_port: int | None = None, blob_port: int | None = None, location: str | None = None):
        self.queue_port = queue_port or free_port()
        self.blob_port = blob_port or free_port()
        self.table_port = free_port()
        self._own_location = location is None
        self.location = location or tempfile.mkdtemp(prefix="azurite-")
        self.process: subprocess.Popen | None = None
        self.log_path = Path(self.location) / "azurite.log"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
        )

    def start(self, timeout: float = 30.0) -> "Azurite":
        cmd = [
            str(azurite_binary()), "--silent", "--skipApiVersionCheck", "--disableProductStyleUrl",
            "--location", self.location,
            "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
            "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
        ]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            if all(_listening(port) for port in (self.queue_port, self.blob_port)):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Azurite did not listen within {timeout}s")

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): requests hang, as in a storage outage."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self, grace: float = 2.0) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        except ProcessLookupError:
            pass
        self.process = None
        if self._own_location:
            shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self) -> "Azurite":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


if __name__ == "__main__":  # manual use: python -m devtools.azurite
    with Azurite() as azurite:
        print(azurite.connection_string, flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            sys.exit(0)
