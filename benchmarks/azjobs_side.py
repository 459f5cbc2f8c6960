"""azjobs as a user runs it: ``job.enqueue``/``enqueue_many`` and the ``azjobs`` worker command.

The worker is the CLI in a subprocess (``python -m azjobs -q QUEUE -i benchmarks.jobs
--burst``), ``AzureWebJobsStorage`` set to the Azurite connection string, its log going to
a file, in one of two set-ups:

- **host defaults**: the worker runs in an empty folder (no ``host.json``, no
  ``local.settings.json``), with ``AZJOBS_HOST_JSON``, ``AzureWebJobsScriptRoot`` and
  ``AZURE_FUNCTIONS_ENVIRONMENT`` removed from its environment. It gets the Functions
  host's defaults: ``maxPollingInterval`` 1 minute (Development would make it 2 s),
  ``batchSize`` unset (the worker then receives the service's maximum of 32),
  ``newBatchThreshold`` ``batchSize/2 × cores``;
- **repo host.json**: the same, plus ``--host-json <repo>/host.json`` (``batchSize`` 16,
  ``newBatchThreshold`` 8, ``maxPollingInterval`` 2 s).

``benchmarks`` is found through ``PYTHONPATH`` (the repository root), not through the
working directory.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import azjobs

from . import jobs
from .process import ROOT, WorkerProcess
from .watch import Drain, watch

# Set in a user's shell or by the Functions tooling; each changes what the worker reads.
CLEARED_ENV = ("AZJOBS_HOST_JSON", "AzureWebJobsScriptRoot", "AZURE_FUNCTIONS_ENVIRONMENT",
               "FUNCTIONS_WORKER_PROCESS_COUNT", "AZJOBS_PROCESS_SLOT")


@dataclass(frozen=True)
class Setup:
    label: str
    host_json: Path | None  # None: no host.json at all (the host's defaults)


HOST_DEFAULTS = Setup("host defaults", None)
REPO_HOST_JSON = Setup("repo host.json", ROOT / "host.json")


def client(connection_string: str) -> azjobs.Client:
    """A Client that is also the process default (``job.enqueue`` uses it)."""
    return azjobs.configure(connection_string)


def enqueue_one_by_one(connection_string: str, queue: str, n: int) -> float:
    bound = jobs.noop.options(queue=queue)
    client(connection_string).ensure_queue(queue)
    start = time.perf_counter()
    for i in range(n):
        bound.enqueue(i)
    return time.perf_counter() - start


def enqueue_many(connection_string: str, queue: str, n: int, job=jobs.noop) -> float:
    client(connection_string).ensure_queue(queue)
    start = time.perf_counter()
    result = job.options(queue=queue).enqueue_many(range(n))
    elapsed = time.perf_counter() - start
    result.raise_for_failures()
    return elapsed


@functools.lru_cache(maxsize=None)
def processes_available() -> bool:
    """Whether this azjobs has ``-p N`` / ``--processes N`` (asked of the command itself)."""
    done = subprocess.run([sys.executable, "-m", "azjobs", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    return "--processes" in done.stdout


def worker_cwd(workdir: Path) -> Path:
    """An empty working directory: nothing in it for the worker to pick up."""
    cwd = workdir / "worker-cwd"
    cwd.mkdir(exist_ok=True)
    stray = [p.name for p in cwd.iterdir()]
    if stray:
        raise RuntimeError(f"the worker's working directory {cwd} is not empty: {stray}")
    return cwd


def worker_env(connection_string: str, side_path: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment; ``extra`` (e.g. identity-based ``AzureWebJobsStorage__*`` settings with
    ``AzureWebJobsStorage`` empty) is applied last."""
    from . import sidechannel

    env = dict(os.environ)
    for name in CLEARED_ENV:
        env.pop(name, None)
    env["AzureWebJobsStorage"] = connection_string
    env[sidechannel.ENV] = side_path
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def worker_argv(queue: str, burst: bool, concurrency: int | None = None, setup: Setup = HOST_DEFAULTS,
                processes: int | None = None) -> list[str]:
    argv = [sys.executable, "-m", "azjobs", "-q", queue, "-i", "benchmarks.jobs"]
    if burst:
        argv.append("--burst")
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    if setup.host_json is not None:
        argv += ["--host-json", str(setup.host_json)]
    if processes is not None:
        if not processes_available():
            raise RuntimeError("this azjobs has no -p/--processes")
        argv += ["-p", str(processes)]
    return argv


def start_worker(connection_string: str, queue: str, workdir: Path, *, burst: bool, setup: Setup = HOST_DEFAULTS,
                 concurrency: int | None = None, processes: int | None = None,
                 tag: str = "", env: dict[str, str] | None = None) -> tuple[WorkerProcess, str]:
    side = str(workdir / f"{queue}.side")
    worker = WorkerProcess(worker_argv(queue, burst, concurrency, setup, processes),
                           worker_env(connection_string, side, env), workdir / f"{queue}{tag}.log",
                           cwd=worker_cwd(workdir)).start()
    return worker, side


def drain(connection_string: str, queue: str, n: int, workdir: Path, *, job=jobs.noop, setup: Setup = HOST_DEFAULTS,
          concurrency: int | None = None, processes: int | None = None, timeout: float = 300.0,
          env: dict[str, str] | None = None) -> Drain:
    """Pre-enqueue ``n`` jobs (untimed), then time a burst worker working them off (``env``: the worker's
    own settings on top, e.g. an identity instead of the connection string used to enqueue and watch)."""
    enqueue_many(connection_string, queue, n, job=job)
    worker, side = start_worker(connection_string, queue, workdir, burst=True, setup=setup,
                                concurrency=concurrency, processes=processes, env=env)
    try:
        result = watch(worker, side, n, client(connection_string).queue(queue), timeout)
        code = worker.wait(60)
        if code != 0:
            raise RuntimeError(f"azjobs worker exited with {code} (log: {worker.log_path})")
        # The burst worker exited by itself: its rusage (and its reaped children's) is exact.
        result.cpu_s, result.peak_rss = worker.cpu_s, worker.peak_rss
        return result
    finally:
        worker.stop()


def start_idle_worker(connection_string: str, queue: str, workdir: Path,
                      setup: Setup = HOST_DEFAULTS) -> tuple[WorkerProcess, str]:
    client(connection_string).ensure_queue(queue)
    return start_worker(connection_string, queue, workdir, burst=False, setup=setup)


def send_probe(queue: str) -> float:
    sent = time.time()
    jobs.probe.options(queue=queue).enqueue(sent)
    return sent
