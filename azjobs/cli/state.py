"""``azjobs status JOB_ID`` and ``azjobs state prune``: job state from the command line.

Exit status, as for the rest of ``azjobs``: 0 done; 1 not found or storage failed; 2 usage
error or rejected credentials.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from ..errors import AzjobsError, ConfigurationError
from ..model.secrets import RedactingStream
from ..state.errors import JobNotFoundError, StateUnavailable
from ..state.record import JobRecord
from ..state.entities import DEFAULT_TABLE, TABLE_SETTING, default_table, id_problem
from ..state.store import StateStore
from ..storage.connection import resolve_connection
from ..storage.diagnosis import storage_problem, storage_target
from .common import add_connection_argument, connection_origin, parse_duration
from .exits import exit_code_for

from .exits import FAILED, OK, USAGE  # noqa: E402


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_connection_argument(common)
    common.add_argument("--table", default=None,
                        help=f"the state table (default: ${TABLE_SETTING}, else {DEFAULT_TABLE})")
    return common


def build_status_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azjobs status", parents=[_common()],
                                     description="Show what became of a job (needs job state on when it was enqueued).",
                                     epilog="exit status: 0 found; 1 no such job or storage failed; 2 usage error")
    parser.add_argument("job_id", help="the id enqueue returned")
    parser.add_argument("--json", action="store_true", help="the record as one JSON document")
    return parser


def build_state_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azjobs state", description="Manage the job state table.",
                                     epilog="exit status: 0 done; 1 storage failed; 2 usage error")
    sub = parser.add_subparsers(dest="command", required=True)
    prune = sub.add_parser("prune", parents=[_common()],
                           help="delete finished records past their retention (or not updated for --older-than) "
                                "and expired unique keys")
    prune.add_argument("--older-than", type=parse_duration, metavar="DURATION",
                       help="delete records not updated for this long (90s, 30m, 12h, 7d, 2w); default: those past "
                            "the retention they were written with")
    prune.add_argument("--include-unfinished", action="store_true",
                       help="also delete READY, RUNNING and RETRYING records (a job delayed or still running loses "
                            "its record), and expired unique keys whose job is not finished")
    prune.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    return parser


def _when(moment: datetime | None) -> str:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else "-"


def _short(text: str, width: int = 2000) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def show(record: JobRecord, out: Any) -> None:
    lines = [
        f"job           {record.job}",
        f"id            {record.id}",
        f"status        {record.status.value}",
        f"queue         {record.queue or '-'}",
        f"enqueued      {_when(record.enqueued_at)}",
        f"started       {_when(record.started_at)}",
        f"last attempt  {_when(record.last_attempted_at)}",
        f"finished      {_when(record.finished_at)}",
        f"attempts      {record.attempts}" + (f"  (workers: {', '.join(record.worker_ids)})" if record.worker_ids else ""),
        "arguments     " + (record.arguments_note or
                             _short(json.dumps({'args': record.args, 'kwargs': record.kwargs}, ensure_ascii=False), 500)),
    ]
    if record.status.value == "SUCCESSFUL":
        lines.append(f"return value  {_short(json.dumps(record.return_value, ensure_ascii=False))}")
    for number, error in enumerate(record.errors, 1):
        lines.append(f"error {number:<7} {error.exception_class_path}: {error.message}")
    print("\n".join(lines), file=out)
    if record.errors and record.errors[-1].traceback:
        print("last traceback:\n" + record.errors[-1].traceback.rstrip(), file=out)


def _store(args: argparse.Namespace, store: StateStore | None) -> StateStore:
    if store is not None:
        return store
    return StateStore.from_connection(resolve_connection(args.connection), args.table or default_table())


def _storage_failure(prog: str, args: argparse.Namespace, store: StateStore | None, exc: BaseException,
                     err: Any) -> int:
    """One line, in the words every command uses, naming the table endpoint that was tried."""
    cause = exc.__cause__ if isinstance(exc, StateUnavailable) and exc.__cause__ is not None else exc
    table = f"state table {store.table_name}" if store is not None else "the state table"
    doing = f"reading job {args.job_id} from {table}" if getattr(args, "job_id", None) else f"pruning {table}"
    connection = resolve_connection(args.connection)
    target = storage_target(connection, connection_origin(args.connection, connection), args.connection, "table")
    print(f"{prog}: {storage_problem(cause, target, doing)}", file=err)
    return exit_code_for(cause)


def _run(prog: str, args: argparse.Namespace, store: StateStore | None, act, err: Any) -> int:
    try:
        store = _store(args, store)
    except ConfigurationError as exc:
        print(f"{prog}: {exc}", file=err)
        return USAGE
    try:
        return act(store)
    except StateUnavailable as exc:
        return _storage_failure(prog, args, store, exc, err)
    except AzjobsError as exc:
        print(f"{prog}: {exc}", file=err)
        return exit_code_for(exc)
    except Exception as exc:
        exit_code_for(exc)  # a bug raises here, with its traceback
        return _storage_failure(prog, args, store, exc, err)
    finally:
        store.close()


def status_main(argv: list[str], *, store: StateStore | None = None, out: Any = None, err: Any = None) -> int:
    """``azjobs status JOB_ID [--json]``."""
    parser = build_status_parser()
    args = parser.parse_args(argv)
    if not args.job_id.strip():
        parser.error("JOB_ID is empty: give the id enqueue returned")
    out, err = RedactingStream(out or sys.stdout), RedactingStream(err or sys.stderr)

    def act(store: StateStore) -> int:
        record = store.get(args.job_id)
        if record is None:
            problem = JobNotFoundError(args.job_id, store.table_name, why=id_problem(args.job_id))
            # Four ids name one job (job, message, poison message, poison record): say which one this takes.
            message = (f"{problem}. It takes the job id ({args.job_id!r} was given): what enqueue returned, the "
                       "JOB ID column of `azjobs poison list`, the job_id of a log line; a message id, a poison "
                       "message id or a record id is not one")
            print(f"azjobs status: {message}", file=err)
            if args.json:  # a script reading stdout gets a document either way
                print(json.dumps({"error": "not_found", "id": args.job_id, "table": store.table_name,
                                  "message": message}, indent=2, ensure_ascii=False), file=out)
            return FAILED
        if args.json:
            print(json.dumps(record.to_dict(), indent=2, ensure_ascii=False), file=out)
        else:
            show(record, out)
        return OK

    return _run("azjobs status", args, store, act, err)


def state_main(argv: list[str], *, store: StateStore | None = None, out: Any = None, err: Any = None) -> int:
    """``azjobs state prune [--older-than DURATION] [--include-unfinished] [--dry-run]``."""
    args = build_state_parser().parse_args(argv)
    out, err = RedactingStream(out or sys.stdout), RedactingStream(err or sys.stderr)

    def act(store: StateStore) -> int:
        which = f"not updated for {args.older_than}" if args.older_than else "past their retention"
        if not args.include_unfinished:
            which += " (finished ones only)"
        if args.dry_run:
            items = store.prunable(args.older_than, include_unfinished=args.include_unfinished)
            for item in items:
                if item.kind == "record":
                    print(f"would delete record {item.row}  {item.name}  {item.detail}  updated "
                          f"{_when(item.updated_at)}", file=out)
                else:
                    print(f"would delete unique key {_short(item.name, 200)!r}  (job {item.detail or '-'}, expired)",
                          file=out)
            records = sum(1 for item in items if item.kind == "record")
            print(f"dry run: would prune {records} record(s) {which} and {len(items) - records} expired unique "
                  f"key(s) from table {store.table_name}; nothing was deleted", file=out)
            return OK
        items = store.prunable(args.older_than, include_unfinished=args.include_unfinished)
        records = store.remove(item for item in items if item.kind == "record")
        keys = store.remove(item for item in items if item.kind == "unique")
        print(f"pruned {records} record(s) {which} and {keys} expired unique key(s) from table {store.table_name}",
              file=out)
        return OK

    return _run("azjobs state", args, store, act, err)


def main(argv: list[str], *, out: Any = None, err: Any = None) -> int:
    """Dispatch ``status ...`` or ``state ...`` (what ``azjobs.cli`` hands over)."""
    if argv and argv[0] == "status":
        return status_main(argv[1:], out=out, err=err)
    return state_main(argv[1:], out=out, err=err)


__all__ = ["main", "parse_duration", "state_main", "status_main"]
