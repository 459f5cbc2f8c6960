"""Start and stop Azurite (the npm package pinned in package.json) on free loopback ports.

Used by the test suite and the demo. Azurite runs in its own process group and is
ended with SIGKILL after a short grace, since it does not always exit on SIGTERM.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")


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
    """One Azurite process serving queues, blobs and tables on free ports.

    ``accounts`` (name -> base64 key) adds storage accounts beside the default
    ``devstoreaccount1``, through Azurite's ``AZURITE_ACCOUNTS`` environment variable;
    ``connection_string_for(name)`` reaches one of them.
    """

    def __init__(self, queue_port: int | None = None, blob_port: int | None = None, location: str | None = None,
                 *, table_port: int | None = None, accounts: Mapping[str, str] | None = None,
                 cert: str | None = None, key: str | None = None, oauth: str | None = None):
        """``cert``/``key`` (PEM files) serve HTTPS; ``oauth="basic"`` (needs HTTPS) also accepts bearer tokens."""
        if (cert is None) != (key is None):
            raise ValueError("HTTPS needs both cert and key")
        if oauth is not None and cert is None:
            raise ValueError("Azurite accepts OAuth tokens only over HTTPS (give cert and key)")
        self.cert, self.key, self.oauth = cert, key, oauth
        self.scheme = "https" if cert else "http"
        self.queue_port = queue_port or free_port()
        self.blob_port = blob_port or free_port()
        self.table_port = table_port or free_port()
        self._own_location = location is None
        self.location = location or tempfile.mkdtemp(prefix="azurite-")
        self.process: subprocess.Popen | None = None
        self.log_path = Path(self.location) / "azurite.log"
        self.accounts: dict[str, str] = {}
        for name, key in (accounts or {}).items():
            if name == ACCOUNT:
                continue  # always served, with its well-known key
            if not _ACCOUNT_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a storage account name (3-24 lowercase letters and digits)")
            try:
                base64.b64decode(key, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"the key of account {name!r} is not base64") from None
            self.accounts[name] = key

    @property
    def connection_string(self) -> str:
        """The default account's (``devstoreaccount1``) connection string."""
        return self.connection_string_for(ACCOUNT)

    def connection_string_for(self, account: str) -> str:
        """A connection string for ``account``: the default one or one given in ``accounts``."""
        if account == ACCOUNT:
            key = KEY
        elif account in self.accounts:
            key = self.accounts[account]
        else:
            raise KeyError(f"Azurite serves no account {account!r} (pass it in accounts=)")
        return (
            f"DefaultEndpointsProtocol={self.scheme};AccountName={account};AccountKey={key};"
            f"BlobEndpoint={self.scheme}://127.0.0.1:{self.blob_port}/{account};"
            f"QueueEndpoint={self.scheme}://127.0.0.1:{self.queue_port}/{account};"
            f"TableEndpoint={self.scheme}://127.0.0.1:{self.table_port}/{account};"
        )

    def start(self, timeout: float = 30.0) -> "Azurite":
        cmd = [
            str(azurite_binary()), "--silent", "--skipApiVersionCheck", "--disableProductStyleUrl",
            "--location", self.location,
            "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
            "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
        ]
        if self.cert:
            cmd += ["--cert", self.cert, "--key", self.key]
        if self.oauth:
            cmd += ["--oauth", self.oauth]
        env = None
        if self.accounts:
            # Azurite serves only the accounts listed here, so the default one is listed too.
            served = {ACCOUNT: KEY, **self.accounts}
            env = dict(os.environ, AZURITE_ACCOUNTS=";".join(f"{name}:{key}" for name, key in served.items()))
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
                                        env=env)
        log.close()  # the child has its own copy
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            if all(_listening(port) for port in (self.queue_port, self.blob_port, self.table_port)):
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
