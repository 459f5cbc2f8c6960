"""Azurite (the storage emulator) for a test session, started on free loopback ports.

``find_azurite()`` looks for the ``azurite`` command in ``./node_modules/.bin`` (of the given
folders, the current one by default) and then on the ``PATH``; ``AzuriteServer`` runs it in a
process group of its own with its data in a temporary folder, and stops it (SIGKILL after a
short grace: Azurite does not always exit on SIGTERM). The pytest plugin's ``azurite`` fixture
uses both.
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
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

from ..storage.connection import AZURITE_ACCOUNT, AZURITE_KEY

_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
INSTALL_HINT = ("install it with `npm install azurite` in the project (./node_modules/.bin/azurite) "
                "or `npm install -g azurite` (on the PATH)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_azurite(folders: Iterable[str | Path] = ()) -> Path | None:
    """The ``azurite`` command: ``<folder>/node_modules/.bin/azurite`` for each folder (then the current one),
    else the one on the ``PATH``; None when there is none."""
    for folder in [*folders, Path.cwd()]:
        candidate = Path(folder) / "node_modules" / ".bin" / "azurite"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("azurite")
    return Path(found) if found else None


class AzuriteStorage(str):
    """The connection string of one Azurite's default account (``devstoreaccount1``): a ``str``, so it goes
    wherever a connection string does, with the ports and ``connection_string_for(account)`` beside it."""

    queue_port: int
    blob_port: int
    table_port: int
    server: "AzuriteServer"

    def __new__(cls, server: "AzuriteServer") -> "AzuriteStorage":
        made = super().__new__(cls, server.connection_string_for(AZURITE_ACCOUNT))
        made.server = server
        made.queue_port, made.blob_port, made.table_port = server.queue_port, server.blob_port, server.table_port
        return made

    @property
    def connection_string(self) -> str:
        return str(self)

    def connection_string_for(self, account: str) -> str:
        return self.server.connection_string_for(account)


class AzuriteServer:
    """One Azurite process serving queues, blobs and tables on free ports.

    ``accounts`` (name -> base64 key) adds storage accounts beside ``devstoreaccount1``.
    """

    def __init__(self, binary: str | Path, *, accounts: Mapping[str, str] | None = None) -> None:
        self.binary = Path(binary)
        self.queue_port, self.blob_port, self.table_port = free_port(), free_port(), free_port()
        self.location = tempfile.mkdtemp(prefix="azjobs-azurite-")
        self.log_path = Path(self.location) / "azurite.log"
        self.process: subprocess.Popen | None = None
        self.accounts: dict[str, str] = {}
        for name, key in (accounts or {}).items():
            if name == AZURITE_ACCOUNT:
                continue
            if not _ACCOUNT_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a storage account name (3-24 lowercase letters and digits)")
            try:
                base64.b64decode(key, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"the key of account {name!r} is not base64") from None
            self.accounts[name] = key

    def connection_string_for(self, account: str) -> str:
        if account == AZURITE_ACCOUNT:
            key = AZURITE_KEY
        elif account in self.accounts:
            key = self.accounts[account]
        else:
            raise KeyError(f"this Azurite serves no account {account!r}")
        return (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
                f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{account};"
                f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{account};"
                f"TableEndpoint=http://127.0.0.1:{self.table_port}/{account};")

    def start(self, timeout: float = 60.0) -> AzuriteStorage:
        """Start Azurite and wait until its three ports answer; the default account's connection string."""
        command = [str(self.binary), "--silent", "--skipApiVersionCheck", "--disableProductStyleUrl",
                   "--location", self.location,
                   "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
                   "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                   "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port)]
        env = None
        if self.accounts:  # Azurite then serves only the accounts listed, so the default one is listed too
            served = {AZURITE_ACCOUNT: AZURITE_KEY, **self.accounts}
            env = dict(os.environ, AZURITE_ACCOUNTS=";".join(f"{name}:{key}" for name, key in served.items()))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=env, cwd=self.location)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Azurite ({self.binary}) exited with status {self.process.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            if all(_listening(port) for port in (self.queue_port, self.blob_port, self.table_port)):
                return AzuriteStorage(self)
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Azurite ({self.binary}) did not listen within {timeout:g}s")

    def stop(self, grace: float = 2.0) -> None:
        process, self.process = self.process, None
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(grace)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.location, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


__all__ = ["INSTALL_HINT", "AzuriteServer", "AzuriteStorage", "find_azurite", "free_port"]
