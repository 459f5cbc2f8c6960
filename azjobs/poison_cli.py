"""Poison tooling: list, show, replay and purge what landed in ``<queue>-poison``.

``azjobs poison list QUEUE [--json] [--limit N]``, ``azjobs poison show QUEUE ID``,
``azjobs poison requeue QUEUE (--id ID ... | --all)``, ``azjobs poison purge QUEUE [--yes]``.
QUEUE is the job queue; the tooling works on its ``-poison`` twin. ID is the poison
message id, the record id or the job id (any prefix of 8+ characters that is unique).

Replaying is safe to repeat: a poison message is deleted only after its copy is back on
the job queue, so a crash in between leaves a duplicate, never a loss.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from .client import Client
from .errors import AzjobsError
from .payload import PayloadError
from .poison import PoisonRecord
from .queue_names import poison_queue_name
from .secrets import RedactingStream, get_logger

log = get_logger("azjobs.poison")

PAGE = 32  # the service's receive maximum
LEASE_S = 60  # how long a message being replayed or purged stays hidden from other tooling


@dataclass
class PoisonMessage:
    """One message of a poison queue and the record it holds."""

    message_id: str
    inserted_on: Any
    dequeue_count: int
    record: PoisonRecord
    pop_receipt: str | None = None
    content: str = ""

    def matches(self, wanted: str) -> bool:
        if len(wanted) < 8:
            return wanted in (self.message_id, self.record.id, self.record.envelope_id)
        return any(value and value.startswith(wanted)
                   for value in (self.message_id, self.record.id, self.record.envelope_id))

    def to_dict(self, traceback: bool = True) -> dict[str, Any]:
        data = self.record.to_dict()
        if not traceback:
            data["error"] = {k: v for k, v in data["error"].items() if k != "traceback"}
        data["poison_message_id"] = self.message_id
        data["inserted_on"] = self.inserted_on.isoformat() if hasattr(self.inserted_on, "isoformat") else None
        data["poison_dequeue_count"] = self.dequeue_count
        return data


@dataclass
class ReplayReport:
    requeued: list[str]
    failed: list[tuple[str, str]]
    not_found: list[str]


class PoisonQueue:
    """Operations on one job queue's poison twin."""

    def __init__(self, client: Client, queue: str) -> None:
        name = poison_queue_name(queue)
        if name is None:
            raise AzjobsError(f"queue {queue!r} has no poison queue (give the job queue, not the '-poison' one)")
        self.client = client
        self.queue = queue
        self.name = name
        self._sdk = client.queue(name)

    def _record(self, content: str) -> PoisonRecord:
        return PoisonRecord.decode(content, self.client.encoding, self.queue)

    def _message(self, message: Any) -> PoisonMessage:
        return PoisonMessage(message.id, message.inserted_on, message.dequeue_count or 0,
                             self._record(message.content), getattr(message, "pop_receipt", None), message.content)

    def full(self, message: PoisonMessage) -> PoisonRecord:
        """The record with its envelope and raw body, loaded from Blob Storage for a stub."""
        record = message.record
        if record.record_ref is None:
            return record
        data = json.loads(self.client.payloads.get(record.record_ref).decode("utf-8"))
        return PoisonRecord.from_dict(data)

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
                    self._replay(message)
                except Exception as exc:
                    report.failed.append((message.message_id, str(exc)))
                    log.error("could not requeue poison message %s: %s", message.message_id, exc,
                              extra={"action": "poison_requeue_failed", "queue": self.queue})
                    continue
                handled.add(message.message_id)
                report.requeued.append(message.message_id)
                if wanted is not None and matched >= set(wanted):
                    break
        finally:
            self._release_unhandled(received, handled)
        if wanted is not None:
            report.not_found = [w for w in wanted if w not in matched]
        return report

    def _replay(self, message: PoisonMessage) -> None:
        record = self.full(message)
        envelope = record.replay_envelope()
        if envelope is not None:
            envelope = envelope.evolve(queue=self.queue)
            self.client.send(envelope)  # large arguments are claim-checked again
        else:
            text = record.replay_text(self.client.encoding)
            if text is None:
                raise AzjobsError("the record holds neither an envelope nor a body")
            self.client.send_text(self.queue, text)
        self._delete(message)
        log.info("poison message %s requeued to %s", message.message_id, self.queue,
                 extra={"action": "poison_requeued", "queue": self.queue,
                        "job": record.job, "job_id": record.envelope_id})

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
                log.warning("could not delete poison record blob %s: %s", ref, exc,
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


# -- the command ---------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azjobs poison", description="Inspect and replay poison messages.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="list poison messages with their errors")
    p_list.add_argument("queue", help="the job queue (its '-poison' twin is read)")
    p_list.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    p_list.add_argument("--limit", type=int, default=50, help="most messages to list (default 50)")
    p_show = sub.add_parser("show", help="show one poison message with its traceback")
    p_show.add_argument("queue")
    p_show.add_argument("id", help="poison message id, record id or job id")
    p_show.add_argument("--json", action="store_true")
    p_requeue = sub.add_parser("requeue", help="send poison messages back to their queue, attempts reset")
    p_requeue.add_argument("queue")
    which = p_requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", dest="ids", metavar="ID", help="a message to requeue (repeatable)")
    which.add_argument("--all", action="store_true", help="requeue every poison message")
    p_purge = sub.add_parser("purge", help="delete every poison message")
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


def _confirm(prompt: str, stdin, out) -> bool:
    if not (hasattr(stdin, "isatty") and stdin.isatty()):
        print("refusing to purge without confirmation: stdin is not a terminal (pass --yes)", file=out)
        return False
    print(prompt, end=" ", file=out, flush=True)
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")


def main(argv: list[str] | None = None, *, client: Client | None = None, stdin=None, out=None,
         err=None) -> int:
    """Run ``azjobs poison ...``; returns the exit code (0 ok, 1 partial failure or not found, 2 refused)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    out = RedactingStream(out or sys.stdout)
    err = RedactingStream(err or sys.stderr)
    stdin = stdin or sys.stdin
    client = client or Client()
    try:
        poison = PoisonQueue(client, args.queue)
    except AzjobsError as exc:
        print(f"error: {exc}", file=err)
        return 2
    if args.command == "list":
        messages = poison.scan(max(args.limit, 1))
        if args.json:
            print(json.dumps([m.to_dict() for m in messages], indent=2, ensure_ascii=False), file=out)
        elif not messages:
            print(f"{poison.name}: empty", file=out)
        else:
            _table(messages, out)
        return 0
    if args.command == "show":
        message = poison.find(args.id)
        if message is None:
            print(f"no poison message {args.id!r} in {poison.name}", file=err)
            return 1
        record = poison.full(message)
        if args.json:
            print(json.dumps({**message.to_dict(), **record.to_dict()}, indent=2, ensure_ascii=False), file=out)
        else:
            _show(message, record, out)
        return 0
    if args.command == "requeue":
        report = poison.requeue(None if args.all else args.ids)
        for message_id in report.requeued:
            print(f"requeued {message_id} to {args.queue}", file=out)
        for message_id, error in report.failed:
            print(f"failed {message_id}: {error}", file=out)
        for wanted in report.not_found:
            print(f"not found: {wanted}", file=out)
        print(f"{len(report.requeued)} requeued, {len(report.failed)} failed, {len(report.not_found)} not found",
              file=out)
        return 0 if not report.failed and not report.not_found else 1
    if args.command == "purge":
        if not args.yes:
            count = poison.count()
            if not _confirm(f"delete about {count} message(s) from {poison.name}? [y/N]", stdin, out):
                return 2
        print(f"purged {poison.purge()} message(s) from {poison.name}", file=out)
        return 0
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(main())
