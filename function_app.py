"""The azjobs function app: one queue trigger per queue the registered jobs use.

The Functions host fetches messages, holds their leases and poisons what keeps
failing; azjobs (``azjobs.execution.executor``, the same core as the ``azjobs`` worker) decides what
a job's success, failure and retry mean. Import every module that declares jobs
before building the blueprint. ``func start`` runs this against Azurite; see
README.md (Running jobs on Azure Functions).
"""

from pathlib import Path

import azure.functions as func

import azjobs
import example_jobs  # noqa: F401  (declares the jobs: importing registers them)

app = func.FunctionApp()
# host.json beside this file holds the queue settings the host uses; azjobs reads the same file.
app.register_functions(azjobs.blueprint(host_json=Path(__file__).with_name("host.json")))
