"""``azjobs workflow status ID [--json]``: a workflow's steps, results and status from its local history.

Reads the history the ``azjobs`` worker keeps in Table Storage (a workflow enqueued but not
started yet is ``Pending``). Exit status: 0 found; 1 storage failed; 2 no such workflow (never
enqueued in that table, or an id no workflow can have), usage or configuration error. On Azure
Functions the Durable HTTP status API shows a workflow (see README, Workflows).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from .exits import OK, USAGE, exit_code_for  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azjobs workflow", description="Inspect workflows run by the azjobs worker.")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="a workflow's status, steps and results")
    status.add_argument("id", help="the workflow id (handle.id)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument("--connection", default="AzureWebJobsStorage", metavar="SETTING",
                        help="app setting with the storage connection (default AzureWebJobsStorage)")
    status.add_argument("--table", metavar="NAME", help="history table (default $AZJOBS_WORKFLOWS_TABLE or azjobsworkflows)")
    return parser


def main(argv: list[str], *, out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import ConfigurationError
    from ..storage.connection import resolve_connection
    from ..storage.diagnosis import storage_problem, storage_target
    from .common import connection_origin
    from ..workflows.handle import WorkflowNotFoundError
    from ..workflows.history import HistoryStore, find, id_problem

    why = id_problem(args.id)
    if why is not None:  # never sent to the table
        print(f"azjobs: {WorkflowNotFoundError(args.id, why=why)}", file=err)
        return USAGE
    try:
        connection = resolve_connection(args.connection)
        store = HistoryStore(connection.table_service(), args.table)
    except (ConfigurationError, ValueError) as exc:
        print(f"azjobs: {exc}", file=err)
        return USAGE
    try:
        info = find(store, args.id)
    except Exception as exc:
        code = exit_code_for(exc)  # a bug raises here, with its traceback
        # The table endpoint it tried, in the words every command uses (the worker's included).
        target = storage_target(connection, connection_origin(args.connection, connection), args.connection, "table")
        print(f"azjobs: {storage_problem(exc, target, f'reading workflow {args.id} from table {store.table}')}",
              file=err)
        return code
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
             f"steps: {info['done']} done, {info['running']} running, {info['failed']} failed; "
             f"{info['timers']} timer(s); history {info['history_length']} events"]
    for step in info["steps"]:
        detail = {"done": lambda s: f"-> {_short(s['result'])}", "failed": lambda s: f"!! {_first(s['error'])}",
                  "running": lambda s: "..."}[step["state"]](step)
        lines.append(f"  {step['step'] or step['task']:<8} {step['job']:<30} {step['state']:<8} {detail}")
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
