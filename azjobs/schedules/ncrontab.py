"""NCRONTAB expressions as the Functions timer trigger reads them.

Six fields, seconds first (``{second} {minute} {hour} {day} {month} {day-of-week}``); five
fields mean the same without seconds (second 0), as the host accepts both. Each field takes
``*``, a value, a range ``a-b``, a list ``a,b``, and a step ``*/n``, ``a-b/n`` or ``a/n`` (from
``a`` to the field's maximum). Months take ``Jan``..``Dec``, days of the week ``Sun``..``Sat``
(0 is Sunday, 0..6; full names and any prefix of three letters or more work too).

What differs from Unix cron, and what this module does as NCrontab does:

- the day of the month AND the day of the week must both match (Unix cron fires when
  either does, when both are restricted);
- times are wall-clock times in one time zone (UTC unless ``WEBSITE_TIME_ZONE``). Across
  daylight-saving changes it follows the host's ``CronSchedule``: a wall time skipped when
  clocks go forward fires at the same distance past the gap (02:30 becomes 03:30); when clocks go
  back an "interval" schedule (``*``, ``-`` or ``/`` in its seconds, minutes or hours) fires in
  both passes of the repeated hour and a point-in-time schedule only in the first.

Near a daylight-saving change the fire times are worked out from the change itself (when it
happens, the offsets before and after; found once per zone and day and cached), not by reading
every matching wall time of the hours around it: for an every-second schedule that is ~20,000
wall times per call. Around a zone with more than one change within a day of the moment, or
one that moves the clock more than 3 hours, wall times are still read one by one.
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Iterator

from ..errors import ConfigurationError

MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
               "november", "december")
DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")

# (name, lowest, highest, names for values starting at lowest)
FIELDS = (
    ("second", 0, 59, None),
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, MONTH_NAMES),
    ("day of week", 0, 6, DAY_NAMES),
)
# The longest any wall clock moves at a daylight-saving change, with room to spare.
_SHIFT = timedelta(hours=3)
_SECOND = timedelta(seconds=1)
# Far enough for any expression that can fire (Feb 29 on a given weekday recurs within 40 years).
_HORIZON_YEARS = 400
_DAY = timedelta(days=1)


class ScheduleError(ConfigurationError):
    """A schedule expression the Functions host would refuse (or one that never fires)."""


def _days_in(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _cron_weekday(year: int, month: int, day: int) -> int:
    return (calendar.weekday(year, month, day) + 1) % 7  # Sunday = 0


@dataclass(frozen=True)
class Expression:
    """A parsed NCRONTAB expression: the values each field allows, sorted."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: frozenset[int]
    interval: bool  # ``*``, ``-`` or ``/`` in the seconds, minutes or hours: the host's "interval" schedule

    # -- wall-clock search (naive datetimes) ---------------------------------
    def _walls_from(self, start: datetime) -> Iterator[datetime]:
        """Matching wall times at or after ``start`` (naive), ascending."""
        y0, mo0, d0, h0, mi0, s0 = start.year, start.month, start.day, start.hour, start.minute, start.second
        for year in range(y0, min(y0 + _HORIZON_YEARS, 9999) + 1):
            for month in self.months:
                if (year, month) < (y0, mo0):
                    continue
                same_month = (year, month) == (y0, mo0)
                last_day = _days_in(year, month)
                for day in self.days:
                    if day > last_day:
                        break
                    if same_month and day < d0:
                        continue
                    if _cron_weekday(year, month, day) not in self.weekdays:
                        continue
                    same_day = same_month and day == d0
                    for hour in self.hours:
                        if same_day and hour < h0:
                            continue
                        same_hour = same_day and hour == h0
                        for minute in self.minutes:
                            if same_hour and minute < mi0:
                                continue
                            same_minute = same_hour and minute == mi0
                            for second in self.seconds:
                                if same_minute and second < s0:
                                    continue
                                yield datetime(year, month, day, hour, minute, second)

    def _walls_back_from(self, start: datetime) -> Iterator[datetime]:
        """Matching wall times at or before ``start`` (naive), descending."""
        y0, mo0, d0, h0, mi0, s0 = start.year, start.month, start.day, start.hour, start.minute, start.second
        for year in range(y0, max(y0 - _HORIZON_YEARS, 1) - 1, -1):
            for month in reversed(self.months):
                if (year, month) > (y0, mo0):
                    continue
                same_month = (year, month) == (y0, mo0)
                last_day = _days_in(year, month)
                for day in reversed(self.days):
                    if day > last_day or (same_month and day > d0):
                        continue
                    if _cron_weekday(year, month, day) not in self.weekdays:
                        continue
                    same_day = same_month and day == d0
                    for hour in reversed(self.hours):
                        if same_day and hour > h0:
                            continue
                        same_hour = same_day and hour == h0
                        for minute in reversed(self.minutes):
                            if same_hour and minute > mi0:
                                continue
                            same_minute = same_hour and minute == mi0
                            for second in reversed(self.seconds):
                                if same_minute and second > s0:
                                    continue
                                yield datetime(year, month, day, hour, minute, second)

    # -- instants ------------------------------------------------------------
    def _instants(self, wall: datetime, zone: tzinfo) -> list[datetime]:
        """The UTC instants a matching wall time stands for: one, or two in a repeated hour (interval schedules)."""
        first = wall.replace(tzinfo=zone, fold=0)
        out = [first.astimezone(timezone.utc)]
        if self.interval:
            second = wall.replace(tzinfo=zone, fold=1)
            if second.utcoffset() != first.utcoffset():
                # Only in a repeated (ambiguous) hour: in a skipped one, fold=1 is another reading of a time that
                # does not exist.
                if _exists(second.replace(fold=1)) and second.astimezone(timezone.utc) != out[0]:
                    out.append(second.astimezone(timezone.utc))
        return out

    def next_after(self, moment: datetime, zone: tzinfo = timezone.utc) -> datetime | None:
        """The first fire time strictly after ``moment`` (aware), in UTC; None if it never fires again."""
        if moment.tzinfo is None:
            raise ValueError("naive datetime: give a timezone-aware moment")
        now = moment.astimezone(timezone.utc)
        near = _near_transition(now, zone)
        if near:
            change = _change_near(now, zone)
            if change is not None:
                found = self._next_across(now, change)
                if found is not None and found - now <= _DAY:
                    return found
        return self._next_scan(now, zone, near)

    def _next_scan(self, now: datetime, zone: tzinfo, near: bool) -> datetime | None:
        """``next_after`` by reading matching wall times in order (near a change: every one within its reach)."""
        local = now.astimezone(zone).replace(tzinfo=None, microsecond=0)
        start = local - _SHIFT if near else local
        best: datetime | None = None
        best_wall: datetime | None = None
        for wall in self._walls_from(start):
            if best_wall is not None and wall > best_wall + _SHIFT:
                break
            for instant in self._instants(wall, zone):
                if instant > now and (best is None or instant < best):
                    best, best_wall = instant, wall
            if best is not None and not near:
                break
        return best

    def previous_at_or_before(self, moment: datetime, zone: tzinfo = timezone.utc) -> datetime | None:
        """The latest fire time at or before ``moment`` (aware), in UTC; None if there was none."""
        if moment.tzinfo is None:
            raise ValueError("naive datetime: give a timezone-aware moment")
        now = moment.astimezone(timezone.utc)
        near = _near_transition(now, zone)
        if near:
            change = _change_near(now, zone)
            if change is not None:
                found = self._previous_across(now, change)
                if found is not None and now - found <= _DAY:
                    return found
        return self._previous_scan(now, zone, near)

    def _previous_scan(self, now: datetime, zone: tzinfo, near: bool) -> datetime | None:
        """``previous_at_or_before`` by reading matching wall times backwards."""
        local = now.astimezone(zone).replace(tzinfo=None, microsecond=0)
        start = local + _SHIFT if near else local
        best: datetime | None = None
        best_wall: datetime | None = None
        for wall in self._walls_back_from(start):
            if best_wall is not None and wall < best_wall - _SHIFT:
                break
            for instant in self._instants(wall, zone):
                if instant <= now and (best is None or instant > best):
                    best, best_wall = instant, wall
            if best is not None and not near:
                break
        return best

    # -- across one offset change (the cached DST window) ----------------------
    # With one change at UTC instant T from offset o1 to o2, a matching wall time w fires at
    #   w - o1 when w < T + max(o1, o2): before the change, and (fold=0) a skipped time, which fires
    #     as far past the gap as it was into it, and the first pass of a repeated one;
    #   w - o2 when w >= T + o2 (an interval schedule: the second pass of a repeated hour too), or
    #     w >= T + max(o1, o2) (a point-in-time schedule: after the repeated hour).
    # Both runs rise with w, so the next (previous) fire time is the nearer of each run's first
    # (last) matching wall time past the moment: what ``_next_scan`` finds reading every wall time.
    def _runs(self, change: "_Change") -> tuple[datetime, datetime]:
        """(end of the walls firing at ``w - o1``, start of those firing at ``w - o2``), naive walls."""
        at = change.at.replace(tzinfo=None)
        later = at + max(change.before, change.after)
        return later, (at + change.after if self.interval else later)

    def _next_across(self, now: datetime, change: "_Change") -> datetime | None:
        first_end, second_start = self._runs(change)
        bare = now.replace(tzinfo=None, microsecond=0)
        found = []
        wall = next(self._walls_from(bare + change.before + _SECOND), None)
        if wall is not None and wall < first_end:
            found.append(wall - change.before)
        wall = next(self._walls_from(max(bare + change.after + _SECOND, second_start)), None)
        if wall is not None:
            found.append(wall - change.after)
        return min(found).replace(tzinfo=timezone.utc) if found else None

    def _previous_across(self, now: datetime, change: "_Change") -> datetime | None:
        first_end, second_start = self._runs(change)
        bare = now.replace(tzinfo=None, microsecond=0)
        found = []
        wall = next(self._walls_back_from(min(bare + change.before, first_end - _SECOND)), None)
        if wall is not None:
            found.append(wall - change.before)
        wall = next(self._walls_back_from(bare + change.after), None)
        if wall is not None and wall >= second_start:
            found.append(wall - change.after)
        return max(found).replace(tzinfo=timezone.utc) if found else None

    def upcoming(self, moment: datetime, count: int, zone: tzinfo = timezone.utc) -> list[datetime]:
        """The next ``count`` fire times after ``moment``, in UTC."""
        out: list[datetime] = []
        cursor = moment
        while len(out) < count:
            nxt = self.next_after(cursor, zone)
            if nxt is None:
                break
            out.append(nxt)
            cursor = nxt
        return out

    def __str__(self) -> str:
        return self.text


