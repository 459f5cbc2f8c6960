"""The local runner: works queues off-cloud exactly as the Functions host would.

Shape of a ``Worker``:

- one fetch thread per queue, each with its own polling back-off and rate limit, receiving
  real batches (``messages_per_page``) whenever the messages in flight drop to the
  threshold (host.json ``newBatchThreshold``; with an explicit ``-c``, ``-c`` itself);
- ``concurrency`` job threads take fetched messages in order and hand each to the shared
  execution core (``Executor``). The coroutine of an ``async def`` job runs on one event-loop
  thread while its job thread waits for it, so one limit covers both kinds and a sync job
  never blocks the loop;
- a ``LeaseKeeper`` renews every held message at half its lease (no call at all for a job
  that finishes sooner), and a ``Settler`` deletes finished messages on a few threads with
  the newest pop receipt.

Failures are the core's business (retry copy or poison record written before the delete).
When the core raises ``Redeliver`` the message is released with host.json
``visibilityTimeout``, and poisoned as the host would once ``dequeueCount >= maxDequeueCount``.

``stop()`` (SIGTERM/SIGINT in the CLI) stops fetching, releases fetched-but-unstarted
messages at once, lets running jobs finish within ``grace`` seconds; ``stop(force=True)``
returns at once and leaves held messages to reappear when their lease ends.
"""

from __future__ import annotations

import asyncio
import logging
import queue as queue_module
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .client import Client, default_client, http_session
from .connection import redact
from .core import Executor, MessageInfo, Redeliver
from .errors import QueueNotFoundError
from .lease import Lease, LeaseKeeper
from .polling import PollingBackoff
from .settings import QueueSettings
from .settler import Settler

log = logging.getLogger("azjobs.worker")

MAX_FETCH = 32
DELETE_THREADS = 4


@dataclass
class WorkerStats:
    """What one ``Worker.run`` did, counted per outcome."""

    receives: int = 0  # receive calls made (empty ones included)
    fetched: int = 0
    succeeded: int = 0
    retry_scheduled: int = 0
    dead_lettered: int = 0
    deferred: int = 0
    redelivered: int = 0  # released for the host-style redelivery after the core raised Redeliver
    released: int = 0  # fetched but not started when the worker stopped; made visible at once
    lease_lost: int = 0  # another worker owns the message now; this worker did not delete it
    delete_failed: int = 0
    receive_errors: int = 0
    abandoned: int = 0  # still running when the grace period ended or a forced stop came
    peak_running: int = 0
    forced: bool = False
    per_queue: dict[str, int] = field(default_factory=dict)  # messages fetched per queue

    @property
    def handled(self) -> int:
        """Messages whose job (or settling) the core finished."""
        return self.succeeded + self.retry_scheduled + self.dead_lettered + self.deferred + self.redelivered


@dataclass
class _Delivery:
    queue: str
    queue_client: Any
    message: Any
    lease: Lease


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return redact(f"{type(exc).__name__}: {text}")


def _worker_queue_service(client: Client, pool: int):
    """A queue service for the worker's own calls: short SDK retries, since the worker backs off itself."""
    from azure.storage.queue import ExponentialRetry

    return client.connection.queue_service(
        session=http_session(pool), retry_policy=ExponentialRetry(initial_backoff=0.5, increment_base=2, retry_total=1),
        connection_timeout=5, read_timeout=30,
    )


