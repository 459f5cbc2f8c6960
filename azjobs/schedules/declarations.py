"""Periodic jobs: a job, a schedule and the arguments each tick enqueues it with.

Declared with ``@azjobs.job(queue=..., schedule="0 */5 * * * *")`` (a list gives several
schedules) or ``azjobs.periodic(schedule, job, args=..., kwargs=...)``; a job class may set
``schedule = "..."``. Everything is checked when the declaration runs: the expression (field
count, ranges, a schedule that never fires) and the arguments (they must bind to the job's
signature and be JSON). A ``%AppSetting%`` schedule is read from the environment, as the
host does: checked at declaration when the setting is there, else when a worker or the
function app starts.

Each tick enqueues an ordinary job message, so retries, poison and state apply to scheduled
runs as to any other; the envelope carries the tick (``scheduled_at``) and ``past_due``. The
job id is derived from the schedule's name and the tick, so one tick always means one job id.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..errors import ConfigurationError
from ..model.envelope import Envelope, format_time
from ..model.queue_names import is_app_setting_expression
from .ncrontab import Expression, ScheduleError, parse

if TYPE_CHECKING:
    from ..model.definition import JobDefinition
    from ..model.registry import Registry
    from ..storage.client import Client

TIME_ZONE_SETTING = "WEBSITE_TIME_ZONE"
# The namespace of tick job ids: uuid5(namespace, "<schedule name>@<tick>").
TICK_NAMESPACE = uuid.UUID("5b0f6a53-2a55-4e4e-9d4b-6f0b3c9a7e21")


def time_zone(environ: Mapping[str, str] | None = None) -> tzinfo:
    """The schedules' time zone: ``WEBSITE_TIME_ZONE`` (an IANA name such as ``Europe/Paris``) or UTC."""
    env = os.environ if environ is None else environ
    name = (env.get(TIME_ZONE_SETTING) or "").strip()
    if not name or name.upper() in ("UTC", "ETC/UTC", "COORDINATED UNIVERSAL TIME"):
        return timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"{TIME_ZONE_SETTING}={name!r} is not a time zone this machine knows: give an IANA name such as "
            "'Europe/Paris' or 'America/New_York' (Windows names such as 'Eastern Standard Time' work only on "
            "Windows plans of the host)") from None


def resolve_schedule(text: str, environ: Mapping[str, str] | None = None) -> str:
    """A ``%AppSetting%`` schedule's expression from the environment (other text as it is)."""
    if not (isinstance(text, str) and is_app_setting_expression(text)):
        return text
    env = os.environ if environ is None else environ
    setting = text[1:-1]
    value = env.get(setting)
    if value is None or not value.strip():
        raise ConfigurationError(f"schedule {text} names app setting {setting!r}, which is not set; set it to an "
                                 f"NCRONTAB expression (export {setting}='0 */5 * * * *')")
    if is_app_setting_expression(value.strip()):
        raise ConfigurationError(f"app setting {setting!r} must hold an NCRONTAB expression, not another expression")
    return value.strip()


@dataclass
class Periodic:
    """One schedule of one job, with the arguments each tick enqueues it with."""

    name: str
    schedule: str  # as declared: an expression or a %AppSetting%
    job: "JobDefinition"
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    _parsed: Expression | None = field(default=None, repr=False, compare=False)

    @property
    def expression(self) -> Expression:
        """The parsed expression (a ``%AppSetting%`` read from the environment now)."""
        if self._parsed is not None and not is_app_setting_expression(self.schedule):
            return self._parsed
        try:
            return parse(resolve_schedule(self.schedule))
        except ScheduleError as exc:
            raise ScheduleError(f"{exc} (periodic job {self.name})") from None

    def tick_id(self, tick: datetime) -> str:
        """The job id of one tick: the same tick of the same schedule always gets the same id."""
        return str(uuid.uuid5(TICK_NAMESPACE, f"{self.name}@{format_time(tick)}"))

    def envelope(self, tick: datetime, *, past_due: bool = False, queue: str | None = None) -> Envelope:
        """The message one tick enqueues (the job's queue, ``%AppSetting%`` resolved now)."""
        from ..model.queue_names import resolve_queue_name

        return Envelope.build(self.job.name, self.args, dict(self.kwargs), id=self.tick_id(tick),
                              queue=queue or resolve_queue_name(self.job.queue),
                              scheduled_at=format_time(tick), past_due=past_due)

    def fire(self, tick: datetime, *, past_due: bool = False, client: "Client | None" = None) -> Envelope:
        """Enqueue the job for ``tick``; returns the envelope sent."""
        from ..storage.client import client_for
        from ..telemetry import tracing

        envelope = tracing.produced(self.envelope(tick, past_due=past_due))  # each tick starts a trace
        client_for(client).send(envelope)
        return envelope


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


