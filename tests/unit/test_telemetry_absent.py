"""Without OpenTelemetry nothing changes: run in fresh interpreters, one with the package blocked from import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Enqueue and work a job (sync and async entry points, a success and a retry) with a RecordingClient;
# print what the envelope looked like and which opentelemetry modules were loaded or asked for.
SCENARIO = textwrap.dedent("""
    import asyncio, json, sys
    import azjobs
    from azjobs.execution.executor import Executor, MessageInfo
    from azjobs.hosting import executor as hosted_executor
    from azjobs.model.registry import Registry
    from azjobs.testing import RecordingClient

    imported_by_azjobs = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    reg = Registry()

    def work(x):
        if x == "fail":
            raise RuntimeError("fails")

    job = azjobs.job(queue="absent-q", registry=reg, name="work", max_retries=1)(work)
    client = RecordingClient()
    job.options(client=client).enqueue("ok")
    job.options(client=client).enqueue("fail")
    executor = hosted_executor(registry=reg, client=client, settings=client.settings)
    (ok, _, _), (failing, _, _) = client.sent
    outcomes = [executor.execute(ok.encode(), MessageInfo(queue="absent-q", message_id="1")).outcome.value,
                asyncio.run(executor.execute_async(failing.encode(), MessageInfo(queue="absent-q", message_id="2"))
                            ).outcome.value]
    retry = client.writes[-1].envelope()
    print(json.dumps({
        "imported_by_import": imported_by_azjobs,
        "envelope_keys": sorted(ok.to_dict()), "retry_keys": sorted(retry.to_dict()), "outcomes": outcomes,
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"),
        "asked": sorted(set(getattr(sys, "_otel_asked", []))),
    }))
""")

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    sys._otel_asked = []

    class NoOpenTelemetry(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "opentelemetry":
                sys._otel_asked.append(name)
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, NoOpenTelemetry())
""")

PLAIN_KEYS = ["args", "attempt", "azjobs", "enqueued_at", "id", "job", "kwargs", "queue"]


def _run(script: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_opentelemetry_jobs_work_and_envelopes_carry_no_trace():
    seen = _run(BLOCKER + SCENARIO)
    assert seen["outcomes"] == ["succeeded", "retry_scheduled"]
    assert seen["envelope_keys"] == PLAIN_KEYS
    assert "trace" not in seen["retry_keys"]
    # azjobs looked for the package once it had a job to trace, coped with its absence, and loaded nothing.
    assert seen["asked"] and seen["loaded"] == []


def test_importing_azjobs_imports_no_opentelemetry_and_an_unconfigured_api_adds_nothing():
    # The API is installed here (the test extra) but no SDK is configured: no trace context to carry.
    seen = _run("import azjobs.runtime.worker, azjobs.cli, azjobs.cli.stats\n" + SCENARIO)
    assert seen["imported_by_import"] == []
    assert seen["loaded"]  # it was imported, at the first enqueue
    assert seen["outcomes"] == ["succeeded", "retry_scheduled"]
    assert seen["envelope_keys"] == PLAIN_KEYS
