"""The ``azjobs`` command: the worker (with the seed gem's flags), queue administration, and ``poison``.

    azjobs -q QUEUE [-q QUEUE2 ...] [-c N] [-f N] [-r SECONDS] [-i PATH ...] [--interval S] [--burst]
    azjobs --create NAME | --empty NAME | --delete NAME [--yes]
    azjobs poison ...            (inspect and replay poison queues; see ``azjobs poison --help``)
    azjobs stats ...             (queue depths, poison depths, oldest message age; see ``azjobs stats --help``)

Exit status, for every form: 0 done; 1 failed (a storage error, a queue that does not exist, a jobs
module that raised on import, a burst that could not finish); 2 a usage or configuration error, or
refused (a -i that does not exist, rejected credentials, no jobs registered, no confirmation); 3 the
worker needs a restart (threads stuck in timed-out jobs).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, TextIO

from ..model.secrets import RedactingStream, get_logger
from ..version import __version__

log = get_logger("azjobs.cli")

# Exit status: one convention for every form of the command (poison_cli uses the same).
OK, FAILED, USAGE = 0, 1, 2
# Exit status of a worker that stopped because its threads were stuck in timed-out jobs.
RESTART_NEEDED = 3
MAX_VISIBILITY_S = 7 * 24 * 3600  # the service's visibility timeout maximum: 7 days
POISON_COMMANDS = ("list", "show", "requeue", "purge")

USAGE_TEXT = """\
azjobs -q QUEUE [-q QUEUE ...] [options]
       azjobs --create NAME | --empty NAME | --delete NAME [--yes]
       azjobs poison {list,show,requeue,purge} QUEUE ...
       azjobs status JOB_ID [--json] | azjobs state prune [--older-than DURATION]
       azjobs stats [-q QUEUE ...] [--json] [--watch [SECONDS]]
       azjobs schedules [-i PATH ...] [--json]
       azjobs dashboard [--port PORT] [--host ADDRESS]
       azjobs workflow status ID [--json]"""

DESCRIPTION = """\
Work azjobs jobs from Azure Storage queues (as the Functions host would), or manage queues.

commands:
  azjobs -q QUEUE ...    the worker: work the queues until stopped (--burst: until empty)
  azjobs --create NAME   queue administration: --create, --empty, --delete (then exit)
  azjobs poison ...      dead-lettered jobs: list, show, requeue, purge (azjobs poison --help)
  azjobs status JOB_ID   what became of a job (job state; azjobs state prune removes old records)
  azjobs stats ...       per queue: depth, poison depth, oldest message age (azjobs stats --help)
  azjobs schedules       periodic jobs: next fire times and the last recorded fire (azjobs schedules --help)
  azjobs dashboard ...   the web dashboard: queues, poison browser (azjobs dashboard --help)
  azjobs workflow ...    workflows run by the worker: status ID [--json]"""

EXAMPLES = """\
examples:
  azjobs -q emails -i example_jobs --burst     work the "emails" queue until it is empty
  azjobs -q emails -q images -c 8 -r 60         two queues, 8 jobs at once, 60 s leases
  azjobs -q emails -i example_jobs --create     create the queue if missing, then work it
  azjobs -q emails -i example_jobs -p 4         four worker processes under one supervisor
  azjobs --create emails                        create a queue (and exit)
  azjobs --empty emails --yes                   delete every message in a queue
  azjobs poison list emails                     inspect dead-lettered jobs
  azjobs schedules -i example_periodic          periodic jobs: next fire times, last fire

Settings come from host.json extensions.queues (batchSize, newBatchThreshold,
maxPollingInterval, visibilityTimeout, maxDequeueCount, messageEncoding), like the
Functions host, and functionTimeout (the job timeout). maxPollingInterval defaults to 1 min
as on the host, or 2 s when AZURE_FUNCTIONS_ENVIRONMENT=Development; the repository's
host.json sets 2 s explicitly.
Flags override host.json. The connection comes from the app setting named by
--connection (AzureWebJobsStorage), or local.settings.json, or Azurite by default.
Rejected credentials (a wrong key, an expired SAS) stop the worker with status 2; storage
that does not answer is retried until it does (--burst gives up after --burst-timeout).
SIGTERM/SIGINT stop gracefully; a second signal stops at once.
With -p N (or FUNCTIONS_WORKER_PROCESS_COUNT=N) N worker processes run under a supervisor that
forwards those signals and restarts a process that dies.

