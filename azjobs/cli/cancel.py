"""``azjobs cancel ID [--json]``: cancel a tracked job (``azjobs.cancel``), or a workflow (``handle.cancel()``).

A job not yet started never runs; a running one is asked to stop and becomes CANCELLED when its
run ends; a finished one is left as it is (and the command says so). Exit status: 0 cancelled,
asked to stop, or already finished; 1 the state table could not be reached; 2 no record of the
id (an untracked job: job state was off when it was enqueued, or the id is wrong), usage or
configuration error, rejected credentials.

An id with no job record is looked up as a workflow the worker runs (the history table,
``$AZJOBS_WORKFLOWS_TABLE``): one found is cancelled, its status becoming ``Terminated``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigurationError
from ..model.secrets import RedactingStream, describe
from ..state.cancel import CANCELLED, REQUESTED, cancel_job
from ..state.entities import DEFAULT_TABLE, TABLE_SETTING, default_table
from ..state.errors import JobNotFoundError, StateUnavailable
from ..state.record import JobRecord
from ..storage.client import Client
from ..storage.connection import resolve_connection
from ..storage.errors import network_reason
from ..workflows.handle import WorkflowHandle, WorkflowNotFoundError
from ..workflows.history import TERMINATED
from .common import add_connection_argument
from .exits import OK, USAGE, exit_code_for


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azjobs cancel", description="Cancel a job: not started, it never runs; running, it is asked to stop.",
        epilog="exit status: 0 cancelled or already finished; 1 storage failed; 2 no such job (untracked: job state "
               "was off when it was enqueued), usage or configuration error")
    parser.add_argument("job_id", help="the id enqueue returned")
    parser.add_argument("--json", action="store_true", help="print the record as the cancel left it, as JSON")
    add_connection_argument(parser)
    parser.add_argument("--table", default=None, help=f"the state table (default: ${TABLE_SETTING}, else {DEFAULT_TABLE})")
    return parser


def what_happened(record: JobRecord, what: str) -> str:
    """One line on what the cancel did (``what``: as ``azjobs.state.cancel.cancel_job`` says)."""
    if what == CANCELLED:
        return f"job {record.job} {record.id} CANCELLED: it does not run"
    if what == REQUESTED:
        return (f"job {record.job} {record.id} is running: asked to stop; it becomes CANCELLED when its run ends "
                "(within a few seconds for a job that checks, or an async one)")
    return f"job {record.job} {record.id} was already {record.status.value}: nothing changed"


def main(argv: list[str], *, out: Any = None, err: Any = None) -> int:
    args = build_parser().parse_args(argv)
    out, err = RedactingStream(out or sys.stdout), RedactingStream(err or sys.stderr)
    try:
        connection = resolve_connection(args.connection)
        client = Client(connection, state_table=args.table or default_table())
    except ConfigurationError as exc:
        print(f"azjobs cancel: {exc}", file=err)
        return USAGE
    try:
        record, what = cancel_job(args.job_id, client=client)
    except JobNotFoundError as exc:
        try:
            status = WorkflowHandle(args.job_id, client=client).cancel()
        except WorkflowNotFoundError:
            print(f"azjobs cancel: {exc} (and no workflow has that id)", file=err)
            return USAGE
        except Exception as problem:
            code = exit_code_for(problem)  # a bug raises here, with its traceback
            print(f"azjobs cancel: the workflow history could not be read: {describe(problem)}", file=err)
            return code
        if args.json:
            print(json.dumps({"workflow": args.job_id, "status": status}), file=out)
        elif status == TERMINATED:
            print(f"workflow {args.job_id} cancelled: {status}", file=out)
        else:
            print(f"workflow {args.job_id} had already ended: {status}; nothing changed", file=out)
        return OK
    except StateUnavailable as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        code = exit_code_for(cause)
        status = getattr(cause, "status_code", None)
        reason = network_reason(cause) if status is None else f"storage answered {status}: {describe(cause)}"
        print(f"azjobs cancel: the state table could not be reached: {reason}", file=err)
        return code
    finally:
        client.close()
    if args.json:
        print(json.dumps(record.to_dict(), indent=2, ensure_ascii=False), file=out)
    else:
        print(what_happened(record, what), file=out)
    return OK


__all__ = ["build_parser", "main", "what_happened"]
