"""The no-op drain with an Entra ID credential, side by side with the account key, in one run.

``python -m benchmarks.entra [--jobs 1000] [--rounds 2]`` starts Azurite over HTTPS (a CA made for
the run, trusted through ``REQUESTS_CA_BUNDLE``) with ``--oauth basic``, and a local stand-in for
the managed identity endpoint (``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``, what App Service gives an
app), then drains ``--jobs`` no-op jobs each round with, in rotating order:

- the raw SDK (8 threads, receive 32 + delete) with the token credential (``ManagedIdentityCredential``);
- the azjobs worker at host defaults with ``AzureWebJobsStorage__queueServiceUri`` (identity-based:
  ``DefaultAzureCredential``, which takes the managed identity);
- the azjobs worker at host defaults with the account key (a connection string), same HTTPS Azurite.

Jobs are enqueued with the key, untimed. Figures: jobs/s (median of rounds) and CPU per job
(the worker's after its first job; the raw harness's whole process).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from . import azjobs_side, jobs, raw_sdk
from devtools.azurite import ACCOUNT, Azurite
from devtools.tls import ManagedIdentityEndpoint, make_tls_files

RAW_TOKEN = "raw SDK, token (8 threads, receive 32 + delete)"
AZ_TOKEN = "azjobs worker, token (DefaultAzureCredential)"
AZ_KEY = "azjobs worker, account key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="azjobs-bench-entra-"))
    ca, cert, key = make_tls_files(workdir)
    os.environ["REQUESTS_CA_BUNDLE"] = ca  # this process and the workers it starts trust the run's CA
    azurite = Azurite(cert=cert, key=key, oauth="basic").start()
    identity = ManagedIdentityEndpoint().start()
    os.environ.update(identity.environment)
    from azure.identity import ManagedIdentityCredential
    from azure.storage.queue import QueueClient

    conn = azurite.connection_string  # https, with the key: enqueueing and watching
    base = f"https://127.0.0.1:{{}}/{ACCOUNT}"
    identity_env = {"AzureWebJobsStorage": "",
                    "AzureWebJobsStorage__queueServiceUri": base.format(azurite.queue_port),
                    "AzureWebJobsStorage__blobServiceUri": base.format(azurite.blob_port),
                    "AzureWebJobsStorage__tableServiceUri": base.format(azurite.table_port),
                    **identity.environment}
    body = jobs.noop.options(queue="bench-noop").build((123456,), {}).encode("base64")
    credential = ManagedIdentityCredential()
    rates: dict[str, list[float]] = {RAW_TOKEN: [], AZ_TOKEN: [], AZ_KEY: []}
    cpu: dict[str, list[float]] = {RAW_TOKEN: [], AZ_TOKEN: [], AZ_KEY: []}

    def raw(queue: str) -> tuple[float, float]:
        raw_sdk.enqueue(conn, queue, [body] * args.jobs, threads=8)
        client = QueueClient(base.format(azurite.queue_port), queue, credential=credential)
        outcome = raw_sdk.drain(conn, queue, args.jobs, client=client)
        return outcome.rate, outcome.cpu_s / args.jobs * 1000

    def worker(queue: str, env: dict[str, str] | None) -> tuple[float, float]:
        outcome = azjobs_side.drain(conn, queue, args.jobs, workdir, env=env)
        if outcome.jobs != args.jobs:
            raise RuntimeError(f"{outcome.jobs} distinct jobs ran, expected {args.jobs}")
        return outcome.rate, outcome.drain_cpu_s / args.jobs * 1000

    contenders = [(RAW_TOKEN, raw), (AZ_TOKEN, lambda q: worker(q, identity_env)), (AZ_KEY, lambda q: worker(q, None))]
    try:
        warm = f"warm-{int(time.time())}"
        azjobs_side.client(conn).ensure_queue(warm)
        raw(warm)  # untimed: Azurite, TLS and the token warmed up
        for round_number in range(args.rounds):
            shift = round_number % len(contenders)
            for name, work in contenders[shift:] + contenders[:shift]:
                queue = f"entra-{round_number}-{len(rates[name])}-{int(time.time() * 1000) % 10**8}"
                azjobs_side.client(conn).ensure_queue(queue)
                rate, per_job = work(queue)
                rates[name].append(rate)
                cpu[name].append(per_job)
                print(f"[round {round_number + 1}] {name}: {rate:.0f} jobs/s, {per_job:.2f} ms CPU per job",
                      flush=True)
        print(f"\n{'contender':<48} {'jobs/s':>8} {'CPU/job ms':>11}")
        for name in rates:
            print(f"{name:<48} {statistics.median(rates[name]):>8.0f} {statistics.median(cpu[name]):>11.2f}")
        token, key_rate, raw_rate = (statistics.median(rates[n]) for n in (AZ_TOKEN, AZ_KEY, RAW_TOKEN))
        print(f"\nazjobs token / raw token: {token / raw_rate:.2f}x (goal 0.95x); "
              f"azjobs token / azjobs key: {token / key_rate:.2f}x (goal 0.9x); "
              f"tokens handed out: {identity.requests}")
    finally:
        identity.stop()
        azurite.stop()


if __name__ == "__main__":
    main()
