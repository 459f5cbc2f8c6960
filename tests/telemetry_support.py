"""The OpenTelemetry SDK, installed once per test process as the global providers, with in-memory export.

OpenTelemetry allows one global tracer provider and one meter provider per process, so the
tests share them and tell their data apart by trace id or by queue (each test has unique
queue names). Tracing through azjobs is on only inside a test that takes the ``otel`` fixture:
elsewhere the global tracer provider hands out no-op tracers, so other tests' messages carry
no ``trace`` field (it would change their sizes) exactly as without an SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import pytest
from opentelemetry import baggage, metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from azjobs.telemetry import tracing


class Switched(trace.TracerProvider):
    """The SDK's tracers while a test using the ``otel`` fixture runs, no-op tracers otherwise."""

    def __init__(self, sdk: TracerProvider) -> None:
        self.sdk = sdk
        self.active = False

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return self.sdk.get_tracer(*args, **kwargs) if self.active else trace.NoOpTracer()


class ParentBaggage(SpanProcessor):
    """Records the baggage of each span's parent context, as a span processor sees it when the span starts.

    That is where OpenTelemetry's ``BaggageSpanProcessor`` copies baggage into span attributes (and so into
    the exported telemetry): whatever baggage a span is started under is trusted by such processors.
    """

    def __init__(self) -> None:
        self.seen: dict[int, dict[str, object]] = {}

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.seen[span.context.span_id] = dict(baggage.get_all(parent_context))


@dataclass
class Otel:
    tracer_provider: TracerProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    switch: Switched
    parents: ParentBaggage

    def parent_baggage(self, span: ReadableSpan) -> dict[str, object]:
        """The baggage ``span`` was started under (what a baggage span processor would copy into it)."""
        return self.parents.seen[span.context.span_id]

    @property
    def tracer(self) -> Any:
        return self.tracer_provider.get_tracer("tests")

    def spans(self, *, trace_id: int | None = None, queue: str | None = None) -> list[ReadableSpan]:
        """Finished spans of one trace, or whose queue attribute is ``queue``, in the order they ended."""
        found = []
        for span in self.exporter.get_finished_spans():
            if trace_id is not None and span.context.trace_id != trace_id:
                continue
            if queue is not None and (span.attributes or {}).get(tracing.QUEUE) != queue:
                continue
            found.append(span)
        return found

    def points(self, name: str, queue: str) -> list[Any]:
        """The data points of metric ``name`` whose queue attribute is ``queue``."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    found += [p for p in metric.data.data_points if p.attributes.get(tracing.QUEUE) == queue]
        return found

    def total(self, name: str, queue: str) -> int:
        """A counter's value for ``queue`` (all jobs summed); a histogram's count."""
        return sum(getattr(p, "value", None) if hasattr(p, "value") else p.count for p in self.points(name, queue))


_otel: Otel | None = None


def installed() -> Otel:
    """The SDK providers, installed as the global ones on first use (tracing through azjobs off)."""
    global _otel
    if _otel is None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        parents = ParentBaggage()
        provider.add_span_processor(parents)
        switch = Switched(provider)
        trace.set_tracer_provider(switch)
        reader = InMemoryMetricReader()
        meters = MeterProvider(metric_readers=[reader])
        metrics.set_meter_provider(meters)
        if trace.get_tracer_provider() is not switch or metrics.get_meter_provider() is not meters:
            raise AssertionError("another OpenTelemetry provider was installed before the tests' one")
        _otel = Otel(provider, exporter, reader, switch, parents)
    return _otel


@pytest.fixture
def otel() -> Iterator[Otel]:
    """The in-memory SDK, with tracing through azjobs on for this test."""
    state = installed()
    state.switch.active = True
    try:
        yield state
    finally:
        state.switch.active = False
