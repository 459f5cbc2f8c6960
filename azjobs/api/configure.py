"""``azjobs.configure``: the process-wide client, and the features it switches on for the process."""

from __future__ import annotations

from typing import Any

from ..model.trace_context import propagate_baggage as _propagate_baggage
from ..storage.client import Client, set_default_client
from ..storage.connection import Connection


def configure(connection: Connection | str | None = None, *, propagate_baggage: bool | None = None,
              **options: Any) -> Client:
    """Set the process-wide client used by ``job.enqueue`` (connection, host.json settings, ...).

    ``state=True`` turns job state on for every job this process enqueues and runs (``azjobs.state``).
    ``propagate_baggage=True`` carries W3C Baggage in messages and reads it from them, for the whole
    process (off unless set here or by ``AZJOBS_PROPAGATE_BAGGAGE=1``; see azjobs.model.trace_context).
    A bad connection string fails here, and the client in use stays.
    """
    client = Client(connection, **options)
    if propagate_baggage is not None:
        _propagate_baggage(propagate_baggage)
    if options.get("state") is not None:
        from ..model.tracking import enable

        enable(options["state"])  # for every executor in the process (the Functions one too)
    return set_default_client(client)


__all__ = ["configure"]
