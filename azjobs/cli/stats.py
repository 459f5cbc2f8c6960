"""``azjobs stats``: is it keeping up? Per queue: depth, poison depth, age of the oldest visible message.

    azjobs stats [-q QUEUE ...] [-i PATH ...] [--json] [--watch [SECONDS]] [--connection SETTING]
                 [--state] [--since DURATION] [--table TABLE] [--limits]

Which queues: those given with ``-q``, else those the loaded jobs use (``-i``, default
``./function_app.py``), as for the worker. Per queue, three storage calls: the queue's
properties (its approximate message count, which also counts messages that are delayed or
leased), its ``-poison`` twin's properties, and a peek at the first visible message (its
insertion time gives the age of the oldest message waiting to run). Nothing is received,
changed or leased.

With job state on (``AZJOBS_STATE=1``, ``azjobs.configure(state=True)`` in the loaded modules, or
``--state``) each queue also gets what the state table says about its jobs changed within
``--since`` (default 1 h): succeeded, failed, dead-lettered, cancelled, retrying, running, and
finished jobs per minute (succeeded, failed and dead-lettered: the jobs that ran to an end).

With limits (``--limits``, or without ``-q`` a loaded job with ``concurrency=``, ``rate_limit=`` or ``limit=``),
each queue also gets THROTTLED: deliveries a limit sent on in the last 5 minutes, as every
worker and instance counted them (``azjobs limits`` shows them per limit).

Exit status: 0 done; 1 a storage error or a queue that does not exist; 2 a usage or
configuration error (no queues, a bad queue name, rejected credentials).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, TextIO

from ..model.secrets import RedactingStream
from .common import add_connection_argument
from .exits import FAILED, OK, USAGE, exit_code_for

DEFAULT_WATCH_S = 2.0


@dataclass
class QueueStats:
    """One queue's numbers at ``at`` (``None``: unknown, e.g. the queue does not exist)."""

    queue: str
    exists: bool
    depth: int | None
    poison_queue: str | None
    poison_depth: int | None
    oldest_age_s: float | None  # age of the first visible message; None when none is visible
    oldest_inserted_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(queue_client: Any) -> int | None:
    """The queue's approximate message count, None if it does not exist."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return int(queue_client.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return None


def queue_stats(service: Any, queue: str, now: datetime | None = None) -> QueueStats:
    """Read one queue's numbers (three calls, nothing changed). Storage errors other than not-found raise."""
    from azure.core.exceptions import ResourceNotFoundError

    from ..model.queue_names import poison_queue_name

    client = service.get_queue_client(queue)
    depth = _count(client)
    poison = poison_queue_name(queue)
    poison_depth = None
    if poison is not None:
        poison_depth = _count(service.get_queue_client(poison))
        poison_depth = 0 if poison_depth is None else poison_depth  # created on first poisoning
    age = inserted = None
    if depth is not None:
        try:
            peeked = list(client.peek_messages(max_messages=1))
        except ResourceNotFoundError:
            peeked, depth = [], None
        if peeked and peeked[0].inserted_on is not None:
            when = peeked[0].inserted_on
            when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
            age = max(0.0, ((now or datetime.now(timezone.utc)) - when).total_seconds())
            inserted = when.isoformat().replace("+00:00", "Z")
    return QueueStats(queue, depth is not None, depth, poison, poison_depth,
                      None if age is None else round(age, 1), inserted)


