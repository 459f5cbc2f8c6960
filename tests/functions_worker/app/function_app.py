"""A function app with every kind of azjobs function, for the language-worker tests (tests/functions_worker).

Queue triggers (an app-setting queue and a literal one), a periodic job's timer, the Durable
Functions workflow trio (start trigger with a durable client, orchestrator, activity) and the
dashboard's HTTP function. Its jobs are in tests/functions_worker/worker_jobs.py.
"""

from pathlib import Path

import azure.functions as func

import azjobs
import azjobs.dashboard
from tests.functions_worker import worker_jobs

HOST_JSON = Path(__file__).with_name("host.json")

app = func.FunctionApp()
app.register_functions(azjobs.blueprint(registry=worker_jobs.REGISTRY, host_json=HOST_JSON,
                                        connection=worker_jobs.CONNECTION))
app.register_functions(azjobs.dashboard.blueprint(host_json=HOST_JSON))
