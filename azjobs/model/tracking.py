"""Which jobs are tracked (job state, ``azjobs.state``): the process switch and the rules, as pure logic.

Whether a job is tracked: its message says so first (``options.track``: True from a producer
with state on, False from a call or job with ``track=False``), then its definition (``track=True``
or ``track=False``; the default None follows on), then the client (``Client(state=...)``), then
this process (``azjobs.configure(state=True)`` or the ``AZJOBS_STATE=1`` setting). A unique job
is always tracked. Kept in the model so deciding costs no import of the state feature: an
untracked enqueue never loads it.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .definition import JobDefinition
    from .envelope import Envelope

ENV_FLAG = "AZJOBS_STATE"
TRACK_OPTION = "track"
ETAG_OPTION = "state_etag"

_process_state: bool | None = None
_lock = threading.Lock()


def enable(on: bool = True) -> None:
    """Turn job state on (or off) for every job this process enqueues and runs."""
    global _process_state
    with _lock:
        _process_state = bool(on)


def enabled() -> bool:
    """Whether this process tracks every job: ``enable()``, else the ``AZJOBS_STATE`` setting."""
    if _process_state is not None:
        return _process_state
    return os.environ.get(ENV_FLAG, "").strip().lower() in ("1", "true", "yes", "on")


def is_tracked(envelope: "Envelope | None", definition: "JobDefinition | None" = None, client: Any = None) -> bool:
    """The message's ``track`` (set by its producer: True, or False for ``track=False``) first, then the
    job's ``track`` (True or False; None follows on), then the client's and the process's setting."""
    if envelope is None:
        return False
    flag = envelope.options.get(TRACK_OPTION) if envelope.options else None
    if isinstance(flag, bool):
        return flag
    track = getattr(definition, "track", None) if definition is not None else None
    if isinstance(track, bool):
        return track
    client_flag = getattr(client, "state", None)
    if isinstance(client_flag, bool):
        return client_flag
    return enabled()


def wants_state(definition: "JobDefinition", options: Mapping[str, Any], client: Any) -> bool:
    """Whether this call writes job state: the call, then the job (``track`` True or False; None follows
    on), then the client, then the process. A unique job is always tracked."""
    if options.get("unique_key") is not None or options.get("unique", getattr(definition, "unique", False)):
        return True
    if "track" in options:
        return bool(options["track"])
    track = getattr(definition, "track", None)
    if isinstance(track, bool):
        return track
    flag = getattr(client, "state", None)
    return flag if isinstance(flag, bool) else enabled()


__all__ = ["ENV_FLAG", "ETAG_OPTION", "TRACK_OPTION", "enable", "enabled", "is_tracked", "wants_state"]
