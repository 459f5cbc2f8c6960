"""HTTP for the SDK clients azjobs makes: pooled sessions, short retries, timeouts."""

from __future__ import annotations

import functools
from typing import Any


def http_session(pool: int):
    """A requests session whose connection pool fits ``pool`` concurrent calls (the SDK's default is 10)."""
    from urllib.request import getproxies_environment

    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    # Without proxy variables, skip requests' per-call look-ups of the environment and ~/.netrc
    # (about 15% of a busy worker's CPU).
    session.trust_env = bool(getproxies_environment())
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# A connection that cannot be made (refused, unknown host, connect timeout) is retried once,
# quickly: nothing listening is not a hiccup worth 10 s of back-off. 5xx answers and broken
# responses keep the usual retries.
CONNECT_TIMEOUT_S = 5
CONNECT_RETRIES = 1
CONNECT_RETRY_BACKOFF_S = 0.5


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
            if history and isinstance(getattr(history[-1], "error", None), ServiceRequestError):
                return CONNECT_RETRY_BACKOFF_S
            return super().get_backoff_time(settings)

    FastConnectRetry.__name__ = FastConnectRetry.__qualname__ = f"FastConnect{base.__name__}"
    return FastConnectRetry


def table_service(connection: Any, **kwargs: Any):
    """A ``TableServiceClient`` for ``connection``'s account with short retries (2, 0.3 s apart) and
    timeouts: a table that cannot be reached is reported in seconds (job state, workflow pages)."""
    return connection.table_service(retry_total=2, retry_connect=1, retry_backoff_factor=0.3,
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


__all__ = ["CONNECT_TIMEOUT_S", "fast_connect_retry", "http_session", "sdk_retry", "sdk_retry_async",
           "table_service"]