exit status: 0 done; 1 failed (storage error, queue not found, a jobs module that raised on
import, a --burst that could not finish); 2 usage or configuration error (bad flags or queue
names, a -i that does not exist, rejected credentials), or refused (no jobs registered, not
confirmed); 3 the worker needs a restart (threads stuck in timed-out jobs).
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


def _lease(text: str) -> float:
    """-r: 1 s up to the service's 7-day visibility maximum."""
    value = _seconds(1)(text)
    if value > MAX_VISIBILITY_S:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_VISIBILITY_S} seconds (7 days, the longest a message can stay hidden), got {text}")
    return value


def _queue_name(text: str, flag: str, *, needs_poison: bool = True) -> str:
    """A queue name as the job decorators check it; a ``%AppSetting%`` expression is resolved from the environment.

    Raises ConfigurationError with one line for the user.
    """
    from ..errors import ConfigurationError
    from ..model.queue_names import is_app_setting_expression, resolve_queue_name, validate_queue_name

    if not text.strip():
        raise ConfigurationError(f"{flag} {text!r}: a queue name cannot be empty")
    try:
        if is_app_setting_expression(text):
            return resolve_queue_name(text)
        return validate_queue_name(text, needs_poison=needs_poison)
    except ConfigurationError as exc:
        hint = ""
        if is_app_setting_expression(text) and text[1:-1] not in os.environ:
            hint = f"; set it in the environment (export {text[1:-1]}=<queue>), or give the queue name itself"
        raise ConfigurationError(f"{flag} {text}: {exc}{hint}") from None


