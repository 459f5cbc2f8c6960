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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import AzjobsError, ConfigurationError, QueueNotFoundError
from ..model.envelope import decode_body
from ..model.poison_record import PoisonRecord, find_record, misencoded_envelope, nested_record
from ..model.queue_names import POISON_SUFFIX, poison_queue_name, resolve_queue_name, validate_queue_name
from ..model.secrets import RedactingStream, get_logger
from ..storage.client import Client, storage_error_text
from ..storage.connection import resolve_connection
from ..storage.payloads import PayloadError

log = get_logger("azjobs.poison")

PAGE = 32  # the service's receive maximum
LEASE_S = 60  # how long a message being replayed or purged stays hidden from other tooling
MAX_NESTING = 5  # records inside records (each requeued as a job and poisoned again) unwrapped on replay

OK, FAILED, USAGE = 0, 1, 2  # exit status: done; failed or not found; usage error or refused


@dataclass
class PoisonMessage:
    """One message of a poison queue and the record it holds."""

    message_id: str
    inserted_on: Any
    dequeue_count: int
    record: PoisonRecord
    pop_receipt: str | None = None
    content: str = ""
    # The messageEncoding the poison message was written in (an azjobs record is read in either).
    encoding: str = "base64"

    @property
    def ids(self) -> tuple[str, ...]:
        """Every id this job is known by: poison message, record, job, and the message that failed."""
        record = self.record
        return tuple(v for v in (self.message_id, record.id, record.envelope_id, record.message_id)
                     if isinstance(v, str) and v)

    def matches(self, wanted: str) -> bool:
        if len(wanted) < 8:
            return wanted in self.ids
        return any(value.startswith(wanted) for value in self.ids)

    def to_dict(self, traceback: bool = True) -> dict[str, Any]:
        data = self.record.to_dict()
        if not traceback:
            data["error"] = {k: v for k, v in data["error"].items() if k != "traceback"}
        data["poison_message_id"] = self.message_id
        data["inserted_on"] = self.inserted_on.isoformat() if hasattr(self.inserted_on, "isoformat") else None
        data["poison_dequeue_count"] = self.dequeue_count
        data["poison_message_encoding"] = self.encoding
        return data


@dataclass
class ReplayReport:
    requeued: list[str]
    failed: list[tuple[str, str]]
    not_found: list[str]
    notes: dict[str, str] = field(default_factory=dict)  # poison message id -> how it was sent back
    refused: list[tuple[str, str]] = field(default_factory=list)  # (poison message id, why): left in poison


class RequeueRefused(AzjobsError):
    """Requeueing this record would run a job and resume nothing (a workflow's step or failure record)."""


def workflow_refusal(message: "PoisonMessage", record: PoisonRecord) -> str | None:
    """Why the record of ``message`` is a workflow's and is not requeued; None for an ordinary job's record."""
    envelope = record.envelope
    if envelope is not None and envelope.workflow:
        workflow_id = envelope.workflow.get("id")
        return (f"it is a step of workflow {workflow_id} (job {envelope.job}), which was told the step failed when "
                f"this record was written: a requeued copy would run {envelope.job} again and resume nothing (see "
                f"`azjobs workflow status {workflow_id}`; enqueue the workflow again to run it again)")
    try:
        data = json.loads(decode_body(message.content, message.encoding))
    except Exception:
        return None
    workflow = data.get("workflow") if isinstance(data, dict) else None
    if not isinstance(workflow, dict) or not workflow.get("id"):
        return None
    step = workflow.get("step") if isinstance(workflow.get("step"), dict) else {}
    which = f" (step {step.get('path')}, {step.get('job')})" if step else ""
    return (f"it is the failure record of workflow {workflow['id']}{which}: a failed workflow resumes nothing, and "
            f"there is no job in it to send back (see `azjobs workflow status {workflow['id']}`; enqueue the workflow "
            "again, with a new id, to run it again)")


