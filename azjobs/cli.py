"""The ``azjobs`` command: the worker (with the seed gem's flags) and queue administration.

    azjobs -q QUEUE [-q QUEUE2 ...] [-c N] [-f N] [-r SECONDS] [-i PATH ...] [--interval S] [--burst]
    azjobs --create NAME | --empty NAME | --delete NAME [--yes]
    azjobs poison ...            (inspect and replay poison queues; see ``azjobs poison --help``)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from .version import __version__
from .secrets import RedactingStream, get_logger

log = get_logger("azjobs.cli")

# Exit status of a worker that stopped because its threads were stuck in timed-out jobs.
RESTART_NEEDED = 3

EXAMPLES = """\
examples:
  azjobs -q emails -i example_jobs --burst     work the "emails" queue until it is empty
  azjobs -q emails -q images -c 8 -r 60         two queues, 8 jobs at once, 60 s leases
  azjobs -q emails -i example_jobs -p 4         four worker processes under one supervisor
  azjobs --create emails                        create a queue
  azjobs --empty emails --yes                   delete every message in a queue
  azjobs poison list emails                     inspect dead-lettered jobs

Settings come from host.json extensions.queues (batchSize, newBatchThreshold,
maxPollingInterval, visibilityTimeout, maxDequeueCount, messageEncoding), like the
Functions host, and functionTimeout (the job timeout). maxPollingInterval defaults to 1 min
as on the host, or 2 s when AZURE_FUNCTIONS_ENVIRONMENT=Development; the repository's
host.json sets 2 s explicitly.
Flags override host.json. The connection comes from the app setting named by
--connection (AzureWebJobsStorage), or local.settings.json, or Azurite by default.
SIGTERM/SIGINT stop gracefully; a second signal stops at once.
With -p N (or FUNCTIONS_WORKER_PROCESS_COUNT=N) N worker processes run under a supervisor that
forwards those signals and restarts a process that dies.
"""


def _positive_int(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def _seconds(minimum: float, strict: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
        if value != value or value in (float("inf"),) or value < minimum or (strict and value <= minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum:g} seconds, got {text}")
        return value

    return parse


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value == -1:
        return -1.0
    if value != value or value in (float("inf"),) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, or -1 for no timeout; got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azjobs",
        description="Work azjobs jobs from Azure Storage queues (as the Functions host would), or manage queues.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    work = parser.add_argument_group("worker")
    work.add_argument("-q", "--queue", action="append", default=[], metavar="QUEUE",
                      help="queue to work; repeat for several queues (each gets its own fetch loop and back-off)")
    work.add_argument("-c", "--concurrency", type=_positive_int(1), metavar="N",
                      help="jobs run at once (default: host.json batchSize + newBatchThreshold)")
    work.add_argument("-f", "--fetch", type=_positive_int(1, 32), metavar="N",
                      help="messages per receive call, 1..32 (default: host.json batchSize, 16, or -c if smaller)")
    work.add_argument("-r", "--retry", type=_seconds(1), default=30.0, metavar="SECONDS",
                      help="lease: how long a fetched message stays hidden; renewed at half while its job runs "
                           "(default 30)")
    work.add_argument("-i", "--include", action="append", default=[], metavar="PATH",
                      help="file, package directory or dotted module to import so its jobs register; repeatable "
                           "(default: ./function_app.py if present)")
    work.add_argument("--interval", type=_seconds(0), default=0.0, metavar="SECONDS",
                      help="minimum time between receive calls per queue (rate limit; default 0)")
    work.add_argument("--burst", action="store_true", help="drain the queues, finish in-flight jobs, exit 0")
    work.add_argument("--grace", type=_seconds(0), default=30.0, metavar="SECONDS",
                      help="on SIGTERM/SIGINT, how long running jobs may take to finish (default 30)")
    work.add_argument("--timeout", type=_timeout, metavar="SECONDS",
                      help="job timeout: a job running longer is abandoned and its message released, as the host "
                           "does at functionTimeout (default: host.json functionTimeout, else 30 min; -1: none)")
    work.add_argument("--host-json", metavar="PATH",
                      help="host.json to read queue settings from (default: ./host.json if present)")
    work.add_argument("-p", "--processes", type=_positive_int(1, 64), metavar="N",
                      help="worker processes, 1..64: N > 1 runs N workers under a supervisor that restarts one "
                           "that dies (default: FUNCTIONS_WORKER_PROCESS_COUNT, else 1)")

    admin = parser.add_argument_group("queue administration")
    admin.add_argument("--create", nargs="?", const=True, metavar="NAME",
                       help="create queue NAME; with -q and no NAME, create the worked queues if missing")
    admin.add_argument("-e", "--empty", metavar="NAME", help="delete every message in queue NAME (cannot be undone)")
    admin.add_argument("-d", "--delete", metavar="NAME", help="delete queue NAME (cannot be undone)")
    admin.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation (--empty, --delete)")

    general = parser.add_argument_group("general")
    general.add_argument("--connection", default="AzureWebJobsStorage", metavar="SETTING",
                         help="app setting holding the storage connection (default AzureWebJobsStorage)")
    general.add_argument("-v", "--verbose", action="count", default=0, help="debug logging (-vv: Azure SDK too)")
    general.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format")
    general.add_argument("--version", action="version", version=f"azjobs {__version__}")
    return parser


# -- imports -----------------------------------------------------------------
def import_path(path: str) -> None:
    """Import a file, a package directory or a dotted module so its jobs register."""
    target = Path(path)
    if target.suffix == ".py" and target.is_file() or target.is_dir():
        target = target.resolve()
        if target.is_dir() and not (target / "__init__.py").is_file():
            raise ImportError(f"{path} is a directory but not a package (no __init__.py)")
        parent = str(target.parent)
        if parent not in sys.path:
            sys.path.insert(0, parent)
        importlib.import_module(target.stem if target.is_file() else target.name)
        return
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    importlib.import_module(path)


def load_jobs(includes: list[str], err: TextIO) -> bool:
    """Import ``-i`` targets, or ./function_app.py by default; False (after an error) on failure."""
    if includes:
        for path in includes:
            try:
                import_path(path)
            except Exception as exc:
                print(f"azjobs: cannot import {path!r}: {type(exc).__name__}: {exc}", file=err)
                return False
        return True
    if not Path("function_app.py").is_file():
        return True
    try:
        import_path("function_app.py")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "azure" and "functions" in (exc.name or ""):
            print("azjobs: ./function_app.py needs the azure-functions package, which is not installed. "
                  "Install it (pip install 'azjobs[functions]') or name your jobs module with -i, "
                  "e.g. `azjobs -q QUEUE -i example_jobs`.", file=err)
            return False
        print(f"azjobs: cannot import ./function_app.py: {exc}; name your jobs module with -i", file=err)
        return False
    except Exception as exc:
        print(f"azjobs: cannot import ./function_app.py: {type(exc).__name__}: {exc}; "
              "name your jobs module with -i", file=err)
        return False
    return True


# -- administration ------------------------------------------------------------
def confirm(question: str, assume_yes: bool, stdin: TextIO, err: TextIO) -> bool:
    """Ask on a terminal; refuse on a non-interactive stdin without --yes."""
    if assume_yes:
        return True
    if not stdin.isatty():
        print(f"azjobs: refusing to {question} without confirmation: stdin is not a terminal; pass --yes",
              file=err)
        return False
    err.write(f"Really {question}? This cannot be undone. [y/N] ")
    err.flush()
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _admin(args: argparse.Namespace, client: Any, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    from .client import _storage_error

    if isinstance(args.create, str):
        created = client.ensure_queue(args.create)
        print(f"queue {args.create} {'created' if created else 'already exists'}", file=out)
    for name, verb in ((args.empty, "empty"), (args.delete, "delete")):
        if name is None:
            continue
        if not confirm(f"{verb} queue {name}", args.yes, stdin, err):
            return 1
        queue_client = client.queue(name)
        try:
            if verb == "empty":
                queue_client.clear_messages()
                print(f"queue {name} emptied", file=out)
            else:
                queue_client.delete_queue()
                print(f"queue {name} deleted", file=out)
        except ResourceNotFoundError:
            print(f"azjobs: queue {name!r} does not exist", file=err)
            return 1
        except Exception as exc:
            print(f"azjobs: {_storage_error(exc, name)}", file=err)
            return 1
    return 0


# -- the worker ----------------------------------------------------------------
# A second signal within this long of the first is the same stop arriving twice (systemd's
# control-group kill and a supervisor both signal a worker), not a request to force it.
SAME_STOP_S = 1.0


def _install_signals(worker: Any, clock: Callable[[], float] = time.monotonic) -> Callable[[], None]:
    """SIGTERM/SIGINT stop gracefully, a second one (a second later or more) forces; returns a
    function restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    first: list[float] = []

    def handle(signum: int, frame: Any) -> None:
        now = clock()
        if not first:
            first.append(now)
        worker.stop(force=now - first[0] >= SAME_STOP_S)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _settings(args: argparse.Namespace):
    from .settings import QueueSettings

    return QueueSettings.load(args.host_json).for_environment()


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the command; returns the exit code (argparse errors exit 2 through SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Nothing the command prints shows a credential (an import error can carry a SAS URL).
    stdin, out, err = stdin or sys.stdin, RedactingStream(stdout or sys.stdout), RedactingStream(stderr or sys.stderr)
    if argv and argv[0] == "poison":
        try:
            poison_cli = importlib.import_module("azjobs.poison_cli")
        except ModuleNotFoundError as exc:
            if exc.name != "azjobs.poison_cli":
                raise
            print("azjobs: the `poison` command is not available in this installation "
                  "(module azjobs.poison_cli is missing)", file=err)
            return 2
        return poison_cli.main(argv[1:], out=out, err=err)

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.queue and args.create in (None, True) and args.empty is None and args.delete is None:
        parser.error("nothing to do: give -q QUEUE to work, or --create/--empty/--delete NAME")
    if args.create is True and not args.queue:
        parser.error("--create needs a NAME (or -q QUEUE to create the worked queues)")
    from . import supervisor

    try:
        processes = supervisor.process_count(args.processes) if args.queue else 1
    except ValueError as exc:
        parser.error(str(exc))
    if processes > 1 and (args.empty is not None or args.delete is not None):
        parser.error("--empty/--delete must run once: not with several worker processes (-p or "
                     f"{supervisor.COUNT_ENV}); run them on their own first")

    from . import logs

    handler = logs.setup(args.verbose, args.log_format, err)
    supervisor.tag_child_logs(handler, args.log_format)
    try:
        if processes > 1:
            return supervisor.supervise(args, argv, parser, processes, err, check=lambda: _settings(args))
        return _run(args, stdin, out, err)
    finally:
        handler.flush()
        logging.getLogger().removeHandler(handler)


def _run(args: argparse.Namespace, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    from .client import Client
    from .connection import resolve_connection
    from .errors import AzjobsError, ConfigurationError, QueueNotFoundError

    try:
        settings = _settings(args)
        client = Client(resolve_connection(args.connection), settings=settings)
    except ConfigurationError as exc:
        print(f"azjobs: {exc}", file=err)
        return 2
    try:
        code = _admin(args, client, stdin, out, err)
        if code or not args.queue:
            return code
        if args.create is True:
            for name in args.queue:
                if client.ensure_queue(name):
                    print(f"queue {name} created", file=out)
        if not load_jobs(args.include, err):
            return 1
        return _work(args, client, settings, err)
    except QueueNotFoundError as exc:
        print(f"azjobs: {exc} (or pass --create)", file=err)
        return 1
    except AzjobsError as exc:
        print(f"azjobs: {exc}", file=err)
        return 1
    finally:
        client.close()


def _work(args: argparse.Namespace, client: Any, settings: Any, err: TextIO) -> int:
    from .core import Executor
    from .registry import registry
    from .worker import Worker

    for name in args.queue:
        if not registry.jobs_for(name):
            log.warning("no registered job declares queue %s; messages naming a job not imported here are "
                        "retried, then dead-lettered (import your jobs with -i)", name,
                        extra={"action": "no_jobs_for_queue", "queue": name})
    timeout: Any = True if args.timeout is None else (None if args.timeout == -1 else args.timeout)
    worker = Worker(
        args.queue, client=client, executor=Executor(client=client, settings=settings),
        concurrency=args.concurrency, fetch=args.fetch, lease=args.retry, interval=args.interval,
        burst=args.burst, grace=args.grace, timeout=timeout,
    )
    restore = _install_signals(worker)
    try:
        stats = worker.run()
    finally:
        restore()
    if stats.restart_needed:
        return RESTART_NEEDED
    return 1 if stats.forced or stats.abandoned else 0


__all__ = ["build_parser", "confirm", "import_path", "load_jobs", "main"]
