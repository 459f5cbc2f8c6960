"""The dashboard's live sessions, one row per login in a table of the storage account.

A session cookie is signed (``auth.Guard``), but a signature alone cannot be taken back: a
copy of the cookie would keep working until it expires. So a login inserts a row keyed by
the session's random nonce, every request with a cookie reads that row, and a logout deletes
it. The table is in the account the dashboard already reads, so every process and every
Functions instance serving the dashboard sees a logout at once (an in-memory list would
revoke only on the instance that took the logout).

Rows: PartitionKey ``session``, RowKey the nonce (24 URL-safe characters), ``Expires`` (the
cookie's own expiry). Expired rows are deleted at the next login. A row holds no credential:
the nonce proves nothing without the cookie's signature, which needs the admin key.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from typing import Any

from ..errors import ConfigurationError
from ..model.secrets import describe, get_logger

log = get_logger("azjobs.dashboard")

TABLE_ENV = "AZJOBS_DASHBOARD_TABLE"
DEFAULT_TABLE = "azjobsdashboard"
PARTITION = "session"


def table_name(table: str | None = None) -> str:
    """The sessions table: ``table``, else ``$AZJOBS_DASHBOARD_TABLE``, else ``azjobsdashboard``."""
    return table or os.environ.get(TABLE_ENV) or DEFAULT_TABLE


class TableSessions:
    """``auth.SessionStore`` over one table (created at the first login)."""

    def __init__(self, table_service: Any, table: str | None = None) -> None:
        self.service = table_service
        self.table = table_name(table)
        self._client = None
        self._ready = False
        self._lock = threading.Lock()

    @classmethod
    def for_connection(cls, connection: Any, table: str | None = None) -> "TableSessions":
        from ..storage.http import table_service

        try:
            service = table_service(connection)
        except ConfigurationError:
            raise ConfigurationError("the dashboard's admin key needs Table Storage, where logins are kept (so a "
                                     "logout ends them on every instance): set AzureWebJobsStorage__tableServiceUri "
                                     "(or __accountName), or serve it read-only without an admin key") from None
        return cls(service, table)

    @property
    def client(self):
        if self._client is None:
            self._client = self.service.get_table_client(self.table)
        return self._client

    def _ensure(self) -> None:
        with self._lock:
            if not self._ready:
                self.service.create_table_if_not_exists(self.table)
                self._ready = True

    def add(self, nonce: str, expires_at: int) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        entity = {"PartitionKey": PARTITION, "RowKey": nonce,
                  "Expires": datetime.fromtimestamp(expires_at, timezone.utc)}
        try:
            self.client.create_entity(entity)
        except ResourceNotFoundError:  # no table yet: the first login
            self._ensure()
            self.client.create_entity(entity)
        self._forget_expired()

    def alive(self, nonce: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.client.get_entity(PARTITION, nonce, select=["RowKey"])
        except ResourceNotFoundError:  # logged out, or no table: nobody ever logged in
            return False
        return True

    def remove(self, nonce: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.client.delete_entity(PARTITION, nonce)
        except ResourceNotFoundError:
            pass  # already gone: the outcome wanted

    def _forget_expired(self) -> None:
        """Delete the rows of expired sessions (best effort: a row left behind proves nothing once its cookie expired)."""
        from azure.core.exceptions import AzureError

        try:
            rows = self.client.query_entities("PartitionKey eq @pk and Expires lt @now", select=["RowKey"],
                                              parameters={"pk": PARTITION, "now": datetime.now(timezone.utc)})
            for row in rows:
                self.remove(row["RowKey"])
        except AzureError as exc:
            log.debug("dashboard: could not delete expired sessions: %s", describe(exc),
                      extra={"action": "dashboard_sessions_cleanup_failed"})