def check_queue_names(args: argparse.Namespace) -> None:
    """Check (and resolve) the queue names given with -q, --create, --empty and --delete, in place.

    Raises ConfigurationError saying which one is wrong and why.
    """
    args.queue = [_queue_name(name, "-q") for name in args.queue]
    if isinstance(args.create, str):
        args.create = _queue_name(args.create, "--create", needs_poison=False)
    if args.empty is not None:
        args.empty = _queue_name(args.empty, "--empty", needs_poison=False)
    if args.delete is not None:
        args.delete = _queue_name(args.delete, "--delete", needs_poison=False)


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
        prog="azjobs", usage=USAGE_TEXT, description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    work = parser.add_argument_group("worker")
    work.add_argument("-q", "--queue", action="append", default=[], metavar="QUEUE",
                      help="queue to work; repeat for several queues (each gets its own fetch loop and back-off). "
                           "Checked as the job decorators check it; %%SETTING%% is read from the environment")
    work.add_argument("-c", "--concurrency", type=_positive_int(1), metavar="N",
                      help="jobs run at once (default: host.json batchSize + newBatchThreshold)")
    work.add_argument("-f", "--fetch", type=_positive_int(1, 32), metavar="N",
                      help="messages per receive call, 1..32 (default: host.json batchSize, 16, or -c if smaller)")
    work.add_argument("-r", "--retry", type=_lease, default=30.0, metavar="SECONDS",
                      help="lease: how long a fetched message stays hidden, 1..604800 (7 days); renewed at half "
                           "while its job runs (default 30)")
    work.add_argument("-i", "--include", action="append", default=[], metavar="PATH",
                      help="file, package directory or dotted module to import so its jobs register; repeatable "
                           "(default: ./function_app.py if present)")
    work.add_argument("--interval", type=_seconds(0), default=0.0, metavar="SECONDS",
                      help="minimum time between receive calls per queue (rate limit; default 0)")
    work.add_argument("--burst", action="store_true",
                      help="drain the queues, finish in-flight jobs, exit 0 (1 if storage stayed unreachable "
                           "past --burst-timeout, 2 if it rejected the credentials)")
    work.add_argument("--burst-timeout", type=_seconds(0, strict=True), default=30.0, metavar="SECONDS",
                      help="with --burst: give up (exit 1) when storage stays unreachable this long (default 30)")
    work.add_argument("--allow-no-jobs", action="store_true",
                      help="start even when no job is registered (nothing imported declares one); every message "
                           "is then retried and dead-lettered")
    work.add_argument("--no-schedules", action="store_true",
                      help="do not fire periodic jobs (schedule=, azjobs.periodic) from this worker; by default a "
                           "worker fires the schedules of jobs on its queues (never with --burst)")
    work.add_argument("--grace", type=_seconds(0), default=30.0, metavar="SECONDS",
                      help="on SIGTERM/SIGINT, how long running jobs may take to finish (default 30)")
    work.add_argument("--timeout", type=_timeout, metavar="SECONDS",
                      help="job timeout: a job running longer is abandoned and its message released, as the host "
                           "does at functionTimeout (default: host.json functionTimeout, else 30 min; -1: none)")
    work.add_argument("--host-json", metavar="PATH",
                      help="host.json to read queue settings from (default: ./host.json if present)")
    work.add_argument("--stats-interval", type=_seconds(0), default=0.0, metavar="SECONDS",
                      help="log a summary line (jobs done per outcome, jobs/s, running, in flight) every SECONDS "
                           "(default 0: off)")
    work.add_argument("--no-workflows", action="store_true",
                      help="do not work the workflows queue (workflows of jobs; see README Workflows)")
    work.add_argument("--workflows-queue", metavar="QUEUE",
                      help="the workflows queue (default $AZJOBS_WORKFLOWS_QUEUE or azjobs-workflows)")
    work.add_argument("-p", "--processes", type=_positive_int(1, 64), metavar="N",
                      help="worker processes, 1..64: N > 1 runs N workers under a supervisor that restarts one "
                           "that dies (default: FUNCTIONS_WORKER_PROCESS_COUNT, else 1)")

    admin = parser.add_argument_group("queue administration")
    admin.add_argument("--create", nargs="?", const=True, metavar="NAME",
                       help="create queue NAME and exit; with -q and no NAME: create the worked queues if missing, "
                            "then work them (a worker starts)")
    admin.add_argument("-e", "--empty", metavar="NAME",
                       help="delete every message in queue NAME (cannot be undone)")
    admin.add_argument("-d", "--delete", metavar="NAME",
                       help="delete queue NAME (cannot be undone)")
    admin.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation (--empty, --delete)")

    general = parser.add_argument_group("general")
    general.add_argument("--connection", default="AzureWebJobsStorage", metavar="SETTING",
                         help="app setting holding the storage connection (default AzureWebJobsStorage)")
    general.add_argument("-v", "--verbose", action="count", default=0, help="debug logging (-vv: Azure SDK too)")
    general.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format")
    general.add_argument("--version", action="version", version=f"azjobs {__version__}")
    return parser


# -- imports -----------------------------------------------------------------
def _looks_like_path(path: str) -> bool:
    return path.endswith(".py") or "/" in path or os.sep in path or path.startswith(".")


def import_path(path: str) -> None:
    """Import a file, a package directory or a dotted module so its jobs register.

    Raises FileNotFoundError for a file or directory path that does not exist.
    """
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
    if _looks_like_path(path):
        raise FileNotFoundError(str(target.resolve()))
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    importlib.import_module(path)


def _import_failure(path: str, exc: BaseException, verbose: int = 0) -> str:
    """One line on why ``-i path`` could not be imported."""
    if isinstance(exc, FileNotFoundError):
        what = "directory" if path.endswith(("/", os.sep)) else "file"
        return f"cannot import {path!r}: the {what} does not exist ({exc})"
    if isinstance(exc, ModuleNotFoundError) and exc.name and (exc.name == path or path.startswith(exc.name + ".")):
        return (f"cannot import {path!r}: no module named {exc.name!r} in {os.getcwd()} or on the Python path; "
                "give a file (-i ./jobs.py), a package directory, or run from the directory that holds it")
    more = "" if verbose else " (-v shows the traceback)"
    if isinstance(exc, ModuleNotFoundError):
        return f"cannot import {path!r}: a module it imports is missing: {exc}{more}"
    return f"cannot import {path!r}: {type(exc).__name__}: {exc}{more}"


