"""``azjobs limits``: each limit, its holders now, its recent starts and throttled deliveries.

    azjobs limits [-i PATH ...] [--connection SETTING] [--json] [--since MINUTES]

The limits are those of the jobs imported as the worker imports them (``-i``, else
./function_app.py), plus every shared limit (``azjobs.limit(...)``) they declare. Per limit: the
slots held now (live leases, every key; with ``--json`` who holds each), the starts counted in the
rate window now, and the starts and throttled deliveries every worker and instance counted in the
last ``--since`` minutes (default 5; written every 10 s, so the last seconds may lag). Reads only
the limits table (``AZJOBS_LIMITS_TABLE``, else ``azjobslimits``).

Exit status: 0 done; 1 the limits table could not be read, or a job names a shared limit nobody
declared; 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from typing import Any, TextIO

from ..errors import ConfigurationError
from .common import add_connection_argument
from .exits import FAILED, OK, USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azjobs limits",
        description="Show each limit (concurrency=, rate_limit=, azjobs.limit) with the slots held now across every "
                    "worker and instance, the starts in its rate window, and recent starts and throttled deliveries.")
    parser.add_argument("-i", "--include", action="append", default=[], metavar="PATH",
                        help="file, package directory or dotted module declaring jobs; repeatable "
                             "(default: ./function_app.py if present)")
    add_connection_argument(parser)
    parser.add_argument("--since", type=int, default=5, metavar="MINUTES",
                        help="recent starts and throttles over this many minutes (1-60, default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per limit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="tracebacks of import errors")
    return parser


def _text(row: dict[str, Any], out: TextIO) -> None:
    kind = "shared" if row["shared"] else "job"
    rules = ", ".join(part for part in (f"concurrency={row['concurrency']}" if row["concurrency"] else "",
                                        f"rate_limit={row['rate_limit']}" if row["rate_limit"] else "") if part)
    print(f"\n{row['limit']}  ({kind}: {rules}; jobs: {', '.join(row['jobs']) or 'none imported'})", file=out)
    if "error" in row:
        print(f"  unknown     {row['error']}", file=out)
        return
    if row["concurrency"]:
        keys = f" over {row['keys_holding']} keys (busiest {row['busiest_key_holding']})" \
            if row["keys_holding"] > 1 else ""
        print(f"  holding     {row['holding']} slots now{keys}; {row['concurrency']} per key", file=out)
        for holder in row["holders"][:20]:
            key = f"[{holder['key']}] " if holder["key"] else ""
            print(f"    {key}{holder['job']} {holder['job_id']} on {holder['holder']} since {holder['since']}",
                  file=out)
    if row["rate_limit"]:
        print(f"  window      {row['window_starts']} starts in the last {row['window_s']}s "
              f"(busiest key {row['busiest_key_window_starts']})", file=out)
    print(f"  last {row['recent_minutes']} min  {row['recent_started']} started, {row['recent_throttled']} throttled",
          file=out)


def main(argv: list[str], *, out: TextIO, err: TextIO) -> int:
    from ..limits.report import declared, read
    from ..limits.table import LimitTable
    from ..model.registry import registry
    from ..storage.connection import resolve_connection
    from .common import _load_jobs

    args = build_parser().parse_args(argv)
    if not 1 <= args.since <= 60:
        print("azjobs limits: --since takes 1 to 60 minutes", file=err)
        return USAGE
    loaded = _load_jobs(args.include, err, args.verbose)
    if loaded:
        return loaded
    try:
        connection = resolve_connection(args.connection)
    except ConfigurationError as exc:
        print(f"azjobs: {exc}", file=err)
        return USAGE
    limits, problems = declared(registry)
    for problem in problems:
        print(f"azjobs limits: {problem}", file=err)
    if not limits:
        print("no limits are declared (concurrency=, rate_limit= or limit= on a job, or azjobs.limit) in what was "
              "imported", file=out)
        return FAILED if problems else OK
    table = LimitTable.from_connection(connection)
    ok = not problems
    now = datetime.now(timezone.utc)
    try:
        for limit, jobs in limits:
            try:
                row = read(table, limit, jobs, now, args.since)
            except Exception as exc:  # the table: said per limit, exit 1
                from ..model.secrets import describe

                row = {"limit": limit.name, "shared": limit.shared, "jobs": sorted(jobs),
                       "concurrency": limit.concurrency, "rate_limit": str(limit.rate) if limit.rate else None,
                       "error": f"the limits table could not be read: {describe(exc)}"}
                ok = False
            if args.json:
                print(json.dumps(row), file=out)
            else:
                _text(row, out)
    finally:
        table.close()
    return OK if ok else FAILED


__all__ = ["build_parser", "main"]
