"""Telemetry: OpenTelemetry tracing through the message, and job metrics, when OpenTelemetry is installed.

- ``tracing``: a PRODUCER span at enqueue (its context travels in the envelope's ``trace``
  field), and the span names and attributes;
- ``watch``: one delivery's CONSUMER span and metrics;
- ``hook``: ``TelemetryHook``, how the execution core announces each delivery to them;
- ``metrics``: the instruments; ``summary``: the worker's ``--stats-interval`` line;
- ``otel``: the OpenTelemetry API, imported on first use and only if installed.

Nothing of OpenTelemetry is imported until a job is enqueued or run with it present.
"""