def _exists(aware: datetime) -> bool:
    """False for a wall time skipped when clocks go forward."""
    back = aware.astimezone(timezone.utc).astimezone(aware.tzinfo)
    return back.replace(tzinfo=None) == aware.replace(tzinfo=None)


@dataclass(frozen=True)
class _Change:
    """A change of a zone's UTC offset: from ``at`` (UTC) the offset is ``after``, ``before`` until then."""

    at: datetime
    before: timedelta
    after: timedelta


def _offset(instant: datetime, zone: tzinfo) -> timedelta:
    return instant.astimezone(zone).utcoffset() or timedelta(0)


@functools.lru_cache(maxsize=128)
def _changes(zone: tzinfo, day: int) -> tuple[_Change, ...]:
    """The zone's offset changes from the UTC day before ``day`` (a proleptic ordinal) to the end of the day after.

    The DST window cache: found once per zone and day by reading the offset every hour and pinning
    each change to the second (tz data changes offsets on whole seconds).
    """
    start = datetime.fromordinal(day).replace(tzinfo=timezone.utc) - _DAY
    changes = []
    before = _offset(start, zone)
    for hour in range(1, 73):
        offset = _offset(start + timedelta(hours=hour), zone)
        if offset == before:
            continue
        low, high = (hour - 1) * 3600, hour * 3600  # seconds from start: the change is in (low, high]
        while high - low > 1:
            middle = (low + high) // 2
            if _offset(start + timedelta(seconds=middle), zone) == before:
                low = middle
            else:
                high = middle
        at = start + timedelta(seconds=high)
        changes.append(_Change(at, _offset(at - _SECOND, zone), _offset(at, zone)))
        before = offset
    return tuple(changes)