def load_jobs(includes: list[str], err: TextIO, verbose: int = 0) -> bool:
    """Import ``-i`` targets, or ./function_app.py by default; False (after an error) on failure.

    With ``verbose``, the traceback of an import failure is shown before the one-line error.
    """
    return _load_jobs(includes, err, verbose) == OK


def _load_jobs(includes: list[str], err: TextIO, verbose: int = 0) -> int:
    """``load_jobs`` with an exit status: 2 when what ``-i`` names does not exist (or function_app.py needs
    azure-functions), 1 when a jobs module exists but raised as it was imported."""
    if includes:
        for path in includes:
            try:
                import_path(path)
            except Exception as exc:
                missing = isinstance(exc, FileNotFoundError) or (
                    isinstance(exc, ModuleNotFoundError) and bool(exc.name)
                    and (exc.name == path or path.startswith(exc.name + ".")))
                if verbose and not missing:
                    traceback.print_exc(file=err)
                print(f"azjobs: {_import_failure(path, exc, verbose)}", file=err)
                return USAGE if missing else FAILED
        return OK
    if not Path("function_app.py").is_file():
        return OK
    try:
        import_path("function_app.py")
    except ModuleNotFoundError as exc:
        if verbose:
            traceback.print_exc(file=err)
        if exc.name and exc.name.split(".")[0] == "azure" and "functions" in (exc.name or ""):
            print("azjobs: ./function_app.py needs the azure-functions package, which is not installed. "
                  "Install it (pip install 'azjobs[functions]') or name your jobs module with -i, "
                  "e.g. `azjobs -q QUEUE -i example_jobs`.", file=err)
            return USAGE
        print(f"azjobs: cannot import ./function_app.py: {exc}; name your jobs module with -i", file=err)
        return FAILED
    except Exception as exc:
        if verbose:
            traceback.print_exc(file=err)
        print(f"azjobs: cannot import ./function_app.py: {type(exc).__name__}: {exc}; "
              "name your jobs module with -i", file=err)
        return FAILED
    return OK


# -- where the connection came from -------------------------------------------------
def _local_settings_values(path: str = "local.settings.json") -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return {}
    values = data.get("Values") if isinstance(data, dict) else None
    return {k: v for k, v in (values or {}).items() if isinstance(v, str)} if isinstance(values, dict) else {}


def connection_origin(setting: str, connection: Any, environ: Any = None) -> str:
    """Where the connection came from, for the lines a user reads: a setting name and where it was set."""
    from ..storage.diagnosis import describe_origin

    source = getattr(connection, "source", "") or ""
    if source.startswith("default"):
        return f"the default, Azurite ({setting} is not set)"
    env = os.environ if environ is None else environ
    local = _local_settings_values()
    identity = source.endswith("(identity)")
    names = (f"{setting}__queueServiceUri", f"{setting}__accountName") if identity else (setting,)
    for name in names:
        where = ("environment variable" if str(env.get(name, "")).strip() else
                 "local.settings.json" if local.get(name, "").strip() else None)
        if where:
            extra = ", identity-based" if identity else ", UseDevelopmentStorage=true" if "(Azurite)" in source else ""
            return f"{name} ({where}{extra})"
    return describe_origin(source, setting)


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
    if answer in ("y", "yes"):
        return True
    print(f"azjobs: not confirmed; did not {question}", file=err)
    return False


def _storage_failure(exc: BaseException, target: Any, doing: str, err: TextIO) -> int:
    """Print one line for a failed storage call; the exit status: 2 for rejected credentials, else 1."""
    from ..storage.diagnosis import AUTH, storage_error_kind, storage_problem

    print(f"azjobs: {storage_problem(exc, target, doing)}", file=err)
    return USAGE if storage_error_kind(exc) == AUTH else FAILED


