"""The NCRONTAB parser against a table of expressions and their next occurrences.

The "clock" is the moment each case starts from (a fake clock: nothing reads the real time).
Expected times are written by hand from a calendar, not computed by the code under test.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from azjobs.schedules import ncrontab
from azjobs.schedules.ncrontab import ScheduleError, parse

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


NEXT = [
    # expression, zone, clock, the next three fire times (UTC)
    ("0 */5 * * * *", UTC, utc(2026, 1, 31, 23, 58, 1),
     [utc(2026, 2, 1, 0, 0), utc(2026, 2, 1, 0, 5), utc(2026, 2, 1, 0, 10)]),
    ("*/15 * * * * *", UTC, utc(2026, 6, 1, 12, 0, 0),  # strictly after the clock
     [utc(2026, 6, 1, 12, 0, 15), utc(2026, 6, 1, 12, 0, 30), utc(2026, 6, 1, 12, 0, 45)]),
    ("5/20 * * * * *", UTC, utc(2026, 6, 1, 12, 0, 0),  # a/n runs from a to the field's maximum
     [utc(2026, 6, 1, 12, 0, 5), utc(2026, 6, 1, 12, 0, 25), utc(2026, 6, 1, 12, 0, 45)]),
    ("0 0 9 * * Mon-Fri", UTC, utc(2026, 11, 27, 10, 0),  # a Friday, after 9:00: next is Monday
     [utc(2026, 11, 30, 9), utc(2026, 12, 1, 9), utc(2026, 12, 2, 9)]),
    # day-of-month AND day-of-week: Friday the 13th (Unix cron's OR would fire on Friday Jan 2)
    ("0 0 0 13 * Fri", UTC, utc(2026, 1, 1),
     [utc(2026, 2, 13), utc(2026, 3, 13), utc(2026, 11, 13)]),
    ("0 0 0 13 * 5", UTC, utc(2026, 1, 1),
     [utc(2026, 2, 13), utc(2026, 3, 13), utc(2026, 11, 13)]),
    ("0 30 9 * Jan Mon", UTC, utc(2026, 12, 31),  # Mondays in January
     [utc(2027, 1, 4, 9, 30), utc(2027, 1, 11, 9, 30), utc(2027, 1, 18, 9, 30)]),
    ("0 0 0 * * Sun,Sat", UTC, utc(2026, 11, 27, 12),
     [utc(2026, 11, 28), utc(2026, 11, 29), utc(2026, 12, 5)]),
    # month ends: the 31st skips the months without one
    ("0 0 0 31 * *", UTC, utc(2026, 1, 31),
     [utc(2026, 3, 31), utc(2026, 5, 31), utc(2026, 7, 31)]),
    ("0 0 23 28-31 2 *", UTC, utc(2027, 2, 27),
     [utc(2027, 2, 28, 23), utc(2028, 2, 28, 23), utc(2028, 2, 29, 23)]),
    # leap days
    ("0 0 12 29 2 *", UTC, utc(2026, 3, 1),
     [utc(2028, 2, 29, 12), utc(2032, 2, 29, 12), utc(2036, 2, 29, 12)]),
    ("0 0 0 29 Feb Monday", UTC, utc(2026, 1, 1),  # Feb 29 that is a Monday: 2044, then 2072, 2100 is no leap year
     [utc(2044, 2, 29), utc(2072, 2, 29), utc(2112, 2, 29)]),
    ("0 0 0 1 1 *", UTC, utc(2026, 12, 31, 23, 59, 59), [utc(2027, 1, 1), utc(2028, 1, 1), utc(2029, 1, 1)]),
    ("30 9 * * *", UTC, utc(2026, 6, 1), [utc(2026, 6, 1, 9, 30), utc(2026, 6, 2, 9, 30), utc(2026, 6, 3, 9, 30)]),
    # time zones: 9:00 in Paris is 7:00 UTC in summer, 8:00 in winter
    ("0 0 9 * * *", PARIS, utc(2026, 6, 1), [utc(2026, 6, 1, 7), utc(2026, 6, 2, 7), utc(2026, 6, 3, 7)]),
    ("0 0 9 * * *", PARIS, utc(2026, 10, 24, 12), [utc(2026, 10, 25, 8), utc(2026, 10, 26, 8), utc(2026, 10, 27, 8)]),
    # New York springs forward on 2026-03-08 (2:00 EST -> 3:00 EDT): 2:30 that day happens at 3:30 EDT
    ("0 30 2 * * *", NEW_YORK, utc(2026, 3, 7),
     [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]),
    # and falls back on 2026-11-01 (2:00 EDT -> 1:00 EST): an interval schedule runs in both passes of 1:xx ...
    ("0 0,30 * * * *", NEW_YORK, utc(2026, 11, 1, 5, 10),
     [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 0), utc(2026, 11, 1, 6, 30)]),
    # ... a point-in-time schedule only in the first
    ("0 30 1 * * *", NEW_YORK, utc(2026, 10, 31, 12),
     [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)]),
]


@pytest.mark.parametrize("text, zone, clock, expected", NEXT, ids=[f"{c[0]} {c[1]} {c[2]:%Y-%m-%d}" for c in NEXT])
def test_next_three_occurrences(text, zone, clock, expected):
    assert parse(text).upcoming(clock, 3, zone) == expected


def test_a_point_in_time_schedule_started_in_the_second_pass_of_a_repeated_hour_waits_for_the_next_day():
    # 01:20 EST, after the 01:30 EDT run: the host assumes 1:30 already ran and skips 01:30 EST.
    assert parse("0 30 1 * * *").next_after(utc(2026, 11, 1, 6, 20), NEW_YORK) == utc(2026, 11, 2, 6, 30)


PREVIOUS = [
    ("0 0 * * * *", UTC, utc(2026, 5, 1, 10, 0, 0), utc(2026, 5, 1, 10, 0, 0)),  # at or before: the clock itself
    ("0 0 * * * *", UTC, utc(2026, 5, 1, 10, 59, 59), utc(2026, 5, 1, 10, 0, 0)),
    ("0 0 0 31 * *", UTC, utc(2026, 5, 15), utc(2026, 3, 31)),
    ("0 0 0 13 * Fri", UTC, utc(2026, 10, 1), utc(2026, 3, 13)),
    ("0 0 12 29 2 *", UTC, utc(2027, 6, 1), utc(2024, 2, 29, 12)),
    ("0 0 9 * * *", PARIS, utc(2026, 6, 1, 7, 30), utc(2026, 6, 1, 7)),
    ("0 0,30 * * * *", NEW_YORK, utc(2026, 11, 1, 6, 10), utc(2026, 11, 1, 6, 0)),  # 01:00 EST, second pass
]


@pytest.mark.parametrize("text, zone, clock, expected", PREVIOUS)
def test_previous_occurrence(text, zone, clock, expected):
    assert parse(text).previous_at_or_before(clock, zone) == expected


ERRORS = [
    ("* * * *", "has 4 field(s); NCRONTAB needs 6, seconds first"),
    ("0 0 * * * * *", "has 7 field(s)"),
    ("", "has 0 field(s)"),
    ("60 * * * * *", "second 60 is out of range 0..59"),
    ("0 0 24 * * *", "hour 24 is out of range 0..23"),
    ("0 0 0 0 * *", "day of month 0 is out of range 1..31"),
    ("0 0 0 * 13 *", "month 13 is out of range 1..12"),
    ("0 0 0 * * 7", "day of week 7 is out of range 0..6 (Sunday is 0)"),
    ("0 0 0 * Foo *", "'Foo' is not a month name (use Jan..Dec or 1..12)"),
    ("0 0 0 * * Mo", "'Mo' is not a valid day of week value"),
    ("*/0 * * * * *", "the step after '/' must be a whole number of 1 or more"),
    ("10-5 * * * * *", "range 10-5 goes backwards"),
    ("1,,2 * * * * *", "empty item in a list"),
    ("0 0 0 30 2 *", "never fires: no month it names has day 30"),
    ("0 0 0 31 4,6,9,11 *", "never fires"),
    ("00:05:00", "TimeSpan schedules (hh:mm:ss) run only on an App Service plan"),
]


@pytest.mark.parametrize("text, message", ERRORS)
def test_bad_expressions_are_refused_with_the_reason(text, message):
    with pytest.raises(ScheduleError) as caught:
        parse(text)
    assert message in str(caught.value)
    assert repr(text) in str(caught.value) or text == ""


def test_interval_schedules_are_told_apart_as_the_host_does():
    assert parse("0 */5 * * * *").interval and parse("0 0 1-3 * * *").interval
    assert not parse("0 30 9 * * *").interval and not parse("0 0 0 * * Mon-Fri").interval


def test_a_naive_clock_is_refused():
    with pytest.raises(ValueError):
        parse("* * * * * *").next_after(datetime(2026, 1, 1))


# -- near a daylight-saving change: worked out from the cached change, same answers as reading every wall time ----

def _changes_in(zone: ZoneInfo, year: int) -> list[datetime]:
    """The instants (UTC) the zone's offset changes in ``year``, found by reading it every 10 minutes."""
    out, moment = [], datetime(year, 1, 1, tzinfo=UTC)
    before = moment.astimezone(zone).utcoffset()
    while moment.year == year:
        moment += timedelta(minutes=10)
        offset = moment.astimezone(zone).utcoffset()
        if offset != before:
            out.append(moment)
            before = offset
    return out


