"""Jobs for the credential-redaction tests (tests/integration/test_secrets.py).

``fail_through_sas`` makes one storage call through a SAS-authenticated SDK client whose
queue endpoint is a port nothing listens on. The SDK raises ``ServiceRequestError`` with
urllib3's text, which names the request URL with the SAS token in it::

    HTTPConnectionPool(host='127.0.0.1', port=N): Max retries exceeded with url:
    /devstoreaccount1/secret-probe?se=...&sp=...&sv=...&sig=<signature>&comp=metadata (Caused by ...)

(urllib3 names the URL when the requests session keeps its default adapter, as the
sessions azjobs builds for its own client do.) The connection string is read from the
environment setting named by ``setting`` (``AzureWebJobsStorage`` in a worker), never
passed as an argument, so the secret reaches azjobs only through the error.

Importing this module with ``AZJOBS_TEST_IMPORT_PROBE_PORT`` set makes the same failing
call at import time, as a jobs module that touches storage when imported would.
"""

from __future__ import annotations

import os

import azjobs
from azjobs.model.retry import NoRetry

QUEUE = "secret-tests"  # the declared queue; tests always override it per call
PROBE_QUEUE = "secret-probe"
ACCOUNT = "devstoreaccount1"


def connection_at_port(connection_string: str, port: int) -> str:
    """``connection_string`` (a SAS one) with its queue endpoint moved to 127.0.0.1:``port``."""
    parts = [p for p in connection_string.split(";") if p.strip()]
    kept = [p for p in parts if p.split("=", 1)[0].strip().lower() not in ("queueendpoint", "blobendpoint",
                                                                             "tableendpoint")]
    return ";".join([f"QueueEndpoint=http://127.0.0.1:{port}/{ACCOUNT}", *kept])


def probe(connection_string: str, port: int) -> None:
    """One storage call through a SAS-authenticated client at ``port``; raises the SDK's error."""
    import requests
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(connection_at_port(connection_string, port), PROBE_QUEUE,
                                                session=requests.Session(), retry_total=0)
    client.get_queue_properties()


def fail_through_sas(port: int, setting: str = "AzureWebJobsStorage") -> None:
    """Fails with an SDK error whose text carries the SAS signature of the connection in ``setting``."""
    probe(os.environ[setting], port)


def plain_failure(tag: str) -> None:
    """Fails with an error that holds no secret."""
    raise RuntimeError(f"plain failure {tag}")


# Registered for ``python -m azjobs -i tests.jobs.secret_jobs``; in-process tests register
# the plain functions in their own registries on their own queues.
FAIL_THROUGH_SAS = azjobs.job(queue=QUEUE, name="secret.fail_through_sas", retry=NoRetry())(fail_through_sas)

if os.environ.get("AZJOBS_TEST_IMPORT_PROBE_PORT"):
    probe(os.environ["AzureWebJobsStorage"], int(os.environ["AZJOBS_TEST_IMPORT_PROBE_PORT"]))