def _admin(args: argparse.Namespace, client: Any, target: Any, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    from ..storage.diagnosis import NOT_FOUND, storage_error_kind

    if isinstance(args.create, str):
        try:
            created = client.ensure_queue(args.create)
        except Exception as exc:
            return _storage_failure(exc, target, f"creating queue {args.create}", err)
        print(f"queue {args.create} {'created' if created else 'already exists'}", file=out)
    for name, verb in ((args.empty, "empty"), (args.delete, "delete")):
        if name is None:
            continue
        if not confirm(f"{verb} queue {name}", args.yes, stdin, err):
            return USAGE
        queue_client = client.queue(name)
        try:
            if verb == "empty":
                queue_client.clear_messages()
                print(f"queue {name} emptied", file=out)
            else:
                queue_client.delete_queue()
                print(f"queue {name} deleted", file=out)
        except Exception as exc:
            if storage_error_kind(exc) == NOT_FOUND:
                print(f"azjobs: queue {name!r} does not exist at {target.where}", file=err)
                return FAILED
            return _storage_failure(exc, target, f"{'emptying' if verb == 'empty' else 'deleting'} queue {name}",
                                    err)
    return OK


# -- the worker ----------------------------------------------------------------
# A second signal within this long of the first is the same stop arriving twice (systemd's
# control-group kill and a supervisor both signal a worker), not a request to force it.
SAME_STOP_S = 1.0


def _fast_exit() -> None:
    """At interpreter exit, skip the last garbage collection of everything the SDKs and jobs made.

    It runs after a stopped worker's grace period, outside it: 0.2-0.7 s of CPU on a small machine,
    over a second under load, enough to overrun a container runtime's stop timeout. Frozen (``gc.freeze``,
    registered to run at exit only), those objects are left to the exiting process; atexit handlers
    (log and telemetry flushes) still run.
    """
    if gc.freeze not in _EXIT_HOOKS:
        _EXIT_HOOKS.append(gc.freeze)
        atexit.register(gc.freeze)


_EXIT_HOOKS: list[Callable[[], None]] = []


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
    from ..model.settings import QueueSettings

    return QueueSettings.load(args.host_json).for_environment()


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
    if argv and argv[0] == "schedules":
        from . import schedules as listing

        return listing.main(argv[1:], out=out, err=err)
    if argv and argv[0] == "workflow":
        from . import workflow as workflow_cli

        return workflow_cli.main(argv[1:], out=out, err=err)

    parser = build_parser()
    if argv and argv[0] in POISON_COMMANDS:
        parser.error(f"{argv[0]!r} is a poison command: azjobs poison {' '.join(argv)}")
    args = parser.parse_args(argv)
    if not args.queue and args.create in (None, True) and args.empty is None and args.delete is None:
        parser.error("nothing to do: give -q QUEUE to work, or --create/--empty/--delete NAME")
    if args.create is True and not args.queue:
        parser.error("--create needs a NAME (or -q QUEUE to create the worked queues)")
    from ..runtime import supervisor

    try:
        processes = supervisor.process_count(args.processes) if args.queue else 1
    except ValueError as exc:
        parser.error(str(exc))
    if processes > 1 and (args.empty is not None or args.delete is not None):
        parser.error("--empty/--delete must run once: not with several worker processes (-p or "
                     f"{supervisor.COUNT_ENV}); run them on their own first")

    from ..storage import diagnosis as logs

    handler = logs.setup(args.verbose, args.log_format, err)
    supervisor.tag_child_logs(handler, args.log_format)
    try:
        if processes > 1:
            return supervisor.supervise(args, argv, parser, processes, err,
                                        check=lambda: (_settings(args),
                                                       check_queue_names(argparse.Namespace(**vars(args)))))
        return _run(args, stdin, out, err)
    finally:
        handler.flush()
        logging.getLogger().removeHandler(handler)


def _run(args: argparse.Namespace, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    from ..errors import AzjobsError, ConfigurationError, QueueNotFoundError
    from ..runtime.worker import CredentialsRejected
    from ..storage.client import Client
    from ..storage.connection import resolve_connection
    from ..storage.diagnosis import storage_target

    try:
        settings = _settings(args)
        check_queue_names(args)
        connection = resolve_connection(args.connection)
        client = Client(connection, settings=settings)
    except ConfigurationError as exc:
        print(f"azjobs: {exc}", file=err)
        return USAGE
    origin = connection_origin(args.connection, connection)
    target = storage_target(connection, origin, args.connection)
    try:
        if args.queue:
            # The jobs first: nothing is created or started for a worker that could not run them.
            loaded = _load_jobs(args.include, err, args.verbose)
            if loaded:
                return loaded
            if not _jobs_registered(args, err):
                return USAGE
        if connection.source.startswith("default"):
            log.warning("%s is not set (environment or local.settings.json): using Azurite on its default ports, %s",
                        args.connection, target.endpoint, extra={"action": "connection_defaulted",
                                                                 "setting": args.connection,
                                                                 "endpoint": target.endpoint})
        code = _admin(args, client, target, stdin, out, err)
        if code or not args.queue:
            return code
        if args.create is True:
            for name in args.queue:
                try:
                    created = client.ensure_queue(name)
                except Exception as exc:
                    return _storage_failure(exc, target, f"creating queue {name}", err)
                if created:
                    print(f"queue {name} created", file=out)
        return _work(args, client, settings, origin, err)
    except QueueNotFoundError as exc:
        print(f"azjobs: {exc} (or pass --create)", file=err)
        return FAILED
    except (CredentialsRejected, ConfigurationError) as exc:  # nothing a retry fixes
        print(f"azjobs: {exc}", file=err)
        return USAGE
    except AzjobsError as exc:  # StorageUnreachable included
        print(f"azjobs: {exc}", file=err)
        return FAILED
    finally:
        client.close()


def _workflows_queue(args: argparse.Namespace) -> str:
    from ..workflows.spec import workflows_queue

    return workflows_queue(args.workflows_queue)


def _declared_queue(definition: Any) -> str | None:
    """The queue a registered job works, its ``%AppSetting%`` resolved (None if it cannot be)."""
    from ..model.queue_names import resolve_queue_name

    try:
        return resolve_queue_name(definition.queue)
    except Exception:
        return None


def _jobs_registered(args: argparse.Namespace, err: TextIO) -> bool:
    """Refuse (False, after one line) to work queues with no job registered at all, unless --allow-no-jobs."""
    from ..model.registry import registry

    if len(registry) or args.allow_no_jobs:
        return True
    if args.include:
        imported = f"importing {', '.join(args.include)} registered none"
    elif Path("function_app.py").is_file():
        imported = "importing ./function_app.py registered none"
    else:
        imported = f"nothing was imported: no -i was given and there is no function_app.py in {os.getcwd()}"
    queue = args.queue[0]
    print(f"azjobs: no jobs are registered ({imported}), so every message would be retried and dead-lettered. "
          f"Import the module that declares your jobs with -i (e.g. `azjobs -q {queue} -i myapp.jobs`), "
          "or pass --allow-no-jobs", file=err)
    return False


def _work(args: argparse.Namespace, client: Any, settings: Any, origin: str, err: TextIO) -> int:
    from ..execution.executor import Executor
    from ..model.registry import registry
    from ..runtime import supervisor
    from ..runtime.worker import Worker

    declared = {_declared_queue(definition) for definition in registry}
    for name in args.queue:
        if name not in declared:
            log.warning("no registered job declares queue %s; messages naming a job not imported here are "
                        "retried, then dead-lettered (import your jobs with -i)", name,
                        extra={"action": "no_jobs_for_queue", "queue": name})
    timeout: Any = True if args.timeout is None else (None if args.timeout == -1 else args.timeout)
    worker = Worker(
        args.queue, client=client, executor=Executor(client=client, settings=settings),
        concurrency=args.concurrency, fetch=args.fetch, lease=args.retry, interval=args.interval,
        burst=args.burst, grace=args.grace, timeout=timeout, burst_timeout=args.burst_timeout, origin=origin,
        stats_interval=args.stats_interval or None,
        processes=supervisor.shared_by(),
        schedules=not args.no_schedules,
        workflows=None if args.no_workflows else _workflows_queue(args),
    )
    restore = _install_signals(worker)
    _fast_exit()
    try:
        stats = worker.run()
    finally:
        restore()
    if stats.restart_needed:
        return RESTART_NEEDED
    if args.burst and stats.credentials_rejected:
        return USAGE
    if args.burst and stats.storage_gave_up:
        return FAILED
    return FAILED if stats.forced or stats.abandoned else OK


__all__ = ["FAILED", "OK", "RESTART_NEEDED", "USAGE", "build_parser", "check_queue_names", "confirm",
           "connection_origin", "import_path", "load_jobs", "main"]
