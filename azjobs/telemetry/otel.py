"""The OpenTelemetry API, imported on first use and only if it is installed.

azjobs has no hard dependency on OpenTelemetry (``pip install azjobs[otel]`` adds
``opentelemetry-api``). Nothing here imports it at module level: ``api()`` tries once, when
the first job is enqueued or run, and remembers the answer. Without the package every
telemetry hook returns at once and messages are exactly what they were.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

_lock = threading.Lock()
_api: Any = None  # None: not tried yet; False: not installed; else the namespace


def api() -> SimpleNamespace | None:
    """The OpenTelemetry API modules (``context``, ``propagate``, ``trace``, ``metrics``), or None."""
    global _api
    if _api is None:
        with _lock:
            if _api is None:
                try:
                    from opentelemetry import context, metrics, propagate, trace
                    from opentelemetry.trace import SpanKind, Status, StatusCode
                except ImportError:
                    _api = False
                else:
                    _api = SimpleNamespace(context=context, metrics=metrics, propagate=propagate, trace=trace,
                                           SpanKind=SpanKind, Status=Status, StatusCode=StatusCode)
    return _api or None


__all__ = ["api"]
