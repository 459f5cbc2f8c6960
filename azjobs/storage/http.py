"""Retries and timeouts for the SDK clients azjobs makes (their transport: azjobs.storage.transport)."""

from __future__ import annotations

import functools
from typing import Any


# A connection that cannot be made (refused, unknown host, connect timeout) is retried once,
# quickly: nothing listening is not a hiccup worth 10 s of back-off. 5xx answers and broken
# responses keep the usual retries.
CONNECT_TIMEOUT_S = 5
CONNECT_RETRIES = 1
CONNECT_RETRY_BACKOFF_S = 0.5


MAX_RETRY_AFTER_S = 60.0


def _retry_after_s(response: Any) -> float | None:
    """The seconds a response's ``Retry-After`` (or ``x-ms-retry-after-ms``) header asks for, if any."""
    if response is None:
        return None
    headers = response.headers
    milliseconds = headers.get("x-ms-retry-after-ms") or headers.get("retry-after-ms")
    try:
        if milliseconds:
            return float(milliseconds) / 1000
        seconds = headers.get("Retry-After")
        return float(seconds) if seconds else None
    except ValueError:  # an HTTP date: rare from Storage; the back-off applies
        return None


@functools.lru_cache(maxsize=None)
def fast_connect_retry(base: type) -> type:
    """``base`` (a Storage ``ExponentialRetry``, sync or async) with a short back-off after a failed connect."""
    from azure.core.exceptions import ServiceRequestError

    class FastConnectRetry(base):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("retry_connect", CONNECT_RETRIES)
            super().__init__(**kwargs)

        def get_backoff_time(self, settings: dict) -> float:
            history = settings.get("history") or []
            last = history[-1] if history else None
            if isinstance(getattr(last, "error", None), ServiceRequestError):
                return CONNECT_RETRY_BACKOFF_S
            backoff = super().get_backoff_time(settings)
            # Throttled (503 ServerBusy, 429): wait at least what the service asked for in Retry-After.
            asked = _retry_after_s(getattr(last, "http_response", None))
            return max(backoff, min(asked, MAX_RETRY_AFTER_S)) if asked is not None else backoff

    FastConnectRetry.__name__ = FastConnectRetry.__qualname__ = f"FastConnect{base.__name__}"
    return FastConnectRetry


def table_service(connection: Any, **kwargs: Any):
    """A ``TableServiceClient`` for ``connection``'s account with short retries and timeouts: a table that
    cannot be reached is reported in seconds (job state, workflow pages). A throttled call (503, 429,
    500) is retried 3 times, at once and then 0.8 s and 1.6 s later, or after the service's
    ``Retry-After``; a refused connection or a lost answer once."""
    return connection.table_service(retry_total=3, retry_connect=1, retry_read=1, retry_backoff_factor=0.4,
                                    connection_timeout=CONNECT_TIMEOUT_S, read_timeout=10, **kwargs)


def sdk_retry():
    """Short SDK retries (about 1, 3, 5 s) instead of the default 15 s, 18 s, 42 s back-off; a refused
    connection is retried once after 0.5 s, so it fails in about a second."""
    from azure.storage.queue import ExponentialRetry

    return fast_connect_retry(ExponentialRetry)(initial_backoff=1, increment_base=2, retry_total=3)


def sdk_retry_async():
    """``sdk_retry`` for the asyncio SDK clients."""
    try:
        from azure.storage.queue._shared.policies_async import ExponentialRetry
    except ImportError:  # pragma: no cover - the SDK moved it: its default policy with our numbers
        return None
    return fast_connect_retry(ExponentialRetry)(initial_backoff=1, increment_base=2, retry_total=3)


__all__ = ["CONNECT_TIMEOUT_S", "fast_connect_retry", "sdk_retry", "sdk_retry_async", "table_service"]
