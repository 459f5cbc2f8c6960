"""The OpenTelemetry SDK, installed once per test process as the global providers, with in-memory export.

OpenTelemetry allows one global tracer provider and one meter provider per process, so the
tests share them and tell their data apart by trace id or by queue (each test has unique
queue names). ``otel()`` fails the test if another provider was installed first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from azjobs.telemetry import tracing


@dataclass
class Otel:
    tracer_provider: TracerProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

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


def otel() -> Otel:
    global _otel
    if _otel is None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        if trace.get_tracer_provider() is not provider:
            raise AssertionError("another OpenTelemetry tracer provider was installed before the tests' one")
        _otel = Otel(provider, exporter, reader)
    return _otel
