"""What the dashboard reads from storage: the account's job queues, their depths, and poison queues.

Reading never changes anything: depths come from queue properties and poison messages
are peeked (the service shows at most 32 at a time), never received. Requeue and purge
go through ``azjobs.cli.poison.PoisonQueue``, the same code as ``azjobs poison``.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

from ..poison.queue import PAGE, PoisonMessage, PoisonQueue, ReplayReport
from ..errors import ConfigurationError
from ..model.queue_names import POISON_SUFFIX, validate_queue_name
from ..limits.report import throttled_by_queue
from ..limits.table import table_for
from ..model.secrets import get_logger
from ..storage.client import Client
from ..storage.errors import storage_error_text

log = get_logger("azjobs.dashboard")


@dataclass(frozen=True)
class QueueDepth:
    """One job queue as sampled: approximate depth of the queue and of its poison twin."""

    name: str
    depth: int | None  # None: the queue does not exist (only its poison twin does)
    poison_depth: int | None  # None: no poison queue (nothing has been dead-lettered yet)
    sampled_at: float


class StorageReader:
    """Reads queues for the dashboard; ``queues`` limits it to those job queues (else every queue)."""

    def __init__(self, client: Client, queues: Iterable[str] | None = None) -> None:
        self.client = client
        self.queues = tuple(validate_queue_name(q) for q in queues) if queues else None

    def allowed(self, queue: str) -> str:
        """``queue`` if the dashboard may show it; ConfigurationError otherwise (a 404 for the page)."""
        name = validate_queue_name(queue)
        if self.queues is not None and name not in self.queues:
            raise ConfigurationError(f"queue {name!r} is not shown by this dashboard")
        return name

    def job_queues(self) -> list[str]:
        """The job queues: the configured ones, else every queue in the account without a ``-poison`` suffix
        (plus the job queue of a poison queue whose job queue is gone)."""
        if self.queues is not None:
            return list(self.queues)
        names = sorted(q.name for q in self.client.service().list_queues())
        jobs = {n for n in names if not n.endswith(POISON_SUFFIX)}
        jobs.update(n[: -len(POISON_SUFFIX)] for n in names if n.endswith(POISON_SUFFIX) and len(n) > len(POISON_SUFFIX))
        return sorted(jobs)

    def _count(self, name: str) -> int | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return int(self.client.queue(name).get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return None

    def depths(self) -> list[QueueDepth]:
        """Every job queue with its depth and poison depth (two property reads each, in parallel)."""
        names = self.job_queues()
        now = time.time()
        if not names:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            counts = list(pool.map(lambda n: (self._count(n), self._count(n + POISON_SUFFIX)), names))
        return [QueueDepth(name, depth, poison, now) for name, (depth, poison) in zip(names, counts)]

    def throttled(self, minutes: int = 5) -> dict[str, int] | None:
        """Deliveries a limit sent on in the last ``minutes``, per queue (azjobs.limits); None if unreadable."""
        try:
            table = table_for(self.client)
            return None if table is None else throttled_by_queue(table, datetime.now(timezone.utc), minutes)
        except Exception as exc:  # the page still shows the queues
            log.debug("limits table not read: %s", exc, extra={"action": "dashboard_limits_unread"})
            return None

    def depth(self, queue: str) -> QueueDepth:
        name = self.allowed(queue)
        return QueueDepth(name, self._count(name), self._count(name + POISON_SUFFIX), time.time())

    def poison(self, queue: str) -> PoisonQueue:
        return PoisonQueue(self.client, self.allowed(queue))

    def poison_messages(self, queue: str) -> list[PoisonMessage]:
        """The first poison messages (at most 32), peeked."""
        return self.poison(queue).peek(PAGE)

    def poison_message(self, queue: str, wanted: str) -> PoisonMessage | None:
        """The peeked poison message with any of a job's ids ``wanted``; None if not among the first 32."""
        for message in self.poison_messages(queue):
            if message.matches(wanted):
                return message
        return None

    def requeue(self, queue: str, ids: list[str] | None) -> ReplayReport:
        poison = self.poison(queue)
        report = poison.requeue(ids)
        log.info("dashboard requeued %d poison message(s) of %s (%d failed, %d not found)", len(report.requeued),
                 poison.queue, len(report.failed), len(report.not_found),
                 extra={"action": "dashboard_requeue", "queue": poison.queue, "count": len(report.requeued)})
        return report

    def purge(self, queue: str) -> int:
        poison = self.poison(queue)
        deleted = poison.purge()
        log.info("dashboard purged %d poison message(s) of %s", deleted, poison.queue,
                 extra={"action": "dashboard_purge", "queue": poison.queue, "count": deleted})
        return deleted

    def error_text(self, exc: BaseException) -> str:
        return storage_error_text(exc, self.client.connection)
