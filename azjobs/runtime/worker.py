"""The local runner: works queues off-cloud exactly as the Functions host would.

Shape of a ``Worker``:

- one fetch thread per queue (its own polling back-off and rate limit) receiving real batches
  under the host's per-queue batch rules (azjobs/inflight.py): ``batchSize`` per receive, fetch
  again at ``newBatchThreshold``; ``-c`` caps all queues together;
- ``concurrency`` job threads take fetched messages in order (by weight with ``-q name:weight``,
  azjobs/runtime/weighted.py) and hand each to the shared execution core (``Executor``): ``begin``,
  ``run``, ``finish``. An ``async def`` job's coroutine runs on one event-loop thread while its job
  thread waits for it, so one limit covers both kinds and a sync job never blocks the loop. A job
  thread survives anything a job raises;
- a ``LeaseKeeper`` renews every held message at half its lease, each renewal independent and
  bounded (azjobs/lease.py); ``Settlement`` deletes, releases and poisons as the host does
  (azjobs/settlement.py), deleting on a few ``Settler`` threads with the newest pop receipt;
- a watchdog enforces the job timeout (host.json ``functionTimeout``, ``--timeout``).

A job past its timeout gets the host's outcome: its message is released with ``visibilityTimeout``
(poisoned at ``maxDequeueCount``) and the log names the job. An ``async def`` job is cancelled. A
sync job's thread cannot be killed in Python: it is left to finish on its own, its result is
discarded, and a replacement thread keeps ``-c`` jobs running. Such stuck threads are counted; when
as many are stuck as ``-c``, the worker stops (exit status 3, ``restart_needed``) so its supervisor
can start a fresh process, as the host restarts its language worker after a timeout.

``stop()`` (SIGTERM/SIGINT in the CLI) stops fetching, releases fetched-but-unstarted messages
at once, lets running jobs finish within ``grace`` seconds, then releases the messages of jobs
still running; ``stop(force=True)`` returns at once and leaves held messages to reappear when
their lease ends. That last release, ``max_jobs`` and ``heartbeat``: azjobs/runtime/scaling.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue as queue_module
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..errors import ConfigurationError
from ..execution.executor import Executor
from ..hosting import executor as hosted_executor
from ..model.secrets import get_logger
from ..model.settings import QueueSettings
from ..storage.client import Client, default_client
from ..storage.http import fast_connect_retry
from ..storage.diagnosis import (
    storage_target,
)
from ..telemetry.summary import Summary
from .inflight import InFlight, QueueLimits
from .leases import LeaseKeeper
from .fetching import Fetching
from .heartbeat import Heartbeat
from .scaling import Scaling
from .jobthreads import JobThreads
from .settlement import Delivery, Settlement
from .settler import Settler
from .timeouts import Watchdog
from .weighted import weigh

log = get_logger("azjobs.worker")

MAX_FETCH = 32
DELETE_THREADS = 8
# Receivers per queue: one polls (with the host's back-off) while the queue is idle; the others
# join in only while receives come back full, so a backlog keeps several receives in flight.
RECEIVERS = 4


# In burst mode, how long storage may stay unreachable before the worker gives up (--burst-timeout).
BURST_TIMEOUT_S = 30.0
# A stopped worker's last waits (threads, the job state catch-up) end this long after the grace period
# at the latest: a thread still inside a storage call then (its SDK retrying through an outage) is left
# behind, daemon, and what it held reappears when its lease ends.
SHUTDOWN_BUDGET_S = 1.0


@dataclass
class WorkerStats:
    """What one ``Worker.run`` did, counted per outcome."""

    receives: int = 0  # receive calls made (empty ones included)
    fetched: int = 0
    succeeded: int = 0
    retry_scheduled: int = 0
    dead_lettered: int = 0
    deferred: int = 0
    skipped: int = 0  # redeliveries of jobs that already finished, settled without running
    throttled: int = 0  # a limit had no room: sent on for later (azjobs.limits), no attempt used
    cancelled: int = 0  # cancelled jobs (azjobs.cancel): deleted without running, or their run's result discarded
    redelivered: int = 0  # released for the host-style redelivery (the core raised, or a timeout)
    timed_out: int = 0  # jobs that ran past the job timeout
    released: int = 0  # fetched but not started when the worker stopped; made visible at once
    lease_lost: int = 0  # another worker owns the message now; this worker did not delete it
    receipt_unknown: int = 0  # settlement waiting for an orphaned lease's message to come back
    recovered: int = 0  # orphaned leases whose message came back to this worker
    delete_failed: int = 0
    receive_errors: int = 0
    abandoned: int = 0  # still running when the grace period ended or a forced stop came
    abandoned_released: int = 0  # of those, messages made visible at once when the grace ended
    stuck: int = 0  # threads still inside a sync job that timed out (replaced by new threads)
    peak_running: int = 0
    forced: bool = False
    restart_needed: bool = False  # stopped because as many threads were stuck as -c
    redeliveries: int = 0  # deliveries with a dequeue count above 1 (after a crash, a lost lease or a release)
    credentials_rejected: bool = False  # storage rejected the credentials while running (logged once)
    storage_gave_up: bool = False  # burst mode: storage stayed unreachable past burst_timeout
    max_jobs_reached: bool = False  # --max-jobs: that many jobs started, the worker stopped after them
    per_queue: dict[str, int] = field(default_factory=dict)  # messages fetched per queue

    @property
    def handled(self) -> int:
        """Messages whose job (or settling) the core finished."""
        return (self.succeeded + self.retry_scheduled + self.dead_lettered + self.deferred + self.skipped
                + self.throttled + self.cancelled + self.redelivered)


def _worker_queue_service(client: Client, pool: int):
    """A queue service for the worker's own calls: short SDK retries, since the worker backs off itself."""
    from azure.storage.queue import ExponentialRetry

    # fast_connect_retry: a throttled call waits at least the service's Retry-After.
    return client.connection.queue_service(
        pool=pool, retry_policy=fast_connect_retry(ExponentialRetry)(initial_backoff=0.5, increment_base=2,
                                                                     retry_total=1),
        connection_timeout=5, read_timeout=30,
    )


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Worker(Fetching, JobThreads, Scaling):
    """Works jobs from one or more queues until stopped (or, with ``burst``, until they are empty)."""

    def __init__(
        self,
        queues: list[str],
        *,
        client: Client | None = None,
        executor: Executor | None = None,
        settings: QueueSettings | None = None,
        concurrency: int | None = None,
        fetch: int | None = None,
        lease: float = 30.0,
        interval: float = 0.0,
        burst: bool = False,
        grace: float = 30.0,
        timeout: float | timedelta | None | bool = True,
        burst_timeout: float | None = BURST_TIMEOUT_S,
        origin: str | None = None,
        stats_interval: float | None = None,
        processes: int = 1,
        schedules: bool = True,
        workflows: str | None = None,
        max_jobs: int | None = None,
        heartbeat: str | None = None,
        heartbeat_interval: float = 10.0,
        weights: dict[str, int] | None = None,  # -q name:weight (azjobs/runtime/weighted.py)
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        self.queues = list(dict.fromkeys(queues))
        self.client = client or (executor.client if executor is not None else default_client())
        # One source of truth for host.json settings: the core's.
        if executor is not None:
            if settings is not None and settings != executor.settings:
                raise ConfigurationError(
                    "Worker(settings=...) differs from its executor's settings; give the settings to the Executor "
                    "only (maxDequeueCount and messageEncoding must mean one thing to both)"
                )
            self.executor = executor
        else:
            if settings is None:
                settings = self.client.settings.for_environment()
            self.executor = hosted_executor(client=self.client, settings=settings)
        self.settings = self.executor.settings
        settings = self.settings
        # -f defaults to host.json batchSize when it sets one, else to the service's maximum of 32
        # (fewer receive calls, each of which sorts the queue on Azurite; the host's default is 16),
        # and never to more than an explicit -c: a worker told to run 4 jobs at once does not hold 16 leases.
        batch = settings.batch_size if settings.batch_size_set else MAX_FETCH
        # The host's batch rules are per instance, shared by its FUNCTIONS_WORKER_PROCESS_COUNT language
        # workers: with -p N each process takes 1/N of them (at defaults), so N processes hold the leases
        # one instance would, and none is left with a backlog of leased jobs while another has none.
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.processes = processes
        split = processes > 1 and concurrency is None and fetch is None
        if split:
            batch = -(-batch // processes)
        self.fetch = fetch or (batch if concurrency is None else min(batch, concurrency))
        if not 1 <= self.fetch <= MAX_FETCH:
            raise ValueError(f"fetch must be 1..{MAX_FETCH}, got {self.fetch}")
        if max_jobs is not None and max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {max_jobs}")
        self.max_jobs = max_jobs
        self._claimed = 0  # jobs started, counted against max_jobs
        if max_jobs is not None:
            self.fetch = min(self.fetch, max_jobs)  # never lease more than the slice it may work
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        # The host's rules per queue. With an explicit -c, each queue fetches again once its
        # in-flight work drops to -c, so one batch waits while -c jobs run, and -c (plus that
        # batch) caps all queues together.
        threshold = settings.threshold(batch_size=self.fetch) if concurrency is None else concurrency
        if split and settings.new_batch_threshold is not None:
            threshold = -(-threshold // processes)  # an explicit newBatchThreshold is the instance's too
        limits = QueueLimits(self.fetch, threshold)
        self.concurrency = concurrency or limits.most * len(self.queues)
        self.max_in_flight = self.concurrency if concurrency is None else concurrency + self.fetch
        self.threshold = threshold
        self.weights, limits, self.max_in_flight, self._ready = weigh(weights, self.queues, limits, self.max_in_flight)
        self.inflight = InFlight({name: limits for name in self.queues}, self.max_in_flight)
        if lease <= 0:
            raise ValueError(f"lease must be positive, got {lease}")
        if interval < 0:
            raise ValueError(f"interval must be zero or more, got {interval}")
        if grace < 0:
            raise ValueError(f"grace must be zero or more, got {grace}")
        if timeout is True:
            timeout = settings.function_timeout
        self.timeout_s = _seconds(timeout) if timeout not in (False, 0) else None
        if self.timeout_s is not None and self.timeout_s <= 0:
            self.timeout_s = None
        self.receivers = RECEIVERS
        self.keeper = LeaseKeeper(lease)
        self.lease_s = self.keeper.lease_s
        self.interval = interval
        self.burst = burst
        self.grace = grace
        # Burst mode gives up when storage stays unreachable this long (None: never).
        self.burst_timeout = burst_timeout
        # Where the storage is, for the lines a user reads (never a secret); ``origin`` says where the
        # connection setting came from (the CLI knows: environment, local.settings.json, the default).
        self.target = storage_target(self.client.connection, origin)
        self._reported: set[str] = set()  # storage problems logged in full, once per episode
        self._start_failed = False
        self.stats = WorkerStats(per_queue={name: 0 for name in self.queues})

        self._cond = threading.Condition()
        self._running = 0
        self._active: dict[int, Delivery] = {}  # deliveries whose job is running
        self._stopping = threading.Event()
        self._forced = threading.Event()
        self._deadline: float | None = None
        self._stats_lock = threading.Lock()
        self._settler = Settler(DELETE_THREADS, on_delete_failed=lambda: self._count("delete_failed"),
                                on_credentials_rejected=self._credentials_failed)
        self.settlement = Settlement(executor=self.executor, keeper=self.keeper, settler=self._settler,
                                     count=self._count, forced=self._forced.is_set)
        self._queue_clients: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._fetchers: list[threading.Thread] = []
        self._watchdog = None if self.timeout_s is None else Watchdog(self.timeout_s, self._timed_out)
        self._thread_seq = 0
        # A summary line every stats_interval seconds (--stats-interval; None or 0: off).
        self._summary = Summary(stats_interval, self._summary_snapshot) if stats_interval else None
        # Periodic jobs on these queues are fired by this worker too (azjobs.schedules); --no-schedules: not.
        self.schedules = schedules and not burst
        self._scheduler: Any = None
        if self.schedules:  # built now: a schedule that cannot be read (an unset %Setting%) fails here, clearly
            from ..schedules.scheduler import prepare_for

            self._scheduler = prepare_for(self)
        # The workflows queue this worker also works (azjobs/workflows/driver.py), or None.
        self.workflows = workflows
        self._heartbeat: Heartbeat | None = None
        if heartbeat:
            self._heartbeat = Heartbeat(heartbeat, heartbeat_interval, self._probe_storage, self._heartbeat_snapshot)

    # -- public ------------------------------------------------------------
    def run(self) -> WorkerStats:
        """Work until stopped (or drained, in burst mode); returns what was done."""
        service = _worker_queue_service(
            self.client, pool=max(8, len(self.queues) * self.receivers + DELETE_THREADS + 12))
        self._queue_clients = {name: service.get_queue_client(name) for name in self.queues}
        try:
            self._check_queues()
            if self._stopping.is_set():
                return self.stats
            self._start()
            self._wait()
        finally:
            self._shutdown()
            try:
                service.close()
            except Exception:  # pragma: no cover - closing is best effort
                pass
        return self.stats

    def stop(self, force: bool = False) -> None:
        """Stop fetching and finish running jobs within the grace period; ``force`` stops at once.

        Thread-safe; what SIGTERM/SIGINT do in the ``azjobs`` command.
        """
        with self._cond:
            if not self._stopping.is_set():
                self._deadline = time.monotonic() + self.grace
                self._settler.give_up_at(self._deadline)
                self._stopping.set()
                self.inflight.close()
                log.info("stopping: no more fetching; waiting up to %ss for running jobs", self.grace,
                         extra={"action": "worker_stopping", "grace_s": self.grace})
            elif force or time.monotonic() >= (self._deadline or 0):
                force = True
            if force and not self._forced.is_set():
                self._forced.set()
                log.warning("forced stop: running jobs are abandoned; their messages reappear when the lease ends",
                            extra={"action": "worker_forced_stop"})
            self._cond.notify_all()


    def _start(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.storage_answered()  # _check_queues just read every queue's properties
            self._heartbeat.start()
        if self._scheduler is not None:
            self._scheduler.start()
        self.keeper.start()
        self._settler.start()
        loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(target=self._run_loop, args=(loop,), name="azjobs-async", daemon=True)
        loop_thread.start()
        self._loop = loop
        self._threads.append(loop_thread)
        for _ in range(self.concurrency):
            self._start_job_thread()
        if self._watchdog is not None:
            self._watchdog.start()
        if self._summary is not None:
            self._summary.start()
        if self.workflows:
            self._start_workflows()
        for name in self.queues:
            busy = threading.Event()
            lead = threading.Thread(target=self._fetch_loop, args=(name, busy), name=f"azjobs-fetch-{name}",
                                    daemon=True)
            lead.start()
            self._fetchers.append(lead)
            for index in range(1, self.receivers):
                helper = threading.Thread(target=self._help_fetch, args=(name, busy, lead),
                                          name=f"azjobs-fetch-{name}-{index}", daemon=True)
                helper.start()
                self._threads.append(helper)
        timeout, target = "none" if self.timeout_s is None else f"{self.timeout_s:g}s", self.target
        log.info("worker started on %s of %s, connection from %s: concurrency %d, fetch %d, lease %ss, job timeout %s, "
                 "max polling interval %.1fs%s%s%s", ", ".join(self.queues), target.where, target.origin,
                 self.concurrency, self.fetch, self.lease_s, timeout,
                 self.settings.max_polling_interval.total_seconds(), " (burst)" if self.burst else "",
                 f" (the instance's batch limits shared by {self.processes} processes)" if self.processes > 1 else "",
                 "" if self.burst else self.settings.idle_polling_note(),
                 extra={"action": "worker_started", "queues": ",".join(self.queues), "concurrency": self.concurrency,
                        "fetch": self.fetch, "lease_s": self.lease_s, "burst": self.burst, "processes": self.processes,
                        "timeout_s": self.timeout_s, "account": target.account, "endpoint": target.endpoint,
                        "connection": target.origin})

    def _start_workflows(self) -> None:
        from ..workflows.driver import WorkflowRunner

        runner = WorkflowRunner(self.client, self.workflows, self._stopping, lease_s=max(int(self.lease_s), 10),
                                max_dequeue_count=self.settings.max_dequeue_count,
                                max_poll_s=self.settings.max_polling_interval.total_seconds())
        thread = threading.Thread(target=runner.run, name="azjobs-workflows", daemon=True)
        thread.start()
        self._threads.append(thread)


    def _wait(self) -> None:
        """Block until drained (burst), or stopped and settled, or forced."""
        with self._cond:
            while True:
                if self._forced.is_set():
                    break
                fetching = any(thread.is_alive() for thread in self._fetchers)
                if not fetching and len(self.inflight) == 0:
                    break
                if self._slice_done() and not self._stopping.is_set():
                    self.stop()  # nothing runs or waits any more: nothing for the grace period to wait for
                if self._stopping.is_set():
                    self._release_ready()
                    if self._deadline is not None and time.monotonic() >= self._deadline:
                        # A receive still under way (its SDK retrying through an outage) is not waited for.
                        if len(self.inflight):
                            log.warning("grace period over with %d job(s) still running", self._running,
                                        extra={"action": "grace_expired", "running": self._running})
                            self._cond.release()
                            try:
                                self._release_abandoned(SHUTDOWN_BUDGET_S)
                            finally:
                                self._cond.acquire()
                        break
                self._cond.wait(0.1)
            self.stats.abandoned = self._running
            self.stats.forced = self._forced.is_set()

    def _release_ready(self) -> None:
        """Release every fetched-but-unstarted message (visibility 0), so others take it now."""
        while True:
            try:
                delivery = self._ready.get_nowait()
            except queue_module.Empty:
                return
            if delivery is not None:
                self._cond.release()
                try:
                    self.settlement.release_unstarted(delivery, lambda d=delivery: self._done(d))
                finally:
                    self._cond.acquire()

    def _shutdown(self) -> None:
        self._stopping.set()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._scheduler is not None:
            self._scheduler.stop()
        self.inflight.close()
        forced = self._forced.is_set() or self.stats.abandoned > 0
        with self._cond:
            self._cond.notify_all()
        for _ in range(len(self._threads) + 1):
            self._ready.put(None)
        if not forced:
            # Within the grace period only: what is not deleted or released by then reappears when its lease ends.
            remaining = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
            self._settler.stop(wait=True, timeout=remaining)
        else:
            self._settler.stop(wait=False)
        # Stopped with a grace period: a thread still busy (inside a storage call) gets SHUTDOWN_BUDGET_S more,
        # and never past the grace plus that; the job state catch-up may use what is left of the grace too.
        until = None if self._deadline is None else min(time.monotonic(), self._deadline) + SHUTDOWN_BUDGET_S
        self.keeper.stop()
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._summary is not None:
            self._summary.stop()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if not forced:
            stuck = self._stuck_threads()
            for thread in self._threads:
                if thread not in stuck:
                    thread.join(timeout=5 if until is None else max(0.0, until - time.monotonic()))
        if self._start_failed:
            return  # it never started: the caller reports why, in one line
        self._close_hooks(None if self._deadline is None else self._deadline + SHUTDOWN_BUDGET_S)
        s = self.stats
        log.info("worker stopped: %d succeeded, %d retries scheduled, %d dead-lettered, %d deferred, %d skipped, "
                 "%d cancelled, %d redeliveries received (dequeue count > 1), %d released for redelivery, %d timed out, "
                 "%d released unstarted, %d abandoned", s.succeeded, s.retry_scheduled, s.dead_lettered, s.deferred,
                 s.skipped, s.cancelled, s.redeliveries, s.redelivered, s.timed_out, s.released, s.abandoned,
                 extra={"action": "worker_stopped", "succeeded": s.succeeded, "retry_scheduled": s.retry_scheduled,
                        "dead_lettered": s.dead_lettered, "deferred": s.deferred, "skipped": s.skipped, "cancelled": s.cancelled,
                        "throttled": s.throttled, "redeliveries": s.redeliveries, "redelivered": s.redelivered,
                        "timed_out": s.timed_out, "released": s.released, "abandoned": s.abandoned, "stuck": s.stuck, "forced": s.forced,
                        "restart_needed": s.restart_needed, "credentials_rejected": s.credentials_rejected,
                        "storage_gave_up": s.storage_gave_up})

    def _close_hooks(self, until: float | None) -> None:
        """Let the executor's hooks finish (job state writes the outcomes it kept during a Table outage); by
        ``until`` at the latest."""
        if until is None:
            self.executor.close()
            return
        thread = threading.Thread(target=self.executor.close, args=(until,), name="azjobs-state-flush", daemon=True)
        thread.start()
        thread.join(max(0.0, until - time.monotonic()))
        if thread.is_alive():
            log.warning("job state not caught up by the end of the grace period: some records may lag",
                        extra={"action": "state_flush_abandoned"})


    def _summary_snapshot(self) -> tuple[WorkerStats, int, int]:
        with self._stats_lock:
            stats = dataclasses.replace(self.stats)
        return stats, self._running, len(self.inflight)

    def _count(self, name: str) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)


def drain(client: Client, queues: list[str], *, executor: Executor | None = None, fetch: int = 16,
          lease_s: int = 30) -> int:
    """Work every visible message on ``queues`` until they are empty; returns messages handled.

    A thin wrapper over ``Worker(..., burst=True)``.
    """
    worker = Worker(queues, client=client, executor=executor, fetch=fetch, lease=lease_s, burst=True)
    return worker.run().handled
