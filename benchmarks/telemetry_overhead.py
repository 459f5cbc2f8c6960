"""What tracing and metrics cost per job in the execution core (no storage), run by hand.

    .venv/bin/python -m benchmarks.telemetry_overhead [--jobs N]

Works N no-op jobs through ``Executor.execute`` with a ``RecordingClient`` (no network), plus the
enqueue-side ``BoundCall.build``, in three fresh interpreters: OpenTelemetry blocked from import (as
if not installed), the API with no SDK configured, and the SDK with a batch span processor over an
in-memory exporter and an in-memory metric reader. Prints microseconds per job (best of 3).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "opentelemetry":
                raise ModuleNotFoundError(name, name=name)
    sys.meta_path.insert(0, Block())
""")

SDK = textwrap.dedent("""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
""")

WORK = textwrap.dedent("""
    import time
    import azjobs
    from azjobs.execution.executor import Executor, MessageInfo
    from azjobs.hosting import executor as hosted_executor
    from azjobs.testing import RecordingClient

    reg = azjobs.Registry()

    def noop(n):
        pass

    job = azjobs.job(queue="bench", registry=reg, name="noop")(noop)
    client = RecordingClient()
    executor = hosted_executor(registry=reg, client=client, settings=client.settings, host="h")
    bound = job.options(client=client)
    N = {jobs}
    best_build = best_run = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        envelopes = [bound.build((i,), {{}}) for i in range(N)]
        best_build = min(best_build, time.perf_counter() - started)
        bodies = [e.encode() for e in envelopes]
        info = MessageInfo(queue="bench", message_id="m")
        started = time.perf_counter()
        for body in bodies:
            executor.execute(body, info)
        best_run = min(best_run, time.perf_counter() - started)
    print(f"{{best_build / N * 1e6:.1f}} {{best_run / N * 1e6:.1f}}")
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    args = parser.parse_args()
    work = WORK.format(jobs=args.jobs)
    print(f"{'setup':<40} {'build µs/job':>12} {'execute µs/job':>15}")
    for name, prefix in (("OpenTelemetry not installed (blocked)", BLOCK), ("API, no SDK configured", ""),
                         ("SDK: batch spans + metrics, in memory", SDK)):
        done = subprocess.run([sys.executable, "-c", prefix + work], capture_output=True, text=True, check=True)
        build, run = done.stdout.split()
        print(f"{name:<40} {build:>12} {run:>15}")


if __name__ == "__main__":
    main()
