"""Which ticks have fired: a blob per schedule, leased while one worker fires a tick.

The Functions host lets one instance fire each timer tick by holding a blob lease in the
app's storage account, and with ``useMonitor`` keeps the schedule's status (last and next
occurrence) in a blob, so a tick missed while no instance ran is fired once, past due, at
start-up. Workers do the same in container ``azjobs-schedules`` of the jobs' account: one blob
per schedule, named after it, whose lease is the lock and whose content is the status:

``{"azjobs_schedule": 1, "schedule": "<expression>", "cursor": "<time>", "last": {...}}``

``cursor`` is the tick identity: every tick at or before it has been handled. A worker
fires tick T only while it holds the lease and only if ``cursor < T``, then moves the cursor
to T before it lets go, so several workers fire each tick once and a worker that takes the
lease late finds the tick done. Ticks between the cursor and T that nobody fired are
fired before T, marked past due: each on its own when they are only late (under
``LATE_LIMIT``), else once together with the first of them as the tick (what the host's
schedule status calls ``Next``), as at start-up when no worker ran. ``last`` is the last fire (tick, when, job id, past due, by whom), for
``azjobs schedules``.

A worker that dies after sending a tick's message but before moving the cursor leaves the
tick to be fired again, past due, by the next worker: with the same job id.

The lease lasts LEASE_S; a worker holding it renews it in the background once half of it is
gone (``Hold``), for as long as it fires: a send held up by the network, or ticks that take
long to fire, never let the lease run out under it, so no second worker takes the lease and
fires the same ticks. A renewal that is refused (the lease was lost) or that does not get
through before the lease could have run out stops the worker firing: it fires a tick only
while at least MIN_LEFT_S of its lease is confirmed. It moves the cursor after at most
MAX_FIRES_PER_HOLD fires and takes the lease again for the rest, so a worker that dies while
firing leaves at most that many ticks to be fired again.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Iterator

from ..model.envelope import format_time, parse_time
from ..model.secrets import get_logger
from .ncrontab import Expression

if TYPE_CHECKING:
    from ..storage.connection import Connection

log = get_logger("azjobs.schedules")

CONTAINER = "azjobs-schedules"
STATUS_KEY = "azjobs_schedule"
STATUS_VERSION = 1
LEASE_S = 15  # the service's shortest lease: a dead holder blocks its schedule this long at most
RENEW_AFTER_S = LEASE_S / 2  # a held lease is renewed once half of it is gone
MIN_LEFT_S = 5.0  # a tick is fired only while at least this much of the lease is confirmed
RENEW_RETRY_S = 1.0  # after a renewal that failed without an answer (a network error, a 5xx)
# Fires per hold of the lease: then the cursor is recorded and the lease taken again for the rest.
MAX_FIRES_PER_HOLD = 10
# How many missed ticks are counted for the log line (the count says "at least" beyond it).
MAX_COUNTED = 1000
# A tick overdue by less than this when a worker holding the lease finds it unfired was only late: it fires on
# its own (past due). Older ones were missed and fire once together.
LATE_LIMIT = timedelta(seconds=10)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Status:
    """What the schedule's blob says."""

    schedule: str
    cursor: datetime
    last: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps({STATUS_KEY: STATUS_VERSION, "schedule": self.schedule, "cursor": format_time(self.cursor),
                           "last": self.last}, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: bytes | str) -> "Status | None":
        """The status, or None for an empty blob or one this azjobs cannot read (treated as no history)."""
        try:
            raw = json.loads(data or b"null")
            if not isinstance(raw, dict) or raw.get(STATUS_KEY) != STATUS_VERSION:
                return None
            last = raw.get("last")
            return cls(schedule=str(raw["schedule"]), cursor=parse_time(raw["cursor"]),
                       last=last if isinstance(last, dict) else None)
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Fire:
    tick: datetime
    past_due: bool = False
    missed: int = 0  # for a past-due fire: how many ticks it stands for
    # The cursor once this fire is sent: its tick, or the last of the missed ticks it stands for.
    through: datetime | None = field(default=None, compare=False)

    @property
    def cursor(self) -> datetime:
        return self.through or self.tick


