"""Poison tooling: list, show, replay and purge what landed in ``<queue>-poison``.

``azjobs poison list QUEUE [--json] [--limit N]``, ``azjobs poison show QUEUE ID``,
``azjobs poison requeue QUEUE (--id ID ... | --all)``, ``azjobs poison purge QUEUE [--yes]``;
``--host-json PATH`` and ``--connection SETTING`` as for the worker.
QUEUE is the job queue; the tooling works on its ``-poison`` twin. ID is any of a job's ids:
the poison message id, the record id, the job id or the id of the message that failed (any
prefix of 8+ characters).

Replaying is safe to repeat: a poison message is deleted only after its copy is back on
the job queue, so a crash in between leaves a duplicate, never a loss. A poison record is
recognised whatever ``messageEncoding`` its writer used, and only the job inside it is
ever sent back.

A workflow's records are not requeued (refused, and left in poison): a step of a workflow
(an envelope with a ``workflow`` field, written by an older azjobs) and a failed workflow's
record (on the workflows queue's poison queue) would run a job again and resume nothing,
since the workflow already holds that step's failure; the refusal says how to run it again.

Exit status: 0 done; 1 failed or not found (a storage error, a queue or id that does not
exist, a requeue that failed); 2 usage or configuration error (rejected credentials included) or refused (bad arguments or settings, no
confirmation for ``purge``, a workflow's record to requeue).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ..errors import AzjobsError, ConfigurationError, QueueNotFoundError
from ..model.poison_record import PoisonRecord
from ..model.queue_names import POISON_SUFFIX, resolve_queue_name, validate_queue_name
from ..model.secrets import RedactingStream
from ..poison.queue import PoisonMessage, PoisonQueue, ReplayReport
from ..storage.client import Client
from ..storage.connection import resolve_connection
from ..storage.errors import storage_error_text

from .common import add_connection_argument
from .exits import FAILED, OK, USAGE, exit_code_for  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azjobs poison", description="Inspect and replay poison messages.",
        epilog="exit status: 0 done; 1 failed or not found; 2 usage error, or refused (purge not confirmed)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host-json", metavar="PATH",
                        help="host.json to read messageEncoding from, as the worker does "
                             "(default: $AZJOBS_HOST_JSON, else ./host.json if present)")
    add_connection_argument(common)
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", parents=[common], help="list poison messages with their errors")
    p_list.add_argument("queue", help="the job queue (its '-poison' twin is read)")
    p_list.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    p_list.add_argument("--limit", type=int, default=50, help="most messages to list (default 50)")
    p_show = sub.add_parser("show", parents=[common], help="show one poison message with its traceback")
    p_show.add_argument("queue")
    p_show.add_argument("id", help="the poison message id, record id, job id or the failed message's id")
    p_show.add_argument("--json", action="store_true")
    p_requeue = sub.add_parser("requeue", parents=[common],
                               help="send poison messages back to their queue, attempts reset")
    p_requeue.add_argument("queue")
    which = p_requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", dest="ids", metavar="ID", help="a message to requeue (repeatable)")
    which.add_argument("--all", action="store_true", help="requeue every poison message")
    p_purge = sub.add_parser("purge", parents=[common], help="delete every poison message")
    p_purge.add_argument("queue")
    p_purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return parser


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(messages: list[PoisonMessage], out) -> None:
    # The job id: what enqueue returned, what `azjobs status` and the logs use (show and requeue take any id).
    rows = [("JOB ID", "JOB", "REASON", "ATTEMPTS", "LAST FAILED", "ERROR")]
    for m in messages:
        r = m.record
        error = f"{r.error.type}: {r.error.message}" if r.error.type else r.error.message
        # A body that is no envelope has no job id: its poison message id, which show and requeue take.
        rows.append((r.envelope_id or f"message:{m.message_id}", r.job or "-", r.error.reason or "-",
                     str(r.attempts), r.last_failed_at or "-", _short(error, 70)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1], file=out)


def _show(message: PoisonMessage, record: PoisonRecord, out) -> None:
    lines = [
        f"job id          {record.envelope_id or '-'}",
        f"job             {record.job or '-'}",
        f"queue           {record.queue}",
        f"poison message  {message.message_id}",
        f"record          {record.id}",
        f"failed message  {record.message_id or '-'}",
        f"reason          {record.error.reason or '-'}",
        f"error           {record.error.type}: {record.error.message}",
        f"attempts        {record.attempts}",
        f"first failed    {record.first_failed_at or record.last_failed_at or '-'}",
        f"last failed     {record.last_failed_at or '-'}",
        f"host            {record.host or '-'}",
    ]
    if record.from_host:
        lines.append("source          poisoned by the Functions host (no error recorded by azjobs)")
    if record.envelope is not None:
        lines.append("envelope        " + record.envelope.to_json())
    elif record.raw_body is not None:
        lines.append(f"raw body ({record.raw_form}, {record.raw_body_encoding})  {_short(record.raw_body, 2000)}")
    print("\n".join(lines), file=out)
    if record.error.traceback:
        print("traceback:\n" + record.error.traceback.rstrip(), file=out)


def _confirm(prompt: str, stdin, err) -> bool | None:
    """True if confirmed; None when stdin is not a terminal (nobody to ask); False if answered no."""
    if not (hasattr(stdin, "isatty") and stdin.isatty()):
        return None
    print(prompt, end=" ", file=err, flush=True)
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _host_json_source(path: str | None) -> str:
    if path:
        return path
    if os.environ.get("AZJOBS_HOST_JSON"):
        return os.environ["AZJOBS_HOST_JSON"]
    return "./host.json" if Path("host.json").is_file() else "the default (no host.json)"


def _setup(args: argparse.Namespace, client: Client | None) -> tuple[Client, bool, str]:
    """The client to use, whether this command owns (and closes) it, and the job queue's name."""
    from ..model.settings import QueueSettings

    queue = resolve_queue_name(args.queue)
    if not queue.endswith(POISON_SUFFIX):
        validate_queue_name(queue)
    if client is not None and args.host_json is None:
        return client, False, queue
    settings = QueueSettings.load(args.host_json)
    connection = client.connection if client is not None else resolve_connection(args.connection)
    return Client(connection, settings=settings), True, queue