class Schedules:
    """Every declared periodic job. A periodic job counts for a registry that holds its job."""

    def __init__(self) -> None:
        self._items: dict[str, Periodic] = {}
        self._lock = threading.Lock()

    def add(self, item: Periodic) -> Periodic:
        with self._lock:
            existing = self._items.get(item.name)
            if existing is not None and (existing.job.target_id, existing.schedule, existing.args,
                                         dict(existing.kwargs)) != (item.job.target_id, item.schedule, item.args,
                                                                    dict(item.kwargs)):
                raise ConfigurationError(
                    f"a periodic job named {item.name!r} is already declared ({existing.job.name} on "
                    f"{existing.schedule!r}); give this one another name=")
            self._items[item.name] = item
        return item

    def remove(self, name: str) -> None:
        with self._lock:
            self._items.pop(name, None)

    def for_registry(self, registry: "Registry") -> list[Periodic]:
        """The periodic jobs whose job is the one registered in ``registry``, by name."""
        out = []
        for item in list(self._items.values()):
            if item.job.name in registry and registry.get(item.job.name) is item.job:
                out.append(item)
        return sorted(out, key=lambda p: p.name)

    def for_queues(self, registry: "Registry", queues: Iterable[str]) -> list[Periodic]:
        """Those of ``for_registry`` whose job works one of ``queues`` (declared or resolved names)."""
        from ..model.queue_names import resolve_queue_name

        wanted = set(queues)
        out = []
        for item in self.for_registry(registry):
            names = {item.job.queue}
            try:
                names.add(resolve_queue_name(item.job.queue))
            except ConfigurationError:
                pass
            if names & wanted:
                out.append(item)
        return out

    def __iter__(self):
        return iter(sorted(self._items.values(), key=lambda p: p.name))

    def __len__(self) -> int:
        return len(self._items)


schedules = Schedules()


def _check_expression(schedule: object, where: str) -> Expression | None:
    """Parse now, or None for a ``%AppSetting%`` not set yet (checked when a worker or the app starts)."""
    if not isinstance(schedule, str) or not schedule.strip():
        raise ScheduleError(f"{where}: a schedule is an NCRONTAB string such as '0 */5 * * * *', got {schedule!r}")
    if is_app_setting_expression(schedule):
        setting = schedule[1:-1]
        if not setting or not setting.replace("_", "").replace(".", "").replace(":", "").isalnum():
            raise ScheduleError(f"{where}: {schedule!r} is not an app-setting name")
        if not os.environ.get(setting, "").strip():
            return None
        try:
            return parse(resolve_schedule(schedule))
        except ScheduleError as exc:
            raise ScheduleError(f"{where}: app setting {setting}: {exc}") from None
    try:
        return parse(schedule)
    except ScheduleError as exc:
        raise ScheduleError(f"{where}: {exc}") from None