@dataclass
class Decision:
    """What to do with a tick while holding the lease: fire these, then move the cursor there."""

    fires: list[Fire] = field(default_factory=list)
    cursor: datetime | None = None  # None: leave the status as it is

    @property
    def nothing(self) -> bool:
        return not self.fires and self.cursor is None


def _missed(expression: Expression, zone: tzinfo, after: datetime,
            before: datetime) -> tuple[datetime | None, datetime | None, int]:
    """Ticks in (after, before): the first, the latest, and how many (counted up to MAX_COUNTED)."""
    first = expression.next_after(after, zone)
    if first is None or first >= before:
        return None, None, 0
    latest = expression.previous_at_or_before(before - timedelta(microseconds=1), zone) or first
    count, cursor = 0, after
    while count < MAX_COUNTED:
        nxt = expression.next_after(cursor, zone)
        if nxt is None or nxt > latest:
            break
        count, cursor = count + 1, nxt
    return first, latest, count


def decide(status: Status | None, expression: Expression, zone: tzinfo, *, tick: datetime | None = None,
           now: datetime, late_limit: timedelta = LATE_LIMIT) -> Decision:
    """The tick rules, for a worker holding the schedule's lease.

    ``tick`` is the tick the worker woke up for; None is the start-up check, which fires the
    ticks at or before ``now`` that nobody fired once, past due, as the host's ``useMonitor``
    does. With no status (or one for another expression) nothing is past due: the status
    starts now, as the host's does. Between the cursor and ``tick``, ticks less than
    ``late_limit`` old were only late (every worker stalled, or the one with the lease was
    slow): each fires on its own, marked past due. Older ones were missed (the worker holding
    the lease died, and it stayed taken for up to LEASE_S): they fire once together.
    """
    if status is None or status.schedule != expression.text:
        if tick is None:
            return Decision(cursor=now)
        return Decision(fires=[Fire(tick)], cursor=tick)
    if tick is None:
        first, latest, count = _missed(expression, zone, status.cursor, now + timedelta(microseconds=1))
        if first is None:
            return Decision()
        return Decision(fires=[Fire(first, past_due=True, missed=count, through=latest)], cursor=latest)
    if status.cursor >= tick:
        return Decision()  # already fired: this worker took the lease late
    fires = []
    cursor = status.cursor
    first, latest, count = _missed(expression, zone, cursor, min(tick, now - late_limit))
    if first is not None:
        fires.append(Fire(first, past_due=True, missed=count, through=latest))
        cursor = latest
    while len(fires) < MAX_COUNTED:
        late = expression.next_after(cursor, zone)
        if late is None or late >= tick:
            break
        fires.append(Fire(late, past_due=True, missed=1, through=late))
        cursor = late
    fires.append(Fire(tick, through=tick))
    return Decision(fires=fires, cursor=tick)


class Hold:
    """A schedule's lease while this worker holds it, renewed in the background once half of it is gone.

    ``held`` says whether a tick may be fired now: the lease is not lost and at least MIN_LEFT_S of
    it is confirmed (acquired or renewed that recently). A renewal answered with 409/412/404 (the
    lease was broken, or taken by another worker after it ran out) loses it for good; one that
    failed without an answer is tried again every RENEW_RETRY_S until the lease could have run out.
    """

    def __init__(self, name: str, lease: Any, *, since: float | None = None, lease_s: float = LEASE_S,
                 renew_after_s: float = RENEW_AFTER_S, min_left_s: float = MIN_LEFT_S,
                 clock: Any = time.monotonic) -> None:
        self.name = name
        self.lease = lease
        self.lease_s = lease_s
        self.renew_after_s = renew_after_s
        self.min_left_s = min_left_s
        self.clock = clock
        self.renewals = 0
        self.lost = False
        # The lease runs until lease_s after this, at least: when it was asked for (``since``), or now.
        self._confirmed = clock() if since is None else since
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="azjobs-schedule-lease", daemon=True)
        self._thread.start()

    @property
    def held(self) -> bool:
        return not self.lost and self.clock() - self._confirmed <= self.lease_s - self.min_left_s

    def _keep(self) -> None:
        wait = self.renew_after_s
        while not self._done.wait(wait):
            asked = self.clock()
            try:
                self.lease.renew()
            except Exception as exc:  # noqa: BLE001 - every failure is a reason to stop or retry, never to crash
                if self._done.is_set():
                    return  # released meanwhile: a renewal after the release is refused, and that is fine
                if getattr(exc, "status_code", None) in (404, 409, 412):
                    self.lost = True
                    log.warning("schedule %s: its lease was lost (%s); the ticks not fired yet are left to the worker "
                                "that holds it now", self.name, getattr(exc, "error_code", None) or exc.status_code,
                                extra={"action": "schedule_lease_lost", "schedule": self.name})
                    return
                left = self.lease_s - (self.clock() - self._confirmed)
                if left <= 0:
                    self.lost = True
                    log.warning("schedule %s: its lease could not be renewed before it ran out (%s); stopped firing",
                                self.name, type(exc).__name__,
                                extra={"action": "schedule_lease_lost", "schedule": self.name})
                    return
                wait = min(RENEW_RETRY_S, left)
                continue
            self._confirmed = asked
            self.renewals += 1
            log.debug("schedule %s: lease renewed while firing", self.name,
                      extra={"action": "schedule_lease_renewed", "schedule": self.name})
            wait = self.renew_after_s

    def close(self) -> None:
        """Stop renewing (the caller releases the lease, or leaves it to run out). A renewal under way is not
        waited for long: whatever it answers no longer matters."""
        self._done.set()
        if self._thread is not threading.current_thread():
            self._thread.join(1.0)