def collect(service: Any, queues: list[str]) -> list[QueueStats]:
    """Every queue's numbers, read concurrently, in the order given."""
    now = datetime.now(timezone.utc)
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(queues)))) as pool:
        return list(pool.map(lambda name: queue_stats(service, name, now), queues))


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def table(rows: list[QueueStats], extra: dict[str, dict[str, str]] | None = None) -> str:
    """The rows as an aligned text table; ``extra`` adds columns per queue (e.g. recent counts)."""
    extra = extra or {}
    extra_heads = list(next(iter(extra.values()), {}).keys())
    lines = [["QUEUE", "DEPTH", "POISON", "OLDEST", *extra_heads]]
    for row in rows:
        if not row.exists:
            lines.append([row.queue, "missing", str(row.poison_depth if row.poison_depth is not None else "-"), "-",
                          *("-" for _ in extra_heads)])
            continue
        cells = extra.get(row.queue, {})
        lines.append([row.queue, str(row.depth), "-" if row.poison_depth is None else str(row.poison_depth),
                      format_age(row.oldest_age_s), *(cells.get(head, "-") for head in extra_heads)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for line in lines:
        cells = [line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


# -- recent throughput and failures (the job state store) ------------------------
RECENT_LIMIT = 10_000  # records read per refresh, newest first


@dataclass
class Recent:
    """What the job state store says about one queue's jobs changed within the window."""

    succeeded: int = 0
    failed: int = 0  # the job raised on its last attempt (FAILED)
    dead_lettered: int = 0  # dead-lettered without the job failing on that delivery (DEAD_LETTERED)
    cancelled: int = 0  # cancelled (azjobs.cancel) within the window: CANCELLED
    retrying: int = 0
    running: int = 0
    finished_per_min: float = 0.0  # SUCCESSFUL + FAILED + DEAD_LETTERED finished within the window, per minute

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recent_counts(store: Any, queues: list[str], window: timedelta,
                  now: datetime | None = None) -> tuple[dict[str, Recent], bool]:
    """Per queue, the jobs the state store saw change within ``window``; and whether the read was capped."""
    from ..state import JobStatus

    now = now or datetime.now(timezone.utc)
    since = now - window
    records = store.recent(since=since, limit=RECENT_LIMIT)
    counts = {queue: Recent() for queue in queues}
    for record in records:
        row = counts.get(record.queue or "")
        if row is None:
            continue
        status = JobStatus(record.status)
        finished = record.finished_at is not None and record.finished_at >= since
        if status is JobStatus.SUCCESSFUL and finished:
            row.succeeded += 1
        elif status is JobStatus.FAILED and finished:
            row.failed += 1
        elif status is JobStatus.DEAD_LETTERED and finished:
            row.dead_lettered += 1
        elif status is JobStatus.CANCELLED and finished:
            row.cancelled += 1
        elif status is JobStatus.RETRYING:
            row.retrying += 1
        elif status is JobStatus.RUNNING:
            row.running += 1
    minutes = max(window.total_seconds() / 60, 1e-9)
    for row in counts.values():
        row.finished_per_min = round((row.succeeded + row.failed + row.dead_lettered) / minutes, 2)
    return counts, len(records) >= RECENT_LIMIT


def _window_label(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def recent_columns(store: Any, window: timedelta, err: TextIO
                   ) -> Callable[[list[QueueStats]], tuple[dict[str, Any], dict[str, dict[str, str]]]]:
    """The ``extra_columns`` of ``main``: recent counts per queue, as JSON and as table columns."""
    label = _window_label(window)

    def columns(rows: list[QueueStats]) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
        from ..state import StateUnavailable

        queues = [row.queue for row in rows]
        try:
            counts, capped = recent_counts(store, queues, window)
        except StateUnavailable as exc:
            print(f"azjobs stats: the job state table could not be read: {exc}", file=err)
            raise _RecentUnavailable() from None
        document = {"recent": {"window_s": int(window.total_seconds()), "table": store.table_name,
                               "capped_at": RECENT_LIMIT if capped else None,
                               "queues": {queue: counts[queue].to_dict() for queue in queues}}}
        table_cells = {queue: {f"OK/{label}": str(c.succeeded), f"FAILED/{label}": str(c.failed + c.dead_lettered),
                               f"CANCELLED/{label}": str(c.cancelled),
                               "RETRYING": str(c.retrying), "RUNNING": str(c.running),
                               "JOBS/MIN": f"{c.finished_per_min:g}"} for queue, c in counts.items()}
        return document, table_cells

    return columns


THROTTLED_MINUTES = 5
_Columns = Callable[[list[QueueStats]], tuple[dict[str, Any], dict[str, dict[str, str]]]]


def throttled_columns(limits_table: Any, inner: "_Columns | None", err: TextIO) -> _Columns:
    """``inner``'s columns plus THROTTLED: deliveries a limit sent on in the last 5 minutes (azjobs.limits)."""
    from ..limits.report import throttled_by_queue

    def columns(rows: list[QueueStats]) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
        document, cells = inner(rows) if inner is not None else ({}, {})
        try:
            counts: dict[str, int] | None = throttled_by_queue(limits_table, datetime.now(timezone.utc),
                                                               THROTTLED_MINUTES)
        except Exception as exc:  # the queue numbers still show
            print(f"azjobs stats: the limits table could not be read: {exc}", file=err)
            counts = None
        label = f"THROTTLED/{THROTTLED_MINUTES}m"
        document = {**document, "throttled": {"window_s": THROTTLED_MINUTES * 60, "queues": {
            row.queue: None if counts is None else counts.get(row.queue, 0) for row in rows}}}
        cells = {row.queue: {**cells.get(row.queue, {}),
                             label: "-" if counts is None else str(counts.get(row.queue, 0))} for row in rows}
        return document, cells

    return columns


def _wants_limits(args: argparse.Namespace) -> bool:
    """--limits, or (the queues coming from the loaded jobs, not -q) a loaded job with a limit."""
    if args.limits:
        return True
    if args.queue:
        return False
    from ..model.registry import registry

    return any(definition.limits is not None for definition in registry)


class _RecentUnavailable(Exception):
    """The state table could not be read (said on stderr): exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azjobs stats",
        description="Per queue: approximate depth, poison depth and the age of the oldest visible message; with "
                    "job state on, recent throughput and failure counts.",
        epilog="Queues: -q, else those the jobs loaded with -i (default ./function_app.py) use. "
               "exit status: 0 done; 1 storage error or a queue that does not exist; 2 usage or configuration error")
    parser.add_argument("-q", "--queue", action="append", default=[], metavar="QUEUE",
                        help="queue to report; repeatable (default: the queues of the loaded jobs)")
    parser.add_argument("-i", "--include", action="append", default=[], metavar="PATH",
                        help="file, package directory or dotted module declaring jobs, as for the worker "
                             "(default: ./function_app.py if present)")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table (with --watch: one line each)")
    parser.add_argument("--watch", nargs="?", const=DEFAULT_WATCH_S, type=_interval, metavar="SECONDS",
                        help=f"refresh every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C")
    parser.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N refreshes")
    add_connection_argument(parser)
    recent = parser.add_argument_group("recent throughput and failures (job state)")
    recent.add_argument("--state", action="store_true",
                        help="add recent counts per queue from the job state table (default: on when job state is on: "
                             "AZJOBS_STATE=1 or azjobs.configure(state=True) in the loaded modules)")
    recent.add_argument("--since", default="1h", metavar="DURATION",
                        help="the window for recent counts: 90s, 30m, 12h, 7d (default 1h)")
    recent.add_argument("--table", default=None, help="the job state table (default: $AZJOBS_STATE_TABLE, else "
                                                      "azjobsstate)")
    parser.add_argument("--limits", action="store_true",
                        help=f"add THROTTLED: deliveries a limit sent on in the last {THROTTLED_MINUTES} minutes "
                             "(default: on when, without -q, a loaded job has a limit)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="tracebacks of import errors")
    return parser


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be 0.1..86400 seconds, got {text}")
    return value


def _queues(args: argparse.Namespace, err: TextIO) -> list[str] | int:
    """The queues to report, or an exit status after one line on stderr."""
    from ..errors import ConfigurationError
    from ..model.registry import registry
    from .common import _declared_queue, _load_jobs, _queue_name

    if args.queue:
        try:
            return list(dict.fromkeys(_queue_name(name, "-q") for name in args.queue))
        except ConfigurationError as exc:
            print(f"azjobs stats: {exc}", file=err)
            return USAGE
    loaded = _load_jobs(args.include, err, args.verbose)
    if loaded:
        return loaded
    declared = [name for name in dict.fromkeys(_declared_queue(d) for d in registry) if name]
    if not declared:
        print("azjobs stats: no queues: give -q QUEUE, or -i with the module that declares your jobs", file=err)
        return USAGE
    return declared


def _wants_state(args: argparse.Namespace) -> bool:
    if args.state:
        return True
    from ..state import enabled

    return enabled()


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         sleep: Callable[[float], None] = time.sleep,
         extra_columns: Callable[[list[QueueStats]], tuple[dict[str, Any], dict[str, dict[str, str]]]] | None = None
         ) -> int:
    """Run ``azjobs stats``; returns the exit status."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    out, err = RedactingStream(out or sys.stdout), RedactingStream(err or sys.stderr)
    if args.count is not None and (args.count < 1 or args.watch is None):
        print("azjobs stats: --count needs --watch and a positive number", file=err)
        return USAGE
    queues = _queues(args, err)
    if isinstance(queues, int):
        return queues
    from ..errors import ConfigurationError
    from ..storage.connection import resolve_connection
    from ..storage.diagnosis import storage_problem, storage_target
    from .common import connection_origin

    try:
        connection = resolve_connection(args.connection)
        from ..storage.http import CONNECT_TIMEOUT_S, sdk_retry

        service = connection.queue_service(retry_policy=sdk_retry(), connection_timeout=CONNECT_TIMEOUT_S,
                                           read_timeout=30)
    except ConfigurationError as exc:
        print(f"azjobs stats: {exc}", file=err)
        return USAGE
    target = storage_target(connection, connection_origin(args.connection, connection), args.connection)
    store = None
    if extra_columns is None and _wants_state(args):
        from ..state import StateStore
        from ..state.entities import default_table
        from .common import parse_duration

        try:
            window = parse_duration(args.since)
        except argparse.ArgumentTypeError as exc:
            print(f"azjobs stats: --since: {exc}", file=err)
            service.close()
            return USAGE
        store = StateStore.from_connection(connection, args.table or default_table())
        extra_columns = recent_columns(store, window, err)
    limits_table = None
    if _wants_limits(args):
        from ..limits.table import LimitTable

        limits_table = LimitTable.from_connection(connection)
        extra_columns = throttled_columns(limits_table, extra_columns, err)
    shown = 0
    code = OK
    try:
        while True:
            try:
                rows = collect(service, queues)
            except Exception as exc:
                code = exit_code_for(exc)  # a bug (a TypeError) raises here, with its traceback
                print(f"azjobs stats: {storage_problem(exc, target, 'reading queue statistics')}", file=err)
                return code
            try:
                document, columns = extra_columns(rows) if extra_columns else ({}, {})
            except _RecentUnavailable:
                return FAILED
            at = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
            if args.json:
                print(json.dumps({"at": at, "account": target.account, "queues": [r.to_dict() for r in rows],
                                  **document}, ensure_ascii=False, separators=(",", ":") if args.watch else None,
                                 indent=None if args.watch else 2), file=out, flush=True)
            else:
                if args.watch is not None and getattr(out, "isatty", lambda: False)():
                    out.write("\x1b[H\x1b[2J")  # a terminal: redraw in place
                if args.watch is not None:
                    print(f"{at}  {target.where}", file=out)
                print(table(rows, columns), file=out, flush=True)
            missing = [r.queue for r in rows if not r.exists]
            code = FAILED if missing else OK
            shown += 1
            if args.watch is None or (args.count is not None and shown >= args.count):
                break
            if args.watch is not None and not args.json and not getattr(out, "isatty", lambda: False)():
                print(file=out)
            sleep(args.watch)
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
        if store is not None:
            store.close()
        if limits_table is not None:
            limits_table.close()
    if code:
        print(f"azjobs stats: queue {', '.join(missing)} does not exist at {target.where}", file=err)
    return code


__all__ = ["QueueStats", "collect", "format_age", "main", "queue_stats", "table"]
