"""``azjobs workflow status ID [--json]``: a workflow's steps, results and status from its local history;
``azjobs workflow list [--status S] [--since 1h] [--limit N] [--json]``: recent workflows, newest first.

Reads the history the ``azjobs`` worker keeps in Table Storage (a workflow enqueued but not
started yet is ``Pending``). Exit status: 0 found; 1 storage failed; 2 no such workflow (never
enqueued in that table, or an id no workflow can have), usage or configuration error. On Azure
Functions the Durable HTTP status API shows a workflow (see README, Workflows).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable, TextIO

from ..workflows.listing import DEFAULT_LIMIT, recent, status_named
from .common import add_connection_argument, parse_duration
from .exits import OK, USAGE, exit_code_for  # noqa: E402


def _read_history(args: argparse.Namespace, err: TextIO, doing: Callable[[str], str],
                  read: Callable[[Any], Any]) -> tuple[Any, Any] | int:
    """``(store, read(store))`` for the history table of ``--connection``/``--table``; or, having said in one
    line what went wrong (``doing(table)`` says what it was doing), the exit status."""
    from ..errors import ConfigurationError
    from ..storage.connection import resolve_connection
    from ..storage.diagnosis import storage_problem, storage_target
    from ..workflows.history import HistoryStore
    from .common import connection_origin

    try:
        connection = resolve_connection(args.connection)
        store = HistoryStore(connection.table_service(), args.table)
    except (ConfigurationError, ValueError) as exc:
        print(f"azjobs: {exc}", file=err)
        return USAGE
    try:
        return store, read(store)
    except Exception as exc:
        code = exit_code_for(exc)  # a bug raises here, with its traceback
        # The table endpoint it tried, in the words every command uses (the worker's included).
        target = storage_target(connection, connection_origin(args.connection, connection), args.connection, "table")
        print(f"azjobs: {storage_problem(exc, target, doing(store.table))}", file=err)
        return code


def _list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from datetime import datetime, timezone

    if args.limit < 1:
        print("azjobs workflow list: --limit must be 1 or more", file=err)
        return USAGE
    since = datetime.now(timezone.utc) - args.since if args.since else None
    read = _read_history(args, err, lambda table: f"listing workflows in table {table}",
                         lambda store: recent(store, since=since, status=args.status, limit=args.limit))
    if isinstance(read, int):
        return read
    store, items = read
    if args.json:
        for item in items:
            print(json.dumps(item, ensure_ascii=False), file=out)
        return OK
    if not items:
        which = f"{args.status} " if args.status else ""
        when = f" since {args.since}" if args.since else ""
        print(f"no {which}workflows{when} in table {store.table}", file=out)
        return OK
    rows = [("ID", "STATUS", "CREATED", "FINISHED")] + [
        (item["id"], item["status"], item["created_at"] or "-", item["finished_at"] or "-") for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3], file=out)
    return OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azjobs workflow", description="Inspect workflows run by the azjobs worker.")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="a workflow's status, steps and results")
    status.add_argument("id", help="the workflow id (handle.id)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    add_connection_argument(status)
    status.add_argument("--table", metavar="NAME", help="history table (default $AZJOBS_WORKFLOWS_TABLE or azjobsworkflows)")
    listing = commands.add_parser("list", help="recent workflows, newest first: id, status, created, finished")
    listing.add_argument("--status", type=_status, metavar="STATUS",
                         help="only workflows in this status: Pending, Running, Completed or Failed")
    listing.add_argument("--since", type=parse_duration, metavar="DURATION",
                         help="only those enqueued or started this recently (90s, 30m, 12h, 7d, 2w)")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                         help=f"at most N (default {DEFAULT_LIMIT})")
    listing.add_argument("--json", action="store_true", help="one JSON object per workflow")
    add_connection_argument(listing)
    listing.add_argument("--table", metavar="NAME",
                         help="history table (default $AZJOBS_WORKFLOWS_TABLE or azjobsworkflows)")
    return parser


def _status(text: str) -> str:
    try:
        return status_named(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str], *, out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        return _list(args, out, err)
    from ..workflows.handle import WorkflowNotFoundError
    from ..workflows.history import find, id_problem

    why = id_problem(args.id)
    if why is not None:  # never sent to the table
        print(f"azjobs: {WorkflowNotFoundError(args.id, why=why)}", file=err)
        return USAGE
    read = _read_history(args, err, lambda table: f"reading workflow {args.id} from table {table}",
                         lambda store: find(store, args.id))
    if isinstance(read, int):
        return read
    store, info = read
    if info is None:
        print(f"azjobs: {WorkflowNotFoundError(args.id, store.table)}", file=err)
        return USAGE
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False), file=out)
        return OK
    print(render(info), file=out)
    return OK


def render(info: dict[str, Any]) -> str:
    lines = [f"workflow {info['id']}: {info['status']}",
             f"created {info.get('created_at') or '-'}, finished {info.get('finished_at') or '-'}",
             f"steps: {info['done']} done, {info['running']} running, {info['failed']} failed "
             f"({info.get('attempts', len(info['steps']))} attempt(s)); {info.get('sleeps', info['timers'])} sleep(s), "
             f"{info.get('retry_waits', 0)} retry wait(s); history {info['history_length']} events"]
    for step in info["steps"]:
        detail = {"done": lambda s: f"-> {_short(s['result'])}", "failed": lambda s: f"!! {_first(s['error'])}",
                  "retrying": lambda s: f"!! {_first(s['error'])} (tries again)",
                  "running": lambda s: "..."}[step["state"]](step)
        tries = step.get("attempts", 1)
        attempts = f"{tries} attempts" if tries > 1 else "1 attempt"
        lines.append(f"  {step['step'] or step['task']:<8} {step['job']:<30} {step['state']:<8} {attempts:<11} "
                     f"{detail}")
    if info["status"] == "Completed":
        lines.append(f"output: {_short(info['output'], 400)}")
    elif info["error"]:
        lines.append(f"error: {info['error']}")
    return "\n".join(lines)


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 3] + "..."


def _first(text: str | None) -> str:
    return (text or "").splitlines()[0] if text else ""


__all__ = ["main", "render"]