class PoisonQueue:
    """Operations on one job queue's poison twin."""

    def __init__(self, client: Client, queue: str) -> None:
        if queue.endswith(POISON_SUFFIX):
            raise ConfigurationError(f"give the job queue, not its poison queue: `{queue[: -len(POISON_SUFFIX)]}` "
                                     f"(the tooling reads {queue})")
        name = poison_queue_name(queue)
        if name is None:
            raise ConfigurationError(f"queue {queue!r} has no poison queue: its name is too long for a "
                                     f"'{POISON_SUFFIX}' twin")
        self.client = client
        self.queue = queue
        self.name = name
        self._sdk = client.queue(name)
        # Encodings other than the client's that poison messages were found in (a worker set up differently).
        self.foreign_encodings: set[str] = set()

    def _record(self, content: str) -> tuple[PoisonRecord, str]:
        found = find_record(content, self.client.encoding)
        if found is not None:
            return found
        return PoisonRecord.decode(content, self.client.encoding, self.queue), self.client.encoding

    def _message(self, message: Any) -> PoisonMessage:
        record, encoding = self._record(message.content)
        if encoding != self.client.encoding:
            self.foreign_encodings.add(encoding)
        return PoisonMessage(message.id, message.inserted_on, message.dequeue_count or 0, record,
                             getattr(message, "pop_receipt", None), message.content, encoding)

    def full(self, message: PoisonMessage) -> PoisonRecord:
        """The record with its envelope and raw body, loaded from Blob Storage for a stub."""
        return self._full_record(message.record)

    def _full_record(self, record: PoisonRecord) -> PoisonRecord:
        if record.record_ref is None:
            return record
        data = json.loads(self.client.payloads.get(record.record_ref).decode("utf-8"))
        return PoisonRecord.from_dict(data)

    def exists(self) -> bool:
        """True if the poison queue exists (the host and azjobs create it at the first poisoning)."""
        return _queue_exists(self._sdk)

    def job_queue_exists(self) -> bool:
        return _queue_exists(self.client.queue(self.queue))

    def check(self) -> bool:
        """Raise QueueNotFoundError when neither the job queue nor its poison queue exists (a typo
        must not look like an empty poison queue); True if the poison queue exists."""
        if self.exists():
            return True
        if not self.job_queue_exists():
            raise QueueNotFoundError(self.queue)
        return False

    def peek(self, limit: int = PAGE) -> list[PoisonMessage]:
        """The first messages, without touching them (at most 32: the service's peek limit)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return [self._message(m) for m in self._sdk.peek_messages(max_messages=min(max(limit, 1), PAGE))]
        except ResourceNotFoundError:
            return []

    def count(self) -> int:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return int(self._sdk.get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return 0

    def _leased(self, received: list[PoisonMessage]) -> Iterator[PoisonMessage]:
        """Every visible message, each hidden for LEASE_S while the caller handles it.

        Each received page is added to ``received`` as a whole, so a caller that stops
        early can release what it did not handle (``_release_unhandled``).
        """
        from azure.core.exceptions import ResourceNotFoundError

        seen: set[str] = set()
        while True:
            try:
                batch = list(self._sdk.receive_messages(messages_per_page=PAGE, max_messages=PAGE,
                                                        visibility_timeout=LEASE_S))
            except ResourceNotFoundError:
                return
            fresh = [self._message(m) for m in batch if m.id not in seen]
            if not fresh:
                return
            seen.update(m.message_id for m in fresh)
            received.extend(fresh)
            yield from fresh

    def _release_unhandled(self, received: list[PoisonMessage], handled: set[str]) -> None:
        """Make the leased messages that were not deleted visible again (at the end, so no page re-takes them)."""
        for message in received:
            if message.message_id not in handled:
                try:
                    self._sdk.update_message(message.message_id, message.pop_receipt, visibility_timeout=0)
                except Exception as exc:  # it reappears on its own when the lease ends
                    log.debug("could not release poison message %s: %s", message.message_id, exc)

    def scan(self, limit: int) -> list[PoisonMessage]:
        """Up to ``limit`` messages: peeked when 32 suffice, else paged with a lease and released."""
        if limit <= PAGE or self.count() <= PAGE:
            return self.peek(limit)
        received: list[PoisonMessage] = []
        try:
            for _ in self._leased(received):
                if len(received) >= limit:
                    break
        finally:
            self._release_unhandled(received, set())
        return received[:limit]

    def find(self, wanted: str) -> PoisonMessage | None:
        for message in self.peek(PAGE):
            if message.matches(wanted):
                return message
        received: list[PoisonMessage] = []
        try:
            for message in self._leased(received):
                if message.matches(wanted):
                    return message
        finally:
            self._release_unhandled(received, set())
        return None

    def requeue(self, ids: Sequence[str] | None = None) -> ReplayReport:
        """Send records back to the job queue (attempts reset), then delete them from poison.

        ``ids`` None means all. A record whose copy could not be sent stays in poison.
        """
        wanted = list(ids) if ids is not None else None
        report = ReplayReport([], [], [])
        matched: set[str] = set()
        received: list[PoisonMessage] = []
        handled: set[str] = set()
        try:
            for message in self._leased(received):
                hits = [w for w in wanted if message.matches(w)] if wanted is not None else ["*"]
                if not hits:
                    continue
                matched.update(hits)
                try:
                    note = self._replay(message)
                except RequeueRefused as exc:  # stays in poison, released with the unhandled ones
                    report.refused.append((message.message_id, str(exc)))
                    continue
                except Exception as exc:
                    text = str(exc) if isinstance(exc, AzjobsError) else storage_error_text(exc, self.client.connection)
                    report.failed.append((message.message_id, text))
                    log.debug("could not requeue poison message %s: %s", message.message_id, text,
                              extra={"action": "poison_requeue_failed", "queue": self.queue})
                    continue
                handled.add(message.message_id)
                report.requeued.append(message.message_id)
                if note:
                    report.notes[message.message_id] = note
                if wanted is not None and matched >= set(wanted):
                    break
        finally:
            self._release_unhandled(received, handled)
        if wanted is not None:
            report.not_found = [w for w in wanted if w not in matched]
        return report

    def _replay(self, message: PoisonMessage) -> str | None:
        """Send the job of one poison message back to the queue, then delete the message.

        Returns a note when the job was not sent back as it was stored (unwrapped from a
        record that had been requeued as a job, or re-encoded), else None.
        """
        record = self.full(message)
        refusal = workflow_refusal(message, record)
        if refusal is not None:
            raise RequeueRefused(refusal)
        note = self._send_back(record, message.encoding)
        self._delete(message)
        log.info("poison message %s requeued to %s", message.message_id, self.queue,
                 extra={"action": "poison_requeued", "queue": self.queue,
                        "job": record.job, "job_id": record.envelope_id})
        return note

    def _send_back(self, record: PoisonRecord, encoding: str, depth: int = 0) -> str | None:
        """Send the job ``record`` holds; ``encoding``: the one its raw body was decoded with."""
        envelope = record.replay_envelope()
        if envelope is not None:
            self.client.send(envelope.evolve(queue=self.queue))  # large arguments are claim-checked again
            return "the job inside a poison record that had been sent back as a job" if depth else None
        inner = nested_record(record)
        if inner is not None:
            if depth >= MAX_NESTING:
                raise AzjobsError(f"the record holds poison records {MAX_NESTING} levels deep; not requeued")
            return self._send_back(self._full_record(inner), encoding, depth + 1) or (
                "the job inside a poison record that had been sent back as a job")
        misencoded = misencoded_envelope(record)
        if misencoded is not None:
            envelope = misencoded.evolve(queue=self.queue, attempt=1, first_failed_at=None, due_at=None)
            self.client.send(envelope)
            return (f"re-encoded with messageEncoding={self.client.encoding}: it failed as {record.error.reason}, "
                    "sent with another messageEncoding")
        text = record.replay_text(encoding)
        if text is None:
            raise AzjobsError("the record holds neither an envelope nor a body")
        self.client.send_text(self.queue, text)
        return None

    def _delete(self, message: PoisonMessage) -> None:
        """Delete the poison message, then the blob of a large record."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._sdk.delete_message(message.message_id, message.pop_receipt)
        except ResourceNotFoundError:
            pass
        ref = message.record.record_ref
        if ref:
            try:
                self.client.payloads.delete(ref)
            except (PayloadError, Exception) as exc:
                text = str(exc) if isinstance(exc, AzjobsError) else storage_error_text(exc)
                log.warning("could not delete poison record blob %s: %s", ref, text,
                            extra={"action": "payload_delete_failed", "queue": self.queue})

    def purge(self) -> int:
        """Delete every poison message (and the blobs of large records); returns how many."""
        deleted = 0
        received: list[PoisonMessage] = []
        handled: set[str] = set()
        try:
            for message in self._leased(received):
                self._delete(message)
                handled.add(message.message_id)
                deleted += 1
        finally:
            self._release_unhandled(received, handled)
        log.info("purged %d poison message(s) from %s", deleted, self.name,
                 extra={"action": "poison_purged", "queue": self.queue, "count": deleted})
        return deleted