def _change_near(now: datetime, zone: tzinfo) -> _Change | None:
    """The zone's one offset change within a day of ``now``; None when there is none or more than one, or it
    moves the clock more than ``_SHIFT`` (then wall times are read one by one)."""
    near = [change for change in _changes(zone, now.toordinal()) if abs(change.at - now) <= _DAY]
    if len(near) != 1 or abs(near[0].after - near[0].before) > _SHIFT:
        return None
    return near[0]


def _near_transition(now: datetime, zone: tzinfo) -> bool:
    """True when the zone's UTC offset changes within ``_SHIFT`` (twice over) of ``now``."""
    if zone is timezone.utc:
        return False
    offsets = {(now + k * _SHIFT).astimezone(zone).utcoffset() for k in (-2, -1, 0, 1, 2)}
    return len(offsets) > 1


# -- parsing -------------------------------------------------------------------
def _value(text: str, name: str, low: int, high: int, names: tuple[str, ...] | None, where: str) -> int:
    if text.isdigit():
        value = int(text)
    elif names is not None and len(text) >= 3 and text.isalpha():
        matches = [i for i, full in enumerate(names) if full.startswith(text.lower())]
        if len(matches) != 1:
            raise ScheduleError(f"{where}: {text!r} is not a {name} name (use {names[0][:3].title()}.."
                                f"{names[-1][:3].title()} or {low}..{high})")
        value = matches[0] + low
    else:
        raise ScheduleError(f"{where}: {text!r} is not a valid {name} value ({low}..{high})")
    if not low <= value <= high:
        hint = " (Sunday is 0)" if name == "day of week" and value == 7 else ""
        raise ScheduleError(f"{where}: {name} {value} is out of range {low}..{high}{hint}")
    return value


