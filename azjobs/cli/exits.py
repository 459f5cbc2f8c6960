"""Exit statuses: one convention, and one mapping from what went wrong, for every ``azjobs`` command.

- 0 ``OK``: done;
- 1 ``FAILED``: storage or job state could not be reached or answered with an error, a queue
  or record was not found, an operation failed;
- 2 ``USAGE``: a usage or configuration error, rejected credentials (a wrong key, an expired
  SAS, a missing permission), or refused (no confirmation, nothing to do);
- 3 ``RESTART_NEEDED``: the worker stopped because its threads are stuck in timed-out jobs.

``exit_code_for`` turns an exception into one of these; an exception that is none of them is
a bug, and it is raised again with its traceback rather than reported as a storage problem.
"""

from __future__ import annotations

import enum

from ..errors import ArgumentError, AzjobsError, ConfigurationError, CredentialsRejected
from ..storage.diagnosis import AUTH, storage_error_kind


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    RESTART_NEEDED = 3


OK, FAILED, USAGE, RESTART_NEEDED = ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.RESTART_NEEDED


def _storage_error(exc: BaseException) -> bool:
    try:
        from azure.core.exceptions import AzureError
    except ImportError:  # pragma: no cover - azure-core is a dependency
        return False
    chained: BaseException | None = exc
    while chained is not None:
        if isinstance(chained, AzureError):
            return True
        chained = chained.__cause__
    return False


class ReaderGone(BrokenPipeError):
    """Whoever read the command's stdout stopped reading (``azjobs poison list q | head``): not a failure of the
    command, which ``azjobs.cli.main`` ends quietly with status 0."""


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit status for ``exc``: 2 for configuration and rejected credentials, 1 for storage, job state and
    other azjobs errors (and a network error). Anything else is a bug: it is raised again, traceback and all, as
    is ``ReaderGone`` (the command's reader left: ``main`` ends it quietly)."""
    if isinstance(exc, ReaderGone):
        raise exc
    if isinstance(exc, (ConfigurationError, ArgumentError, CredentialsRejected)):
        return USAGE
    if storage_error_kind(exc) == AUTH:
        return USAGE
    if isinstance(exc, (AzjobsError, OSError)) or _storage_error(exc):
        return FAILED
    raise exc


__all__ = ["FAILED", "OK", "RESTART_NEEDED", "USAGE", "ExitCode", "ReaderGone", "exit_code_for"]