def declare(definition: "JobDefinition", schedule: str, *, args: tuple = (), kwargs: Mapping[str, Any] | None = None,
            name: str | None = None, default_name: str | None = None) -> Periodic:
    """Check and record one periodic job (what the decorator's ``schedule=`` and ``periodic`` call)."""
    where = f"periodic job {name or default_name or definition.name}"
    parsed = _check_expression(schedule, where)
    args = tuple(args)
    kwargs = dict(kwargs or {})
    definition.check_arguments(args, kwargs)
    built = Envelope.build(definition.name, args, kwargs)  # JSON check, errors name the argument
    if name is not None and (not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name):
        raise ConfigurationError(f"{where}: name= must be a non-empty string without slashes, got {name!r}")
    label = name or default_name or f"{definition.name}:{_digest(schedule, built.args, built.kwargs)}"
    return schedules.add(Periodic(name=label, schedule=schedule, job=definition, args=built.args,
                                  kwargs=built.kwargs, _parsed=parsed))


def declare_from_option(definition: "JobDefinition", schedule: Any) -> list[Periodic]:
    """The job option ``schedule=``: one expression (named after the job) or a list of them."""
    if schedule is None:
        return []
    if isinstance(schedule, str):
        return [declare(definition, schedule, default_name=definition.name)]
    if isinstance(schedule, (list, tuple)) and schedule and all(isinstance(s, str) for s in schedule):
        return [declare(definition, text, default_name=f"{definition.name}:{_digest(text)}") for text in schedule]
    raise ScheduleError(f"job {definition.name}: schedule= takes an NCRONTAB string such as '0 */5 * * * *' "
                        f"(or a list of them), got {schedule!r}")


def periodic(schedule: str, job: Any, *, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
             name: str | None = None) -> Periodic:
    """Run ``job`` on ``schedule`` with these arguments: ``azjobs.periodic("0 0 7 * * Mon-Fri", report, args=("eu",))``.

    ``job`` is an ``@azjobs.job`` function, an ``azjobs.Job`` class or a ``JobDefinition``.
    ``name`` names the schedule (its lock, its status and its Functions timer); by default it is
    the job's name and a digest of the schedule and arguments.
    """
    definition = getattr(job, "job", job)
    from ..model.definition import JobDefinition

    if not isinstance(definition, JobDefinition):
        raise ConfigurationError(f"azjobs.periodic needs a job declared with @azjobs.job or azjobs.Job, got {job!r}")
    if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
        raise ConfigurationError(f"periodic job {definition.name}: args= is a tuple or list of arguments, got {args!r}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ConfigurationError(f"periodic job {definition.name}: kwargs= is a dict, got {kwargs!r}")
    return declare(definition, schedule, args=tuple(args), kwargs=kwargs, name=name)


__all__ = ["Periodic", "Schedules", "TIME_ZONE_SETTING", "declare", "declare_from_option", "periodic",
           "resolve_schedule", "schedules", "time_zone"]


def timer_tick(item: Periodic, now: datetime, schedule_status: Mapping[str, Any] | None = None,
               zone: tzinfo | None = None) -> datetime:
    """The tick a Functions timer invocation at ``now`` is for.

    With ``useMonitor`` the host passes the schedule status, whose ``Next`` is the occurrence
    being fired (for a past-due invocation: the one that was missed). Without it, the
    occurrence nearest ``now``: the host fires at the tick, a little late (or, rarely, a few
    milliseconds early).
    """
    zone = zone if zone is not None else time_zone()
    text = (schedule_status or {}).get("Next") or (schedule_status or {}).get("next")
    moment = _host_time(text, zone) if isinstance(text, str) else None
    if moment is not None and moment <= now + _EARLY:
        return moment
    expression = item.expression
    before = expression.previous_at_or_before(now, zone)
    after = expression.next_after(now, zone)
    if after is not None and after - now <= _EARLY and (before is None or after - now < now - before):
        return after
    return before or now


# How early a host timer may fire and still be taken for the coming tick.
_EARLY = timedelta(milliseconds=500)


def _host_time(text: str, zone: tzinfo) -> datetime | None:
    """A time the host wrote (.NET round-trip format, up to 7 decimals; no offset means the schedule's zone)."""
    import re

    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", text.strip())
    if match is None:
        return None
    base, fraction, offset = match.groups()
    try:
        moment = datetime.fromisoformat(base + (f".{(fraction + '000000')[:6]}" if fraction else "")
                                        + ("+00:00" if offset == "Z" else offset or ""))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(timezone.utc)
