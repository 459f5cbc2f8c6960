"""Two ways to deliver queue messages to the execution core, for the failure tests.

- ``RunnerDriver``: the local runner's burst drain (``azjobs.runtime.worker.drain``).
- ``FunctionsDriver``: the generated Azure Function, delivered and settled as the host
  does (``tests/functions_support.py``: receive, base64-decode, pre-run poison check,
  run, delete / release / poison).

Both run the same ``RecordingExecutor`` (the real core, keeping each ``Result``), so a
test asserts the same behaviour through both.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Callable

import azjobs
from azjobs.storage.client import Client
from azjobs.model.outcome import Result
from azjobs.model.envelope import utcnow
from azjobs.model.settings import QueueSettings
from tests.functions_support import RecordingExecutor, fresh_app, host_like_settle, receive_one

TEST_SETTINGS = QueueSettings(max_dequeue_count=5, visibility_timeout=timedelta(0))


class Driver:
    name = "?"

    def __init__(self, client: Client, queue: str, registry: azjobs.Registry,
                 settings: QueueSettings = TEST_SETTINGS, **executor_options) -> None:
        self.client = client
        self.queue = queue
        self.registry = registry
        self.executor = RecordingExecutor(registry=registry, client=client, settings=settings, host="test-host",
                                          **executor_options)

    @property
    def results(self) -> list[Result]:
        return self.executor.results

    def shift_clock(self, delta: timedelta) -> None:
        """Make the core believe it is ``delta`` later than it is (long-delay tests)."""
        self.executor.clock = lambda: utcnow() + delta

    def drain(self) -> int:
        """Deliver every visible message once; returns how many were delivered."""
        raise NotImplementedError

    def run_until(self, done: Callable[[], bool], timeout_s: float = 20.0, pause_s: float = 0.1) -> None:
        """Drain repeatedly until ``done()`` (messages that reappear after a delay are picked up)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.drain()
            if done():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: condition not reached within {timeout_s}s; results: "
                                     f"{[(r.outcome.value, r.detail) for r in self.results]}")
            time.sleep(pause_s)


class RunnerDriver(Driver):
    name = "runner"

    def drain(self) -> int:
        from azjobs.runtime.worker import drain

        return drain(self.client, [self.queue], executor=self.executor, fetch=16, lease_s=30)


class FunctionsDriver(Driver):
    name = "functions"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.app = fresh_app([self.queue], registry=self.registry, executor=self.executor)
        self.host_actions = []

    def drain(self) -> int:
        queue_client = self.client.queue(self.queue)
        delivered = 0
        while True:
            message = receive_one(queue_client, visibility_timeout=60)
            if message is None:
                return delivered
            self.host_actions.append(host_like_settle(self.app, queue_client, message, self.executor.settings))
            delivered += 1


DRIVERS = {"runner": RunnerDriver, "functions": FunctionsDriver}


def drop_queues(client, queue: str) -> None:
    """Delete a test's queue and its poison twin (whatever exists)."""
    for name in (queue, queue + "-poison"):
        try:
            client.queue(name).delete_queue()
        except Exception:
            pass
