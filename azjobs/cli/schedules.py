"""``azjobs schedules``: the periodic jobs, their next fire times and the last recorded fire.

    azjobs schedules [-i PATH ...] [--connection SETTING] [--json] [-n COUNT]

The jobs are imported as the worker imports them (``-i``, else ./function_app.py). The last
fire is read from the schedule's status blob (azjobs/schedules/ticks.py), which workers
write; without storage the listing still shows the next fire times and exits 1.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

from ..errors import ConfigurationError
from ..model.envelope import format_time
from ..storage.diagnosis import short_reason, storage_problem, storage_target

from .common import add_connection_argument
from .exits import FAILED, OK, USAGE, exit_code_for  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azjobs schedules",
        description="List the periodic jobs (schedule=, azjobs.periodic) with their next fire times and the last "
                    "fire a worker recorded. Times are UTC; schedules are read in WEBSITE_TIME_ZONE (default UTC).")
    parser.add_argument("-i", "--include", action="append", default=[], metavar="PATH",
                        help="file, package directory or dotted module declaring jobs; repeatable "
                             "(default: ./function_app.py if present)")
    parser.add_argument("-n", "--next", type=int, default=3, metavar="COUNT", help="fire times to show (default 3)")
    add_connection_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per schedule")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="tracebacks of import errors")
    return parser


def describe(items: list, zone: Any, count: int, now: datetime, read_last,
             explain: Callable[[BaseException], str] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """One row per schedule; ``read_last(name)`` returns the status or raises, ``explain(exc)`` says why in a
    few words. Returns the rows and whether every status could be read."""
    rows = []
    ok = True
    for item in items:
        row: dict[str, Any] = {"name": item.name, "job": item.job.name, "queue": item.job.queue,
                               "schedule": item.schedule, "args": list(item.args), "kwargs": dict(item.kwargs)}
        try:
            expression = item.expression
            row["expression"] = expression.text
            row["next"] = [format_time(t) for t in expression.upcoming(now, count, zone)]
        except ConfigurationError as exc:
            row["error"] = str(exc)
            ok = False
        try:
            status = read_last(item.name)
            row["last"] = status.last if status is not None else None
        except Exception as exc:  # storage: shown per row, the command says why once and exits non-zero
            row["last_error"] = (explain or short_reason)(exc)
            ok = False
        rows.append(row)
    return rows, ok


def _text(rows: list[dict[str, Any]], zone_name: str, out: TextIO) -> None:
    print(f"time zone: {zone_name} (WEBSITE_TIME_ZONE); times below are UTC", file=out)
    for row in rows:
        print(f"\n{row['name']}", file=out)
        shown = row["schedule"] if row.get("expression") in (None, row["schedule"]) else \
            f"{row['schedule']} = {row['expression']}"
        arguments = ", ".join([json.dumps(a) for a in row["args"]] +
                              [f"{k}={json.dumps(v)}" for k, v in row["kwargs"].items()])
        print(f"  job       {row['job']}({arguments}) on queue {row['queue']}", file=out)
        print(f"  schedule  {shown}", file=out)
        if "error" in row:
            print(f"  error     {row['error']}", file=out)
        else:
            print(f"  next      {', '.join(row['next']) or 'never'}", file=out)
        if "last_error" in row:
            print(f"  last      unknown: {row['last_error']}", file=out)
        elif row.get("last"):
            last = row["last"]
            late = " (past due)" if last.get("past_due") else ""
            print(f"  last      tick {last.get('tick')}{late}, fired {last.get('fired_at')} by {last.get('by')}, "
                  f"job {last.get('job_id')}", file=out)
        else:
            print("  last      never fired by a worker", file=out)


def main(argv: list[str], *, out: TextIO, err: TextIO) -> int:
    from ..model.registry import registry
    from ..schedules.declarations import schedules, time_zone
    from ..schedules.ticks import TickStore
    from ..storage.connection import resolve_connection
    from .common import _load_jobs, connection_origin

    args = build_parser().parse_args(argv)
    if args.next < 1:
        print("azjobs schedules: -n must be 1 or more", file=err)
        return USAGE
    loaded = _load_jobs(args.include, err, args.verbose)
    if loaded:
        return loaded
    try:
        zone = time_zone()
        connection = resolve_connection(args.connection)
    except ConfigurationError as exc:
        print(f"azjobs: {exc}", file=err)
        return USAGE
    items = schedules.for_registry(registry)
    if not items:
        print("no periodic jobs are declared (schedule= on a job, or azjobs.periodic) in what was imported",
              file=out)
        return OK
    store = TickStore(connection)
    failures: list[tuple[str, BaseException]] = []

    def read(name: str):
        try:
            return store.read(name)
        except Exception as exc:
            failures.append((name, exc))
            raise

    try:
        rows, ok = describe(items, zone, args.next, datetime.now(timezone.utc), read)
    finally:
        store.close()
    if args.json:
        for row in rows:
            print(json.dumps(row), file=out)
    else:
        _text(rows, getattr(zone, "key", None) or "UTC", out)
    if failures:  # one line on why, in the words of every command (the blob endpoint it tried)
        name, exc = failures[0]
        code = exit_code_for(exc)  # a bug raises here, with its traceback
        target = storage_target(connection, connection_origin(args.connection, connection), args.connection, "blob")
        print(f"azjobs schedules: {storage_problem(exc, target, f'reading the last fire of schedule {name}')}",
              file=err)
        return code
    return OK if ok else FAILED


__all__ = ["build_parser", "describe", "main"]