def _field(text: str, index: int, where: str) -> tuple[set[int], bool]:
    """The values one field allows, and whether it is an interval (``*``, ``-`` or ``/``)."""
    name, low, high, names = FIELDS[index]
    values: set[int] = set()
    label = f"{where}, {name} field {text!r}"
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"{label}: empty item in a list")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ScheduleError(f"{label}: the step after '/' must be a whole number of 1 or more")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first = _value(a, name, low, high, names, label)
            last = _value(b, name, low, high, names, label)
            if first > last:
                raise ScheduleError(f"{label}: range {base} goes backwards ({first} > {last})")
        else:
            first = _value(base, name, low, high, names, label)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return values, any(mark in text for mark in "*-/")


def parse(text: object) -> Expression:
    """Parse an NCRONTAB expression; raise ScheduleError saying what is wrong, as the host would refuse it.

    Checked: the field count (6, or 5 without seconds), every value's range, names, steps and
    ranges, and that the expression can fire at all (``0 0 0 30 2 *`` cannot).
    """
    if not isinstance(text, str):
        raise ScheduleError(f"a schedule is an NCRONTAB string such as '0 */5 * * * *', got {type(text).__name__}")
    where = f"schedule {text!r}"
    parts = text.split()
    if len(parts) == 1 and parts[0].count(":") >= 1:
        raise ScheduleError(f"{where}: TimeSpan schedules (hh:mm:ss) run only on an App Service plan; give an "
                            "NCRONTAB expression instead, e.g. '0 */5 * * * *' for every 5 minutes")
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise ScheduleError(f"{where} has {len(parts)} field(s); NCRONTAB needs 6, seconds first: "
                            "'{second} {minute} {hour} {day} {month} {day-of-week}', e.g. '0 */5 * * * *'")
    sets = []
    interval = False
    for index, part in enumerate(parts):
        values, is_interval = _field(part, index, where)
        sets.append(values)
        if index < 3 and is_interval:
            interval = True
    seconds, minutes, hours, days, months, weekdays = sets
    if not any(min(days) <= _days_in(2000, month) for month in months):  # 2000: February has 29 days
        raise ScheduleError(f"{where} never fires: no month it names has day {_list(days)}")
    return Expression(text=text, seconds=tuple(sorted(seconds)), minutes=tuple(sorted(minutes)),
                      hours=tuple(sorted(hours)), days=tuple(sorted(days)), months=tuple(sorted(months)),
                      weekdays=frozenset(weekdays), interval=interval)


def _list(values: set[int]) -> str:
    ordered = sorted(values)
    return ", ".join(map(str, ordered[:5])) + (", ..." if len(ordered) > 5 else "")


__all__ = ["Expression", "ScheduleError", "parse"]