def _queue_exists(sdk: Any) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        sdk.get_queue_properties()
    except ResourceNotFoundError:
        return False
    return True


# -- the command ---------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azjobs poison", description="Inspect and replay poison messages.",
        epilog="exit status: 0 done; 1 failed or not found; 2 usage error, or refused (purge not confirmed)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host-json", metavar="PATH",
                        help="host.json to read messageEncoding from, as the worker does "
                             "(default: $AZJOBS_HOST_JSON, else ./host.json if present)")
    common.add_argument("--connection", default="AzureWebJobsStorage", metavar="SETTING",
                        help="app setting holding the storage connection (default AzureWebJobsStorage)")
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
    rows = [("ID", "JOB", "REASON", "ATTEMPTS", "LAST FAILED", "ERROR")]
    for m in messages:
        r = m.record
        error = f"{r.error.type}: {r.error.message}" if r.error.type else r.error.message
        rows.append((m.message_id, r.job or "-", r.error.reason or "-", str(r.attempts),
                     r.last_failed_at or "-", _short(error, 70)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1], file=out)


def _show(message: PoisonMessage, record: PoisonRecord, out) -> None:
    lines = [
        f"poison message  {message.message_id}",
        f"record          {record.id}",
        f"queue           {record.queue}",
        f"job             {record.job or '-'}  (id {record.envelope_id or '-'})",
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
        return FAILED
    except Exception as exc:
        from azure.core.exceptions import AzureError

        if not isinstance(exc, AzureError):
            raise
        print(f"azjobs poison: {storage_error_text(exc, client.connection)}", file=err)
        # Rejected credentials are a configuration error that no retry fixes: 2, as for the worker.
        return USAGE if getattr(exc, "status_code", None) in (401, 403) else FAILED
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
            print(f"requeued {message_id} to {poison.queue}" + (f" ({note})" if note else ""), file=out)
        for message_id, error in report.failed:
            print(f"failed {message_id}: {error}", file=out)
        for message_id, why in report.refused:
            print(f"refused {message_id}: {why}", file=out)
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
