"""The ``azjobs`` command: the worker (with the seed gem's flags), queue administration, and ``poison``.

    azjobs -q QUEUE [-q QUEUE2 ...] [-c N] [-f N] [-r SECONDS] [-i PATH ...] [--interval S] [--burst]
    azjobs --create NAME | --empty NAME | --delete NAME [--yes]
    azjobs poison ...            (inspect and replay poison queues; see ``azjobs poison --help``)
    azjobs stats ...             (queue depths, poison depths, oldest message age; see ``azjobs stats --help``)
    azjobs limits ...            (each limit's holders now, recent starts and throttles; ``azjobs limits --help``)
    azjobs cancel JOB_ID         (cancel a tracked job; see ``azjobs cancel --help``)
    azjobs check ...             (exec probe: is the worker's --heartbeat file fresh; see ``azjobs check --help``)

Exit status, for every form: 0 done; 1 failed (a storage error, a queue that does not exist, a jobs
module that raised on import, a burst that could not finish); 2 a usage or configuration error, or
refused (a -i that does not exist, rejected credentials, no jobs registered, no confirmation); 3 the
worker needs a restart (threads stuck in timed-out jobs).
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from typing import TextIO

from ..model.secrets import RedactingStream
from .common import confirm, connection_origin, import_path, load_jobs
from .exits import FAILED, OK, RESTART_NEEDED, USAGE, ExitCode, ReaderGone
from .worker import POISON_COMMANDS, build_parser, check_queue_names


SUBCOMMANDS = ("poison", "stats", "dashboard", "status", "state", "cancel", "schedules", "check", "workflow", "limits")


class _ReaderGuard:
    """stdout that tells a closed pipe from any other BrokenPipeError (a job's socket, storage's)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError as exc:
            raise ReaderGone(*exc.args) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as exc:
            raise ReaderGone(*exc.args) from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the command; returns the exit code (argparse errors exit 2 through SystemExit).

    Output piped to a reader that stops early (``| head``) ends the command quietly, status 0."""
    real = stdout is None
    try:
        return _main(argv, stdin=stdin, stdout=_ReaderGuard(stdout or sys.stdout), stderr=stderr)
    except ReaderGone:
        if real:  # nothing more reaches the closed pipe, not even the interpreter's last flush
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass
        return OK


def _did_you_mean(word: str) -> str | None:
    """The subcommand ``word`` was probably meant to be, if it is not an option nor a worker argument."""
    if not word or word.startswith("-") or word in SUBCOMMANDS or word in POISON_COMMANDS:
        return None
    close = difflib.get_close_matches(word, SUBCOMMANDS, n=1, cutoff=0.6)
    return close[0] if close else None


def _main(argv: list[str] | None, *, stdin: TextIO | None, stdout: TextIO, stderr: TextIO | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Nothing the command prints shows a credential (an import error can carry a SAS URL).
    stdin, out, err = stdin or sys.stdin, RedactingStream(stdout), RedactingStream(stderr or sys.stderr)
    if argv and (meant := _did_you_mean(argv[0])) is not None:
        print(f"azjobs: {argv[0]!r} is not a command; did you mean `azjobs {meant}`? (see azjobs --help)", file=err)
        return USAGE
    if argv and argv[0] == "poison":
        try:
            poison_cli = importlib.import_module("azjobs.cli.poison")
        except ModuleNotFoundError as exc:
            if exc.name != "azjobs.cli.poison":
                raise
            print("azjobs: the `poison` command is not available in this installation "
                  "(module azjobs.cli.poison is missing)", file=err)
            return USAGE
        return poison_cli.main(argv[1:], out=out, err=err)
    if argv and argv[0] == "stats":
        from . import stats as stats_cli

        return stats_cli.main(argv[1:], out=out, err=err)
    if argv and argv[0] == "dashboard":
        from . import dashboard as dashboard_cli

        return dashboard_cli.main(argv[1:], out=out, err=err)

    if argv and argv[0] in ("status", "state"):  # job state (azjobs.cli.state)
        from . import state as state_cli

        return state_cli.main(argv, out=out, err=err)
    if argv and argv[0] == "cancel":
        from . import cancel as cancel_cli

        return cancel_cli.main(argv[1:], out=out, err=err)
    if argv and argv[0] == "schedules":
        from . import schedules as listing

        return listing.main(argv[1:], out=out, err=err)
    if argv and argv[0] == "limits":
        from . import limits as limits_cli

        return limits_cli.main(argv[1:], out=out, err=err)
    if argv and argv[0] == "check":  # the exec probe (azjobs.cli.check)
        from . import check as check_cli

        return check_cli.main(argv[1:], out=out, err=err)
    if argv and argv[0] == "workflow":
        from . import workflow as workflow_cli

        return workflow_cli.main(argv[1:], out=out, err=err)

    from . import worker

    return worker.run(argv, stdin, out, err)


__all__ = ["FAILED", "OK", "RESTART_NEEDED", "USAGE", "ExitCode", "build_parser", "check_queue_names", "confirm",
           "connection_origin", "import_path", "load_jobs", "main"]
