"""The ``azjobs`` command: the worker (with the seed gem's flags), queue administration, and ``poison``.

    azjobs -q QUEUE [-q QUEUE2 ...] [-c N] [-f N] [-r SECONDS] [-i PATH ...] [--interval S] [--burst]
    azjobs --create NAME | --empty NAME | --delete NAME [--yes]
    azjobs poison ...            (inspect and replay poison queues; see ``azjobs poison --help``)
    azjobs stats ...             (queue depths, poison depths, oldest message age; see ``azjobs stats --help``)
    azjobs cancel JOB_ID         (cancel a tracked job; see ``azjobs cancel --help``)
    azjobs check ...             (exec probe: is the worker's --heartbeat file fresh; see ``azjobs check --help``)

Exit status, for every form: 0 done; 1 failed (a storage error, a queue that does not exist, a jobs
module that raised on import, a burst that could not finish); 2 a usage or configuration error, or
refused (a -i that does not exist, rejected credentials, no jobs registered, no confirmation); 3 the
worker needs a restart (threads stuck in timed-out jobs).
"""

from __future__ import annotations

import importlib
import sys
from typing import TextIO

from ..model.secrets import RedactingStream
from .common import confirm, connection_origin, import_path, load_jobs
from .exits import FAILED, OK, RESTART_NEEDED, USAGE, ExitCode
from .worker import build_parser, check_queue_names


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the command; returns the exit code (argparse errors exit 2 through SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Nothing the command prints shows a credential (an import error can carry a SAS URL).
    stdin, out, err = stdin or sys.stdin, RedactingStream(stdout or sys.stdout), RedactingStream(stderr or sys.stderr)
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