# Zones whose changes are unlike each other: an hour at 01:00 UTC, at 02:00 local, at midnight (a skipped
# 00:xx), half an hour (Lord Howe), at 02:45 local (Chatham), two hours (Troll), a skipped whole day (Apia, 2011).
DST_ZONES = [("Europe/London", 2026), ("America/New_York", 2026), ("America/Sao_Paulo", 2017),
             ("America/Havana", 2026), ("Australia/Lord_Howe", 2026), ("Pacific/Chatham", 2026),
             ("Antarctica/Troll", 2026), ("Pacific/Apia", 2011)]
DST_EXPRESSIONS = ["0 * * * * *", "0 */5 * * * *", "0 0,30 * * * *", "0 30 2 * * *", "0 0 0 * * *", "0 15,45 1,2 * * *",
                   "0 50 0-3 * * *", "*/20 58,59,0,1 * * * *", "0 0 2 1-10 * Sun"]


@pytest.mark.parametrize("name, year", DST_ZONES)
def test_fire_times_near_an_offset_change_match_a_reading_of_every_wall_time(name, year):
    zone = ZoneInfo(name)
    changes = _changes_in(zone, year)
    assert changes, name
    checked = 0
    for change in changes:
        moments = [change + timedelta(seconds=k * 1433, microseconds=250_000 * (k % 2)) for k in range(-18, 19)]
        moments += [change - timedelta(seconds=1), change + timedelta(seconds=1)]
        for text in DST_EXPRESSIONS:
            expression = parse(text)
            for moment in moments:
                near = ncrontab._near_transition(moment, zone)
                assert expression.next_after(moment, zone) == expression._next_scan(moment, zone, near), \
                    (text, moment)
                assert expression.previous_at_or_before(moment, zone) == expression._previous_scan(
                    moment, zone, near), (text, moment)
                checked += near
    assert checked > 100  # most of those moments are near the change, where the cached change is used


def test_next_fire_times_near_a_dst_change_come_from_the_cached_change_not_from_every_wall_time(monkeypatch):
    # New York springs forward at 07:00 UTC on 2026-03-08: an every-second schedule across the gap.
    ncrontab._changes.cache_clear()
    read = []
    instants = ncrontab.Expression._instants
    monkeypatch.setattr(ncrontab.Expression, "_instants", lambda self, *a: read.append(a) or instants(self, *a))
    start = utc(2026, 3, 8, 6, 58, 20)
    ticks = parse("* * * * * *").upcoming(start, 300, NEW_YORK)
    assert ticks == [start + timedelta(seconds=n) for n in range(1, 301)]  # every second once, the gap included
    assert read == []  # no wall time was read one by one (each call used to read ~20,000 of them)
    cached = ncrontab._changes.cache_info()
    assert (cached.misses, cached.hits) == (1, 299)  # the change was found once, for the day
