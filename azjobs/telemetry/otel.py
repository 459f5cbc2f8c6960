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
    """The OpenTelemetry API modules (``baggage``, ``context``, ``trace``, ``metrics``) and W3C propagators, or None."""
    global _api
    if _api is None:
        with _lock:
            if _api is None:
                try:
                    from opentelemetry import baggage, context, metrics, trace
                    from opentelemetry.baggage.propagation import W3CBaggagePropagator
                    from opentelemetry.trace import SpanKind, Status, StatusCode
                    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
                except ImportError:
                    _api = False
                else:
                    # The envelope's trace field is W3C: these two propagators, never the global one
                    # (OTEL_PROPAGATORS), which by default adds the caller's baggage (azjobs.telemetry.tracing).
                    _api = SimpleNamespace(baggage=baggage, context=context, metrics=metrics, trace=trace,
                                           SpanKind=SpanKind, Status=Status, StatusCode=StatusCode,
                                           trace_context=TraceContextTextMapPropagator(),
                                           baggage_propagator=W3CBaggagePropagator())
    return _api or None


__all__ = ["api"]
