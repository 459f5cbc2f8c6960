"""An autoscaler that behaves as KEDA's ``azure-queue`` scaler, the HPA and the kubelet do, over real
``azjobs`` worker processes (no cluster needed).

- The metric, as KEDA 2.16's ``azure_queue_scaler.go`` reads it (``keda_queue_length``): ``all`` is
  Get Queue Properties' approximate count (visible, delayed and leased messages alike);
  ``visibleonly`` peeks up to 32 messages and returns how many are visible, unless all 32 are,
  in which case it falls back to the approximate count.
- Every ``polling_s``: active when the count is above ``activation`` (0 -> 1 first, as KEDA
  activates a scaled-to-zero target and leaves the rest to the HPA); desired replicas
  ``ceil(count / queue_length)`` bounded to [1, max] while active (the HPA never goes below 1),
  0 once the trigger has been inactive for ``cooldown_s`` (KEDA's cooldownPeriod). Scale-down
  follows the HPA's stabilization window: the highest desired count of the last
  ``stabilization_s`` seconds; scale-up is immediate.
- Replicas are worker processes. A surplus replica (the newest first) gets SIGTERM, and SIGKILL if
  it is still running ``termination_grace_s`` later (the kubelet and terminationGracePeriodSeconds).
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

MAX_PEEK = 32  # KEDA's maxPeekMessages


def keda_queue_length(queue_client: Any, strategy: str) -> int:
    """The queue length KEDA's azure-queue scaler reports for ``strategy`` (all | visibleonly)."""
    if strategy.lower() == "visibleonly":
        visible = len(list(queue_client.peek_messages(max_messages=MAX_PEEK)))
        if visible < MAX_PEEK:
            return visible
    return queue_client.get_queue_properties().approximate_message_count


@dataclass
class ScalerSettings:
    queue_length: int
    max_replicas: int
    termination_grace_s: float
    strategy: str = "visibleonly"
    activation: int = 0
    polling_s: float = 2.0
    cooldown_s: float = 10.0
    stabilization_s: float = 6.0


@dataclass
class Sample:
    t: float
    queue_length: int
    desired: int
    replicas: int  # running, not terminating
    terminating: int


@dataclass
class Replica:
    index: int
    process: subprocess.Popen
    started_at: float
    terminated_at: float | None = None
    exit_code: int | None = None
    killed: bool = False
    exit_s: float | None = None  # from SIGTERM to exit


@dataclass
class Autoscaler:
    settings: ScalerSettings
    queue_client: Any
    start_replica: Callable[[int], subprocess.Popen]
    samples: list[Sample] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._t0 = time.monotonic()
        self._last_active: float | None = None
        self._recommendations: list[tuple[float, int]] = []

    # -- the controller ---------------------------------------------------
    def running(self) -> list[Replica]:
        return [r for r in self.replicas if r.terminated_at is None and r.exit_code is None]

    def terminating(self) -> list[Replica]:
        return [r for r in self.replicas if r.terminated_at is not None and r.exit_code is None]

    def tick(self) -> None:
        now = time.monotonic()
        self._reap(now)
        s = self.settings
        count = keda_queue_length(self.queue_client, s.strategy)
        if count > s.activation:
            self._last_active = now
        if self._last_active is not None and now - self._last_active < s.cooldown_s:
            wanted = min(s.max_replicas, max(1, math.ceil(count / s.queue_length)))
        else:
            wanted = 0
        # HPA scale-down stabilization: the highest recommendation within the window (scale to zero is KEDA's).
        self._recommendations = [(t, n) for t, n in self._recommendations if now - t < s.stabilization_s]
        self._recommendations.append((now, wanted))
        desired = wanted if wanted == 0 else max(n for _, n in self._recommendations)
        running = self.running()
        if not running and desired:
            desired = 1  # KEDA activates 0 -> 1; the HPA takes it from there at its next sync
        for _ in range(desired - len(running)):
            index = len(self.replicas)
            self.replicas.append(Replica(index, self.start_replica(index), now))
        for replica in sorted(running, key=lambda r: r.started_at, reverse=True)[:max(0, len(running) - desired)]:
            replica.process.send_signal(signal.SIGTERM)
            replica.terminated_at = now
        self.samples.append(Sample(round(now - self._t0, 2), count, desired, len(self.running()),
                                   len(self.terminating())))

    def _reap(self, now: float) -> None:
        for replica in self.replicas:
            if replica.exit_code is not None:
                continue
            code = replica.process.poll()
            if code is not None:
                replica.exit_code = code
                if replica.terminated_at is not None:
                    replica.exit_s = round(now - replica.terminated_at, 2)
            elif replica.terminated_at is not None and now - replica.terminated_at >= self.settings.termination_grace_s:
                replica.process.kill()  # the kubelet: past terminationGracePeriodSeconds
                replica.killed = True
                replica.exit_code = replica.process.wait(30)

    def run(self, until: Callable[[], bool], timeout: float) -> bool:
        """Tick every ``polling_s`` until ``until()`` (checked after each tick) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            started = time.monotonic()
            self.tick()
            if until():
                return True
            while time.monotonic() - started < self.settings.polling_s:  # the kubelet watches exits meanwhile
                self._reap(time.monotonic())
                time.sleep(0.1)
        return False

    def wait_terminated(self, timeout: float) -> None:
        """Let terminating replicas exit (or be killed past their grace)."""
        deadline = time.monotonic() + timeout
        while self.terminating() and time.monotonic() < deadline:
            self._reap(time.monotonic())
            time.sleep(0.2)

    def save(self, path: Path, **extra: Any) -> None:
        path.write_text(json.dumps({
            "settings": asdict(self.settings),
            "samples": [asdict(sample) for sample in self.samples],
            "replicas": [{"index": r.index, "started_s": round(r.started_at - self._t0, 2),
                          "terminated_s": None if r.terminated_at is None else round(r.terminated_at - self._t0, 2),
                          "exit_code": r.exit_code, "killed": r.killed, "exit_s": r.exit_s} for r in self.replicas],
            **extra,
        }, indent=1), encoding="utf-8")