def main(argv: list[str] | None = None, *, client: Client | None = None, stdin=None, out=None,
         err=None) -> int:
    """Run ``azjobs poison ...``; returns the exit status: 0 done, 1 failed or not found, 2 usage error or refused."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    out = RedactingStream(out or sys.stdout)
    err = RedactingStream(err or sys.stderr)
    stdin = stdin or sys.stdin
    try:
        client, owned, queue = _setup(args, client)
    except ConfigurationError as exc:
        print(f"azjobs poison: {exc}", file=err)
        return USAGE
    try:
        try:
            client.connection  # a bad connection string is a usage error, reported before any call
            poison = PoisonQueue(client, queue)
        except ConfigurationError as exc:
            print(f"azjobs poison: {exc}", file=err)
            return USAGE
        code = _command(args, poison, stdin, out, err)
        if poison.foreign_encodings:
            others = ", ".join(sorted(poison.foreign_encodings))
            print(f"azjobs poison: note: some messages in {poison.name} are written with messageEncoding={others}, "
                  f"but this command uses messageEncoding={client.encoding} (from "
                  f"{_host_json_source(args.host_json)}); they are read either way, and requeued jobs are sent "
                  f"with messageEncoding={client.encoding}: pass --host-json with the worker's host.json if it "
                  "differs", file=err)
        return code
    except QueueNotFoundError as exc:
        print(f"azjobs poison: queue {exc.queue!r} does not exist, nor {poison.name!r} "
              f"(in {client.connection.account_name or 'this account'}): check the name", file=err)
        return FAILED
    except ConfigurationError as exc:
        print(f"azjobs poison: {exc}", file=err)
        return USAGE
    except AzjobsError as exc:
        print(f"azjobs poison: {exc}", file=err)
        return exit_code_for(exc)
    except Exception as exc:
        code = exit_code_for(exc)  # a bug raises here, with its traceback
        # Rejected credentials are a configuration error that no retry fixes: 2, as for the worker.
        print(f"azjobs poison: {storage_error_text(exc, client.connection)}", file=err)
        return code
    finally:
        if owned:
            client.close()


def _command(args: argparse.Namespace, poison: PoisonQueue, stdin, out, err) -> int:
    exists = poison.check()
    if args.command == "list":
        messages = poison.scan(max(args.limit, 1)) if exists else []
        if args.json:
            print(json.dumps([m.to_dict() for m in messages], indent=2, ensure_ascii=False), file=out)
        elif not messages:
            print(f"{poison.name}: empty", file=out)
        else:
            _table(messages, out)
        return OK
    if args.command == "show":
        message = poison.find(args.id) if exists else None
        if message is None:
            print(f"azjobs poison: no poison message {args.id!r} in {poison.name}", file=err)
            return FAILED
        record = poison.full(message)
        if args.json:
            print(json.dumps({**message.to_dict(), **record.to_dict()}, indent=2, ensure_ascii=False), file=out)
        else:
            _show(message, record, out)
        return OK
    if args.command == "requeue":
        report = poison.requeue(None if args.all else args.ids) if exists else ReplayReport(
            [], [], [] if args.all else list(args.ids))
        for message_id in report.requeued:
            note = report.notes.get(message_id)
            print(f"requeued {report.name(message_id)} to {poison.queue}" + (f" ({note})" if note else ""), file=out)
        for message_id, error in report.failed:
            print(f"failed {report.name(message_id)}: {error}", file=out)
        for message_id, why in report.refused:
            print(f"refused {report.name(message_id)}: {why}", file=out)
        for wanted in report.not_found:
            print(f"not found: {wanted}", file=out)
        print(f"{len(report.requeued)} requeued, {len(report.failed)} failed, {len(report.not_found)} not found"
              + (f", {len(report.refused)} refused (left in {poison.name})" if report.refused else ""), file=out)
        if report.failed or report.not_found:
            return FAILED
        return USAGE if report.refused else OK
    if args.command == "purge":
        if not args.yes:
            answer = _confirm(f"delete about {poison.count()} message(s) from {poison.name}? [y/N]", stdin, err)
            if answer is None:
                print("azjobs poison: refusing to purge without confirmation: stdin is not a terminal (pass --yes)",
                      file=err)
                return USAGE
            if not answer:
                print(f"azjobs poison: purge cancelled, nothing deleted from {poison.name}", file=err)
                return USAGE
        print(f"purged {poison.purge() if exists else 0} message(s) from {poison.name}", file=out)
        return OK
    return USAGE  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(main())
