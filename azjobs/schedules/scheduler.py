"""The worker's scheduler thread: fires the registered schedules, each tick once across workers.

One thread per worker process, started with the fetchers and stopped with them (SIGTERM
included). It wakes at each schedule's next tick (UTC unless ``WEBSITE_TIME_ZONE``), takes the
schedule's lease (azjobs/schedules/ticks.py) and, if the tick is not done yet, enqueues the
job with the tick in its envelope. At start-up it first looks for ticks that fired while no
worker ran and fires them once, past due, as the host's ``useMonitor`` does.

Log ``action`` keys: ``schedules_started``, ``schedule_fired``, ``schedule_past_due``,
``schedule_tick_taken`` (debug: another worker had the lease), ``schedule_lease_renewed``
(debug: firing outlasted half the lease), ``schedule_lease_lost`` (stopped firing: the lease
was lost or could not be renewed in time), ``schedule_failed``, ``schedule_behind``,
``schedules_stopped``.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Callable

from ..model.envelope import format_time
from ..model.secrets import get_logger
from .declarations import Periodic, time_zone
from .ticks import MAX_FIRES_PER_HOLD, Status, TickStore, decide, worker_identity

if TYPE_CHECKING:
    from ..storage.client import Client

log = get_logger("azjobs.schedules")

# A tick this recent at start-up is an ordinary tick (another worker may be firing it right now), not a
# missed one.
START_GRACE = timedelta(seconds=1)
# A worker this far behind a tick (a suspended machine, a stalled process) stops walking ticks one by one:
# it jumps to now, and whoever takes the next tick fires the missed ones once, past due.
BEHIND_LIMIT = timedelta(seconds=60)
# After a storage error, wait this long before trying the schedule again.
RETRY_AFTER = timedelta(seconds=5)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Scheduler:
    """Fires ``items`` until ``stop()``; ``start()`` runs it on a daemon thread."""

    def __init__(self, items: list[Periodic], client: "Client", *, store: TickStore | None = None,
                 clock: Callable[[], datetime] = _utcnow, zone: tzinfo | None = None,
                 max_fires: int = MAX_FIRES_PER_HOLD) -> None:
        self.items = list(items)
        self.max_fires = max_fires
        self.client = client
        self.store = store or TickStore(client.connection)
        self.clock = clock
        self.zone = zone if zone is not None else time_zone()
        self.expressions = {item.name: item.expression for item in self.items}  # %AppSetting% resolved now
        self.identity = worker_identity()
        self.fired = 0
        self.past_due = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> "Scheduler":
        self._thread = threading.Thread(target=self.run, name="azjobs-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop waking up; a tick being fired finishes (a send and a blob write) before the thread ends."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run(self) -> None:
        zone_name = getattr(self.zone, "key", None) or "UTC"
        log.info("scheduler started: %d schedule(s) (%s), time zone %s", len(self.items),
                 ", ".join(f"{item.name} '{self.expressions[item.name].text}'" for item in self.items), zone_name,
                 extra={"action": "schedules_started", "schedules": len(self.items), "time_zone": zone_name})
        try:
            self._loop()
        except Exception:  # a bug here must not take the worker down with it
            log.exception("scheduler crashed", extra={"action": "schedule_failed"})
        finally:
            self.store.close()
            log.info("scheduler stopped: %d tick(s) fired, %d past due", self.fired, self.past_due,
                     extra={"action": "schedules_stopped", "fired": self.fired, "past_due": self.past_due})

    # -- the loop -----------------------------------------------------------------
    def _loop(self) -> None:
        start = self.clock() - START_GRACE
        pending = {item.name: item for item in self.items}
        for item in self.items:
            if self._stop.is_set():
                return
            if self._attempt(item, None, start):
                pending.pop(item.name)
        retry_at: dict[str, datetime] = {}
        upcoming = {item.name: self.expressions[item.name].next_after(start, self.zone) for item in self.items}
        while not self._stop.is_set():
            now = self.clock()
            for name, when in list(retry_at.items()):  # start-up checks that failed on a storage error
                if when <= now and pending.get(name) is not None:
                    if self._attempt(pending[name], None, start):
                        pending.pop(name)
                        retry_at.pop(name)
                    else:
                        retry_at[name] = now + RETRY_AFTER
            for name in list(pending):
                retry_at.setdefault(name, now + RETRY_AFTER)
            due = [(tick, name) for name, tick in upcoming.items() if tick is not None and tick <= now]
            for tick, name in sorted(due):
                if self._stop.is_set():
                    return
                item = next(i for i in self.items if i.name == name)
                if now - tick > BEHIND_LIMIT:
                    log.warning("schedule %s is %.0fs behind its tick %s: skipping to now; the ticks in between "
                                "are fired once, past due, with the next one", name, (now - tick).total_seconds(),
                                format_time(tick), extra={"action": "schedule_behind", "schedule": name})
                    tick = self.expressions[name].previous_at_or_before(now, self.zone) or tick
                self._attempt(item, tick, now)
                upcoming[name] = self.expressions[name].next_after(tick, self.zone)
            waits = [tick for tick in upcoming.values() if tick is not None] + list(retry_at.values())
            if not waits:
                self._stop.wait(60)
                continue
            delay = (min(waits) - self.clock()).total_seconds()
            if delay > 0:
                self._stop.wait(min(delay, 60.0))

    def _attempt(self, item: Periodic, tick: datetime | None, now: datetime) -> bool:
        """Take the lease and do what ``decide`` says; False after a storage error (logged).

        At most ``max_fires`` ticks are fired per hold of the lease: then the cursor is recorded and
        the lease taken again for the rest (decided again, with the same ``now``).
        """
        try:
            while self._hold(item, tick, now) and not self._stop.is_set():
                pass
            return True
        except Exception as exc:
            from ..execution.recorder import describe

            log.error("schedule %s: tick %s not handled: %s", item.name, format_time(tick or now), describe(exc),
                      extra={"action": "schedule_failed", "schedule": item.name})
            return False

    def _hold(self, item: Periodic, tick: datetime | None, now: datetime) -> bool:
        """One hold of the schedule's lease; True when ticks are left for another one."""
        expression = self.expressions[item.name]
        with self.store.lease(item.name) as hold:
            if hold is None:
                log.debug("tick %s of %s: another worker holds the lease", format_time(tick or now), item.name,
                          extra={"action": "schedule_tick_taken", "schedule": item.name})
                return False
            status = self.store.read(item.name)
            decision = decide(status, expression, self.zone, tick=tick, now=now)
            if decision.nothing:
                return False
            fires = decision.fires[:self.max_fires]
            last = status.last if status is not None else None
            cursor = decision.cursor if not fires else None
            sent = []
            try:
                for fire in fires:
                    if not hold.held:  # the lease was lost, or may have run out: another worker may be firing
                        log.warning("schedule %s: stopped firing after %d of %d tick(s): its lease was lost or could "
                                    "not be renewed in time; the rest are left to the worker that holds it next",
                                    item.name, len(sent), len(fires),
                                    extra={"action": "schedule_lease_lost", "schedule": item.name})
                        break
                    envelope = item.fire(fire.tick, past_due=fire.past_due, client=self.client)
                    last = {"tick": format_time(fire.tick), "fired_at": format_time(self.clock()),
                            "job_id": envelope.id, "past_due": fire.past_due, "by": self.identity}
                    sent.append((fire, envelope.id))
                    cursor = fire.cursor
                if cursor is not None and not hold.lost:  # the service refuses the write if the lease is gone
                    self.store.write(item.name, Status(schedule=expression.text, cursor=cursor, last=last),
                                     hold.lease)
            finally:
                for fire, job_id in sent:  # said once the status holds them (or the write failed)
                    self._fired(item, fire, job_id)
            return len(sent) == len(fires) < len(decision.fires)

    def _fired(self, item: Periodic, fire, job_id: str) -> None:
        self.fired += 1
        if fire.past_due:
            self.past_due += 1
            if fire.missed > 1:
                text = (f"{fire.missed} ticks from {format_time(fire.tick)} were not fired in time (no worker ran, or "
                        "the one firing them stopped); fired once, past due,")
            else:
                text = f"tick {format_time(fire.tick)} fired late, past due,"
            log.warning("schedule %s: %s as job %s %s", item.name, text, item.job.name, job_id,
                        extra={"action": "schedule_past_due", "schedule": item.name, "job": item.job.name,
                               "job_id": job_id, "tick": format_time(fire.tick), "missed": fire.missed,
                               "past_due": True})
        else:
            log.info("schedule %s: tick %s enqueued job %s %s", item.name, format_time(fire.tick), item.job.name,
                     job_id, extra={"action": "schedule_fired", "schedule": item.name, "job": item.job.name,
                                    "job_id": job_id, "tick": format_time(fire.tick), "past_due": False})


__all__ = ["Scheduler", "prepare_for"]


def prepare_for(worker) -> Scheduler | None:
    """The scheduler for a ``Worker`` (not started): the periodic jobs on its queues, or None when there are none.

    Raises ConfigurationError for a schedule that cannot be read (an unset ``%Setting%``) or an unknown
    ``WEBSITE_TIME_ZONE``.
    """
    from .declarations import schedules

    items = schedules.for_queues(worker.executor.registry, worker.queues)
    if not items:
        return None
    return Scheduler(items, worker.client)