class TickStore:
    """The schedules' blobs in one storage account. Thread-safe."""

    def __init__(self, connection: "Connection", container: str = CONTAINER) -> None:
        self.connection = connection
        self.container = container
        self._lock = threading.Lock()
        self._service: Any = None
        self._container: Any = None
        self._known: set[str] = set()

    def _client(self):
        with self._lock:
            if self._container is None:
                from ..storage.http import CONNECT_TIMEOUT_S
                from ..storage.payloads import _blob_retry

                self._service = self.connection.blob_service(retry_policy=_blob_retry(),
                                                             connection_timeout=CONNECT_TIMEOUT_S)
                self._container = self._service.get_container_client(self.container)
            return self._container

    def blob(self, name: str):
        return self._client().get_blob_client(name)

    def ensure(self, name: str) -> None:
        """Create the container and the schedule's (empty) blob if missing."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        if name in self._known:
            return
        blob = self.blob(name)
        for _ in range(2):
            try:
                blob.upload_blob(b"", overwrite=False)
                break
            except ResourceExistsError:
                break
            except ResourceNotFoundError:
                try:
                    self._client().create_container()
                except ResourceExistsError:
                    pass
            except Exception as exc:  # a leased blob answers 412 on overwrite=False with Azurite
                if getattr(exc, "status_code", None) in (409, 412):
                    break
                raise
        self._known.add(name)

    def read(self, name: str) -> Status | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return Status.from_json(self.blob(name).download_blob().readall())
        except ResourceNotFoundError:
            return None

    @contextmanager
    def lease(self, name: str) -> Iterator[Hold | None]:
        """Hold the schedule's lease, renewed while it is held (yields a ``Hold``), or yield None when another
        worker holds it."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        self.ensure(name)
        blob = self.blob(name)
        asked = time.monotonic()
        try:
            lease = blob.acquire_lease(lease_duration=LEASE_S)
        except ResourceNotFoundError:
            self._known.discard(name)
            self.ensure(name)
            asked = time.monotonic()
            lease = blob.acquire_lease(lease_duration=LEASE_S)
        except HttpResponseError as exc:
            if exc.status_code == 409:  # LeaseAlreadyPresent: another worker has this tick
                yield None
                return
            raise
        hold = Hold(name, lease, since=asked)
        try:
            yield hold
        finally:
            hold.close()
            if not hold.lost:
                try:
                    lease.release()
                except Exception:  # it ends by itself within LEASE_S
                    pass

    def write(self, name: str, status: Status, lease: Any) -> None:
        self.blob(name).upload_blob(status.to_json().encode("utf-8"), overwrite=True, lease=lease)

    def close(self) -> None:
        with self._lock:
            if self._service is not None:
                try:
                    self._service.close()
                except Exception:
                    pass
            self._service = self._container = None


__all__ = ["CONTAINER", "Decision", "Fire", "Hold", "LEASE_S", "MAX_FIRES_PER_HOLD", "Status", "TickStore", "decide",
           "worker_identity"]
