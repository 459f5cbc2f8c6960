"""The state writer: the writes of concurrent jobs, gathered into one transaction per partition.

Each job thread calls ``write()`` and waits for its own answer, as it would for a single
call: the job's RUNNING write still lands before it runs and its SUCCESSFUL write before its
message is deleted. What changes is the request: two writer threads each take every write
waiting for one partition (up to 100, one per entity) and send them as one entity group
transaction (``azjobs.state.batch``). Nothing waits on purpose: a write that finds a writer
thread free is sent at once, alone; writes pile up only while transactions are in flight, so
the busier the store, the larger (and cheaper per write) each transaction. One transaction per partition is in flight at a time, so a job's writes are
applied in the order it made them.

A write the service refuses (412: the ETag no longer matches; 404) is answered with that
error and the rest of its transaction is sent again without it. A transaction that fails as
a whole (the store unreachable) answers each of its writes with that error.

A transaction's body stays under ``MAX_BYTES`` (the service refuses 4 MiB or more; Azurite does
not): writes that would take it past that wait for the next one. A transaction the service
still refuses whole (413 too large, or a 400 that names no write) is split in two and each half
sent, down to single writes, so only a write at fault is refused.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Sequence

from .batch import MAX_BYTES, MAX_WRITES, RETRY, Write
from .errors import StateUnavailable

THREADS = 2
WAIT_S = 60.0  # longer than the table client's own timeouts and retries


class _Pending:
    __slots__ = ("write", "done", "answer", "since")

    def __init__(self, write: Write) -> None:
        self.write = write
        self.since = time.monotonic()
        self.done = threading.Event()
        self.answer: Any = None


class StateWriter:
    """Coalesces ``write()`` calls from many threads into transactions sent by ``send``."""

    def __init__(self, send: Callable[[Sequence[Write]], list[Any]], *, threads: int = THREADS,
                 max_writes: int = MAX_WRITES, max_bytes: int = MAX_BYTES, wait_s: float = WAIT_S,
                 name: str = "azjobs-state-writer") -> None:
        if threads < 1 or not 1 <= max_writes <= MAX_WRITES or not 1 <= max_bytes <= MAX_BYTES:
            raise ValueError(f"threads must be at least 1, max_writes 1..{MAX_WRITES} and max_bytes 1..{MAX_BYTES}")
        self._send = send
        self._threads_wanted = threads
        self._max = max_writes
        self._max_bytes = max_bytes
        self._wait_s = wait_s
        self._name = name
        self._pending: dict[str, deque[_Pending]] = {}
        self._busy: set[str] = set()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.transactions = 0  # transactions sent (or tried), for the benchmarks and tests
        self.writes = 0  # writes the service applied
        self.splits = 0  # transactions the service refused as too large (413), sent again in halves

    def write(self, write: Write) -> str | None:
        """Apply ``write``; its new ETag. Raises the service's error for it (or ``StateUnavailable``)."""
        write.size  # noqa: B018 - encoded here, in the job's thread, not under the writer's lock
        pending = _Pending(write)
        partition = write.key[0]
        with self._cond:
            if self._closed:
                raise StateUnavailable("the state writer is closed")
            self._pending.setdefault(partition, deque()).append(pending)
            self._start_threads()
            self._cond.notify()
        if not pending.done.wait(self._wait_s):
            raise StateUnavailable(f"no answer from the state table within {self._wait_s:.0f} s")
        if isinstance(pending.answer, BaseException):
            raise pending.answer
        return pending.answer

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _start_threads(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self._threads_wanted:
            thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _take(self) -> tuple[str, list[_Pending]] | None:
        """Under the lock: the partition not in flight whose first write waited longest, and its writes."""
        best, oldest = None, 0.0
        for partition, queue in self._pending.items():
            if queue and partition not in self._busy and (best is None or queue[0].since < oldest):
                best, oldest = partition, queue[0].since
        if best is None:
            return None
        queue = self._pending[best]
        taken: list[_Pending] = []
        rows: set[str] = set()
        kept: deque[_Pending] = deque()
        used = 0
        while queue and len(taken) < self._max:
            item = queue.popleft()
            row = item.write.key[1]
            if row in rows:
                kept.append(item)  # an entity may appear once in a transaction: the next one takes it
            elif taken and used + item.write.size > self._max_bytes:
                kept.append(item)  # the body would reach the service's limit: the next transaction takes it
                break
            else:
                rows.add(row)
                used += item.write.size
                taken.append(item)
        queue.extendleft(reversed(kept))
        if not queue:
            del self._pending[best]
        self._busy.add(best)
        return best, taken

    def _loop(self) -> None:
        while True:
            with self._cond:
                got = self._take()
                while got is None:
                    if self._closed and not self._pending:
                        return
                    self._cond.wait(timeout=1.0)
                    got = self._take()
            partition, taken = got
            again: list[_Pending] = []
            applied = 0
            sent = 0
            try:
                parts = [taken]
                while parts:
                    part = parts.pop()
                    sent += 1
                    try:
                        answers = self._send([item.write for item in part])
                    except Exception as exc:
                        if not self._split(exc, part):
                            if part is taken:
                                raise
                            for item in part:  # a part of a split transaction: its own answer only
                                item.answer = exc
                                item.done.set()
                            continue
                        half = (len(part) + 1) // 2
                        parts.extend([part[half:], part[:half]])  # the first half goes next
                        with self._cond:
                            self.splits += 1
                        continue
                    if len(answers) != len(part):
                        raise StateUnavailable(f"{len(answers)} answers to a transaction of {len(part)} writes")
                    for item, answer in zip(part, answers):
                        if answer is RETRY:
                            again.append(item)
                        else:
                            applied += 0 if isinstance(answer, BaseException) else 1
                            item.answer = answer
                            item.done.set()
            except BaseException as exc:  # noqa: BLE001 - every waiting job gets the reason
                again = []
                for item in taken:
                    if not item.done.is_set():
                        item.answer = exc if isinstance(exc, Exception) else StateUnavailable(repr(exc))
                        item.done.set()
                if not isinstance(exc, Exception):
                    raise
            finally:
                with self._cond:
                    self.transactions += sent
                    self.writes += applied
                    if again:
                        self._pending.setdefault(partition, deque()).extendleft(reversed(again))
                    self._busy.discard(partition)
                    self._cond.notify_all()

    def _split(self, exc: BaseException, part: list[_Pending]) -> bool:
        """True when the service refused ``part`` whole, as too large (413) or as a bad request without
        naming the write (400), and it can be sent in halves: the writes not at fault then land, and a
        write at fault gets its own answer."""
        if len(part) < 2:
            return False
        return any(getattr(error, "status_code", None) in (400, 413) for error in (exc, exc.__cause__)
                   if error is not None)


__all__ = ["StateWriter"]