class Worker:
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
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        self.queues = list(dict.fromkeys(queues))
        self.client = client or (executor.client if executor is not None else default_client())
        if settings is None:
            settings = (executor.settings if executor is not None else self.client.settings).for_development()
        self.settings = settings
        self.executor = executor or Executor(client=self.client, settings=settings)
        # -f defaults to host.json batchSize, but never more than an explicit -c: a worker told to run
        # 4 jobs at once does not hold 16 leases.
        self.fetch = fetch or (settings.batch_size if concurrency is None else min(settings.batch_size, concurrency))
        if not 1 <= self.fetch <= MAX_FETCH:
            raise ValueError(f"fetch must be 1..{MAX_FETCH}, got {self.fetch}")
        self.concurrency = concurrency or (self.fetch + settings.threshold())
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        # Fetch again when in-flight work drops to the threshold, as the host does: host.json
        # newBatchThreshold by default; with an explicit -c, -c itself, so one batch is always
        # fetched and waiting while -c jobs run (never more than -c run; waiting messages stay
        # leased and are released at once on stop).
        self.threshold = settings.threshold() if concurrency is None else self.concurrency
        self.max_in_flight = self.threshold + self.fetch
        if lease <= 0:
            raise ValueError(f"lease must be positive, got {lease}")
        if interval < 0:
            raise ValueError(f"interval must be zero or more, got {interval}")
        if grace < 0:
            raise ValueError(f"grace must be zero or more, got {grace}")
        self.keeper = LeaseKeeper(lease)
        self.lease_s = self.keeper.lease_s
        self.interval = interval
        self.burst = burst
        self.grace = grace
        self.stats = WorkerStats(per_queue={name: 0 for name in self.queues})

        self._cond = threading.Condition()
        self._in_flight = 0
        self._queue_in_flight = {name: 0 for name in self.queues}
        self._running = 0
        self._stopping = threading.Event()
        self._forced = threading.Event()
        self._deadline: float | None = None
        self._ready: "queue_module.Queue[_Delivery | None]" = queue_module.Queue()
        self._stats_lock = threading.Lock()
        self._settler = Settler(DELETE_THREADS, on_delete_failed=lambda: self._count("delete_failed"))
        self._queue_clients: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._fetchers: list[threading.Thread] = []

    # -- public ------------------------------------------------------------
    def run(self) -> WorkerStats:
        """Work until stopped (or drained, in burst mode); returns what was done."""
        service = _worker_queue_service(self.client, pool=max(8, len(self.queues) + DELETE_THREADS + 4))
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
                log.info("stopping: no more fetching; waiting up to %ss for running jobs", self.grace,
                         extra={"action": "worker_stopping", "grace_s": self.grace})
            elif force or time.monotonic() >= (self._deadline or 0):
                force = True
            if force and not self._forced.is_set():
                self._forced.set()
                log.warning("forced stop: running jobs are abandoned; their messages reappear when the lease ends",
                            extra={"action": "worker_forced_stop"})
            self._cond.notify_all()

    # -- start and stop ----------------------------------------------------
    def _check_queues(self) -> None:
        """Fail fast on a missing queue; wait out an unreachable storage account."""
        from azure.core.exceptions import ResourceNotFoundError

        for name, queue_client in self._queue_clients.items():
            backoff = PollingBackoff(self.settings.max_polling_interval)
            while not self._stopping.is_set():
                try:
                    queue_client.get_queue_properties()
                    break
                except ResourceNotFoundError:
                    raise QueueNotFoundError(name) from None
                except Exception as exc:
                    if getattr(exc, "status_code", None) == 404:
                        raise QueueNotFoundError(name) from None
                    delay = backoff.next_delay(False)
                    log.warning("cannot reach queue %s (%s); retrying in %.1fs", name, _describe(exc), delay,
                                extra={"action": "storage_unavailable", "queue": name})
                    self._stopping.wait(delay)

    def _start(self) -> None:
        self.keeper.start()
        self._settler.start()
        loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(target=self._run_loop, args=(loop,), name="azjobs-async", daemon=True)
        loop_thread.start()
        self._loop = loop
        self._threads.append(loop_thread)
        for index in range(self.concurrency):
            thread = threading.Thread(target=self._job_loop, name=f"azjobs-job-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        for name in self.queues:
            thread = threading.Thread(target=self._fetch_loop, args=(name,), name=f"azjobs-fetch-{name}",
                                      daemon=True)
            thread.start()
            self._fetchers.append(thread)
        log.info("worker started on %s: concurrency %d, fetch %d, lease %ss, max polling interval %.1fs%s",
                 ", ".join(self.queues), self.concurrency, self.fetch, self.lease_s,
                 self.settings.max_polling_interval.total_seconds(), " (burst)" if self.burst else "",
                 extra={"action": "worker_started", "queues": ",".join(self.queues), "concurrency": self.concurrency,
                        "fetch": self.fetch, "lease_s": self.lease_s, "burst": self.burst})

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def _wait(self) -> None:
        """Block until drained (burst), or stopped and settled, or forced."""
        with self._cond:
            while True:
                if self._forced.is_set():
                    break
                fetching = any(thread.is_alive() for thread in self._fetchers)
                if not fetching and self._in_flight == 0:
                    break
                if self._stopping.is_set():
                    self._release_ready()
                    if self._deadline is not None and time.monotonic() >= self._deadline and self._in_flight:
                        log.warning("grace period over with %d job(s) still running", self._running,
                                    extra={"action": "grace_expired", "running": self._running})
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
                    self._release_unstarted(delivery)
                finally:
                    self._cond.acquire()

    def _shutdown(self) -> None:
        self._stopping.set()
        forced = self._forced.is_set() or self.stats.abandoned > 0
        with self._cond:
            self._cond.notify_all()
        for _ in range(self.concurrency):
            self._ready.put(None)
        if not forced:
            # Within the grace period only: what is not deleted or released by then reappears when its lease ends.
            remaining = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
            self._settler.stop(wait=True, timeout=remaining)
        else:
            self._settler.stop(wait=False)
        self.keeper.stop()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if not forced:
            for thread in self._threads:
                thread.join(timeout=5)
        s = self.stats
        log.info("worker stopped: %d succeeded, %d retries scheduled, %d dead-lettered, %d deferred, %d redelivered, "
                 "%d released, %d abandoned", s.succeeded, s.retry_scheduled, s.dead_lettered, s.deferred,
                 s.redelivered, s.released, s.abandoned,
                 extra={"action": "worker_stopped", "succeeded": s.succeeded, "retry_scheduled": s.retry_scheduled,
                        "dead_lettered": s.dead_lettered, "deferred": s.deferred, "redelivered": s.redelivered,
                        "released": s.released, "abandoned": s.abandoned, "forced": s.forced})

    # -- fetching ----------------------------------------------------------
    def _fetch_loop(self, name: str) -> None:
        queue_client = self._queue_clients[name]
        backoff = PollingBackoff(self.settings.max_polling_interval)
        last_call = 0.0
        failing = False
        try:
            while not self._stopping.is_set():
                wanted = self._reserve(name)
                if wanted == 0:
                    break
                wait = self.interval - (time.monotonic() - last_call)
                if wait > 0 and self._stopping.wait(wait):
                    self._unreserve(name, wanted)
                    break
                last_call = time.monotonic()
                self._count("receives")
                try:
                    messages = self._receive(queue_client, wanted)
                except Exception as exc:
                    self._unreserve(name, wanted)
                    self._count("receive_errors")
                    delay = backoff.next_delay(False)
                    failing = True
                    log.warning("receiving from %s failed (%s); retrying in %.1fs", name, _describe(exc), delay,
                                extra={"action": "receive_failed", "queue": name, "delay_s": round(delay, 3)})
                    self._stopping.wait(delay)
                    continue
                if failing:
                    failing = False
                    log.info("queue %s is reachable again", name, extra={"action": "storage_recovered", "queue": name})
                self._unreserve(name, wanted - len(messages))
                if messages:
                    backoff.reset()
                    self._dispatch(name, queue_client, messages)
                    continue
                if self.burst:
                    if self._wait_queue_idle(name):
                        break  # empty, and nothing of this queue in flight could put work back
                    continue
                self._stopping.wait(backoff.next_delay(False))
        except Exception:  # a bug here must not leave the worker hanging
            log.exception("fetch loop for %s crashed", name, extra={"action": "fetch_loop_crashed", "queue": name})
        finally:
            with self._cond:
                self._cond.notify_all()

    def _receive(self, queue_client: Any, count: int) -> list[Any]:
        pages = queue_client.receive_messages(messages_per_page=count, max_messages=count,
                                              visibility_timeout=self.lease_s).by_page()
        try:
            return list(next(pages))
        except StopIteration:
            return []

    def _reserve(self, name: str) -> int:
        """Wait until in-flight work is at the threshold, then claim room for one batch (0: stopping)."""
        with self._cond:
            while self._in_flight > self.threshold:
                if self._stopping.is_set():
                    return 0
                self._cond.wait(0.5)
            if self._stopping.is_set():
                return 0
            wanted = min(self.fetch, self.max_in_flight - self._in_flight)
            self._in_flight += wanted
            self._queue_in_flight[name] += wanted
            return wanted

    def _unreserve(self, name: str, count: int) -> None:
        if count:
            with self._cond:
                self._in_flight -= count
                self._queue_in_flight[name] -= count
                self._cond.notify_all()

    def _wait_queue_idle(self, name: str) -> bool:
        """Burst mode: after an empty receive, True if nothing of ``name`` is in flight (else wait, False)."""
        with self._cond:
            if self._queue_in_flight[name] == 0:
                return True
            while self._queue_in_flight[name] and not self._stopping.is_set():
                self._cond.wait(0.5)
            return False

    def _dispatch(self, name: str, queue_client: Any, messages: list[Any]) -> None:
        with self._stats_lock:
            self.stats.fetched += len(messages)
            self.stats.per_queue[name] += len(messages)
        for message in messages:
            lease = self.keeper.track(name, queue_client, message.id, message.pop_receipt)
            self._ready.put(_Delivery(name, queue_client, message, lease))
        if self._stopping.is_set():
            with self._cond:
                self._cond.notify_all()  # the main thread releases them

    # -- running -----------------------------------------------------------
    def _job_loop(self) -> None:
        while True:
            delivery = self._ready.get()
            if delivery is None:
                return
            if self._stopping.is_set():
                self._release_unstarted(delivery)
                continue
            try:
                self._work(delivery)
            except Exception:  # never lose a job thread
                log.exception("unexpected error settling message %s", delivery.message.id,
                              extra={"action": "worker_error", "queue": delivery.queue})

    def _work(self, delivery: _Delivery) -> None:
        message = delivery.message
        info = MessageInfo(queue=delivery.queue, message_id=message.id, dequeue_count=message.dequeue_count or 1,
                           insertion_time=message.inserted_on, pop_receipt=message.pop_receipt)
        with self._cond:
            self._running += 1
            if self._running > self.stats.peak_running:
                self.stats.peak_running = self._running
        handed_off = False
        try:
            try:
                # async def jobs run on the worker's one event loop, under the same limit
                result = self.executor.execute(message.content, info, encoded=True, loop=self._loop)
            except Redeliver as exc:
                self._redeliver(delivery, info, exc)
            except Exception as exc:  # the core itself failed: the host would release the message too
                log.error("execution core failed on message %s of %s: %s", message.id, delivery.queue,
                          _describe(exc), exc_info=True,
                          extra={"action": "core_failed", "queue": delivery.queue, "message_id": message.id})
                self._redeliver(delivery, info, exc)
            else:
                self._count(result.outcome.value)
                # The message stays in flight until its delete was attempted, so fetching
                # never runs ahead of deleting (Azurite slows down with many invisible messages).
                handed_off = self._delete(delivery, on_done=lambda: self._done(delivery))
        finally:
            with self._cond:
                self._running -= 1
            if not handed_off:
                self._done(delivery)

    def _done(self, delivery: _Delivery) -> None:
        with self._cond:
            self._in_flight -= 1
            self._queue_in_flight[delivery.queue] -= 1
            self._cond.notify_all()

    # -- settling ----------------------------------------------------------
    def _delete(self, delivery: _Delivery, on_done: Callable[[], None] | None = None) -> bool:
        """Schedule the delete with the newest pop receipt; True if ``on_done`` will run once it was attempted."""
        receipt = self.keeper.close(delivery.lease)
        if receipt is None:
            self._lost(delivery, "delete")
            return False
        self._settler.delete(delivery.queue_client, delivery.queue, delivery.message.id, receipt, on_done)
        return on_done is not None

    def _lost(self, delivery: _Delivery, what: str) -> None:
        self._count("lease_lost")
        log.warning("%s of message %s on %s skipped: its lease was lost, another worker owns it now", what,
                    delivery.message.id, delivery.queue,
                    extra={"action": f"{what}_skipped", "queue": delivery.queue, "message_id": delivery.message.id})

    def _redeliver(self, delivery: _Delivery, info: MessageInfo, error: BaseException) -> None:
        """What the host does after a failed invocation: poison at maxDequeueCount, else release."""
        receipt = self.keeper.close(delivery.lease)
        if receipt is None:
            self._lost(delivery, "release")
            return
        if info.dequeue_count >= self.settings.max_dequeue_count:
            try:
                self.executor.dead_letter_redelivered(delivery.message.content, info, error, encoded=True)
            except Exception as exc:
                log.error("could not dead-letter message %s of %s (%s); releasing it", info.message_id, info.queue,
                          _describe(exc), extra={"action": "dead_letter_failed", "queue": info.queue,
                                                 "message_id": info.message_id})
            else:
                self._count("dead_lettered")
                self._settler.delete(delivery.queue_client, delivery.queue, delivery.message.id, receipt)
                return
        visibility = int(self.settings.visibility_timeout.total_seconds())
        self._settler.release(delivery.queue_client, delivery.queue, delivery.message.id, receipt, visibility)
        self._count("redelivered")
        log.info("message %s of %s released for redelivery in %ss (dequeue count %d of %d)", info.message_id,
                 info.queue, visibility, info.dequeue_count, self.settings.max_dequeue_count,
                 extra={"action": "message_redelivered", "queue": info.queue, "message_id": info.message_id,
                        "dequeue_count": info.dequeue_count, "delay_s": visibility})

    def _release_unstarted(self, delivery: _Delivery) -> None:
        try:
            receipt = self.keeper.close(delivery.lease)
            if receipt is not None and not self._forced.is_set():
                def released(delivery: _Delivery = delivery) -> None:
                    self._count("released")
                    log.debug("released unstarted message %s of %s", delivery.message.id, delivery.queue,
                              extra={"action": "message_released", "queue": delivery.queue,
                                     "message_id": delivery.message.id})

                # On the settler's threads, so a stop never waits on storage beyond its grace period.
                self._settler.release_later(delivery.queue_client, delivery.queue, delivery.message.id, receipt, 0,
                                            released)
        finally:
            self._done(delivery)

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
