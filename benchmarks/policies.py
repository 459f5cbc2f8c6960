"""Where a delete's CPU goes in the SDK's pipeline: the cost of each policy, by taking it out.

``python -m benchmarks.policies [--calls 400] [--rounds 3]`` starts Azurite and deletes messages
through a ``QueueClient`` on azjobs' transport, once with the SDK's whole pipeline and once
without each policy in turn (the ones a delete can do without; authentication, retries and
the request id are measured too, to show their share, but azjobs keeps them). The cost of a
policy is the CPU per delete with it minus without it (median of ``--rounds``), in this process.
Diagnostic only: the pipeline is rebuilt through the client's private attributes here.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import uuid

from azure.core.pipeline import Pipeline
from azure.storage.queue import QueueClient

from azjobs.storage.transport import StorageTransport
from devtools.azurite import Azurite


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _policies(client: QueueClient) -> list:
    pipeline = client._client._client._pipeline
    return [getattr(p, "_policy", p) for p in pipeline._impl_policies]


def _use(client: QueueClient, transport: StorageTransport, policies: list) -> None:
    client._client._client._pipeline = Pipeline(transport=transport, policies=list(policies))


def _per_delete(client: QueueClient, calls: int) -> float:
    for _ in range(calls):
        client.send_message("m")
    messages = []
    while len(messages) < calls:
        page = list(client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=300))
        if not page:
            break
        messages.extend(page)
    before = _cpu()
    for message in messages:
        client.delete_message(message, retry_read=0)
    return (_cpu() - before) / len(messages) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    azurite = Azurite().start()
    try:
        transport = StorageTransport()
        client = QueueClient.from_connection_string(azurite.connection_string, f"pol-{uuid.uuid4().hex[:12]}",
                                                    transport=transport)
        client.create_queue()
        full = _policies(client)
        _per_delete(client, 50)  # warm-up
        variants = [("(whole pipeline)", full)] + [
            (type(policy).__name__, [p for p in full if p is not policy]) for policy in full]
        results: dict[str, list[float]] = {name: [] for name, _ in variants}
        for _ in range(args.rounds):
            for name, policies in variants:
                _use(client, transport, policies)
                try:
                    results[name].append(_per_delete(client, args.calls))
                except Exception as exc:  # a policy the delete cannot do without (the credential's)
                    results[name].append(float("nan"))
                    print(f"without {name}: {type(exc).__name__}")
        whole = statistics.median(results["(whole pipeline)"])
        print(f"CPU per delete, whole pipeline: {whole:.3f} ms ({args.calls} deletes x {args.rounds} rounds)")
        print(f"{'policy':<36} {'without it, ms':>15} {'its cost, ms':>13}")
        for name, _ in variants[1:]:
            without = statistics.median(results[name])
            print(f"{name:<36} {without:>15.3f} {whole - without:>13.3f}")
        client.delete_queue()
    finally:
        azurite.stop()


if __name__ == "__main__":
    main()
