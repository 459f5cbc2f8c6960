"""``AzureQueueBackend.check()``: Django system-check messages for a backend's configuration.

=============  ========  ================================================================
id             level     when
=============  ========  ================================================================
azjobs.E001    Error     a Django queue maps to an invalid Azure queue name
azjobs.E002    Error     the connection setting is missing or is not a valid connection
azjobs.E003    Error     an unknown OPTIONS key, or a retry option azjobs refuses
azjobs.W001    Warning   ``AzureWebJobsStorage`` is not set: tasks go to Azurite on its
                         default ports (fine in development, not in production)
azjobs.W002    Warning   the result store (Table Storage) does not answer: ``get_result``
                         will fail until it does (checked with one call, no retries)
=============  ========  ================================================================
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigurationError
from ...model.queue_names import validate_queue_name
from ...model.secrets import describe
from .known import OPTION_NAMES

#: How long the result store check waits for Table Storage (seconds); it does not retry.
STORE_CHECK_TIMEOUT_S = 3


def check_backend(backend: Any) -> list:
    from django.core import checks

    where = f"TASKS[{backend.alias!r}]"
    messages: list = []
    if backend.unknown_options:
        messages.append(checks.Error(
            f"{where} OPTIONS has unknown key(s) {', '.join(map(repr, backend.unknown_options))}",
            hint=f"AzureQueueBackend understands: {', '.join(OPTION_NAMES)}", id="azjobs.E003"))
    try:
        from ...model.retry import build_policy

        retry = backend.retry_options()
        build_policy(retry.get("retry"), retry.get("max_retries"), retry.get("retry_on"), retry.get("give_up_on"))
    except ConfigurationError as exc:
        messages.append(checks.Error(f"{where} OPTIONS: {exc}", id="azjobs.E003"))
    for queue_name in sorted(backend.queues):
        azure = backend.azure_queue(queue_name)
        try:
            validate_queue_name(azure)
        except ConfigurationError as exc:
            messages.append(checks.Error(
                f"{where} queue {queue_name!r} maps to the Azure queue name {azure!r}, which is invalid: {exc}",
                hint="map it with OPTIONS 'queue_names' ({'%s': 'valid-name'}) or rename the queue" % queue_name,
                id="azjobs.E001"))
    if getattr(backend, "inline", False):
        return messages  # tasks run in memory: no connection, no result store to check
    try:
        connection = backend.connection
    except ConfigurationError as exc:
        messages.append(checks.Error(f"{where}: {exc}", id="azjobs.E002"))
        return messages
    if connection.source.startswith("default"):
        messages.append(checks.Warning(
            f"{where}: {backend.connection_setting} is not set, so tasks are sent to Azurite on its default ports",
            hint=f"set {backend.connection_setting} to the storage account's connection string (or "
                 f"{backend.connection_setting}__accountName for a managed identity), or OPTIONS 'connection_string'",
            id="azjobs.W001"))
    if backend.results:
        problem = _store_problem(connection)
        if problem:
            messages.append(checks.Warning(
                f"{where}: the result store (Table Storage of account {connection.account_name}) did not answer: "
                f"{problem}",
                hint="get_result() fails until it does; OPTIONS 'results': False turns results off",
                id="azjobs.W002"))
    return messages


def _store_problem(connection: Any) -> str | None:
    """None if Table Storage answers one call; else what went wrong, in one line."""
    try:
        service = connection.table_service(retry_total=0, connection_timeout=STORE_CHECK_TIMEOUT_S,
                                           read_timeout=STORE_CHECK_TIMEOUT_S)
        with service:
            service.get_service_properties()
    except Exception as exc:
        return describe(exc)
    return None


__all__ = ["check_backend"]
