"""The worker command: ``azjobs -q QUEUE ...`` works queues as the Functions host would (the seed gem's flags).

Also the queue administration forms (``--create``/``--empty``/``--delete``), which share its parser.
See ``azjobs --help``; the exit statuses are ``azjobs.cli.exits``'.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from ..errors import AzjobsError, ConfigurationError, CredentialsRejected, QueueNotFoundError
from ..model.secrets import get_logger
from ..runtime.heartbeat import HEARTBEAT_ENV
from ..runtime.weighted import split_weight
from ..version import __version__
from .admin import _admin
from .common import (
    _declared_queue,
    _load_jobs,
    _positive_int,
    _queue_name,
    _seconds,
    _storage_failure,
    add_connection_argument,
    connection_origin,
)
from .exits import FAILED, OK, RESTART_NEEDED, USAGE

log = get_logger("azjobs.cli")


MAX_VISIBILITY_S = 7 * 24 * 3600  # the service's visibility timeout maximum: 7 days


POISON_COMMANDS = ("list", "show", "requeue", "purge")


USAGE_TEXT = """\
azjobs -q QUEUE [-q QUEUE ...] [options]  |  azjobs -i PATH [options]
       azjobs --create NAME | --empty NAME | --delete NAME [--yes]
       azjobs poison {list,show,requeue,purge} QUEUE ...
       azjobs status JOB_ID [--json] | azjobs state prune [--older-than DURATION]
       azjobs stats [-q QUEUE ...] [--json] [--watch [SECONDS]]
       azjobs schedules [-i PATH ...] [--json]
       azjobs limits [-i PATH ...] [--json] [--since MINUTES]
       azjobs dashboard [--port PORT] [--host ADDRESS]
       azjobs workflow status ID [--json] | azjobs workflow list [--status S] [--since 1h]
       azjobs check [--heartbeat PATH] [--max-age S] [--storage-max-age S]"""


DESCRIPTION = """\
Work azjobs jobs from Azure Storage queues (as the Functions host would), or manage queues.

commands:
  azjobs -q QUEUE ...    the worker: work the queues until stopped (--burst: until empty);
                         azjobs -i PATH works the queues of the jobs PATH declares
  azjobs --create NAME   queue administration: --create, --empty, --delete (then exit)
  azjobs poison ...      dead-lettered jobs: list, show, requeue, purge (azjobs poison --help)
  azjobs status JOB_ID   what became of a job (job state; azjobs state prune removes old records)
  azjobs stats ...       per queue: depth, poison depth, oldest message age (azjobs stats --help)
  azjobs schedules       periodic jobs: next fire times and the last recorded fire (azjobs schedules --help)
  azjobs limits          concurrency and rate limits: slots held now, recent starts and throttles (--help)
  azjobs dashboard ...   the web dashboard: queues, poison browser (azjobs dashboard --help)
  azjobs workflow ...    workflows run by the worker: status ID, list
  azjobs check           exec probe: is the worker's --heartbeat file fresh (azjobs check --help)"""


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


def _lease(text: str) -> float:
    """-r: 1 s up to the service's 7-day visibility maximum."""
    value = _seconds(1)(text)
    if value > MAX_VISIBILITY_S:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_VISIBILITY_S} seconds (7 days, the longest a message can stay hidden), got {text}")
    return value


def check_queue_names(args: argparse.Namespace) -> None:
    """Check (and resolve) the queue names given with -q, --create, --empty and --delete, in place.

    Raises ConfigurationError saying which one is wrong and why.
    """
    named = [split_weight(text) for text in args.queue]
    args.queue = [_queue_name(name, "-q") for name, _ in named]
    # -q name:weight shares the job threads by weight (azjobs.runtime.weighted); plain -q: None, as before.
    args.weights = ({name: weight or 1 for name, (_, weight) in zip(args.queue, named)}
                    if any(weight is not None for _, weight in named) else None)
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


def build_parser(*, prog: str = "azjobs", usage: str = USAGE_TEXT, description: str = DESCRIPTION,
                 epilog: str = EXAMPLES) -> argparse.ArgumentParser:
    """The worker's flags; another front end (Django's ``manage.py azjobs_worker``) gives its own name and text."""
    parser = argparse.ArgumentParser(
        prog=prog, usage=usage, description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    work = parser.add_argument_group("worker")
    work.add_argument("-q", "--queue", action="append", default=[], metavar="QUEUE",
                      help="queue to work; repeat for several queues (each gets its own fetch loop and back-off). "
                           "Checked as the job decorators check it; %%SETTING%% is read from the environment. "
                           "QUEUE:WEIGHT (-q critical:4 -q default:1) shares the job threads by weight while "
                           "every queue has work, and lends an idle queue's share to the others. Without -q, the "
                           "queues the jobs imported with -i declare")
    work.add_argument("-c", "--concurrency", type=_positive_int(1), metavar="N",
                      help="jobs run at once (default: host.json batchSize + newBatchThreshold)")
    work.add_argument("-f", "--fetch", type=_positive_int(1, 32), metavar="N",
                      help="messages per receive call, 1..32 (default: host.json batchSize when it sets one, else "
                           "32, the service's maximum; never more than -c; shared out among -p processes)")
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
    work.add_argument("--max-jobs", type=_positive_int(1), metavar="N",
                      help="stop after N jobs started here are settled, and exit 0 (a Kubernetes ScaledJob or "
                           "Container Apps Job execution works a slice and ends); fetching stops at the Nth start")
    work.add_argument("--heartbeat", default=os.environ.get(HEARTBEAT_ENV) or None, metavar="PATH",
                      help=f"rewrite the file PATH every --heartbeat-interval seconds for `azjobs check` (an exec "
                           f"liveness/readiness probe; default ${HEARTBEAT_ENV}, else none)")
    work.add_argument("--heartbeat-interval", type=_seconds(0, strict=True), default=10.0, metavar="SECONDS",
                      help="how often the heartbeat file is written and storage asked whether it answers (default 10)")
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
    add_connection_argument(general)
    general.add_argument("-v", "--verbose", action="count", default=0, help="debug logging (-vv: Azure SDK too)")
    general.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format")
    general.add_argument("--version", action="version", version=f"azjobs {__version__}")
    return parser


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


def _run(args: argparse.Namespace, stdin: TextIO, out: TextIO, err: TextIO) -> int:
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
        derive = _derives_queues(args)
        if args.queue or derive:
            # The jobs first: nothing is created or started for a worker that could not run them.
            loaded = _load_jobs(args.include, err, args.verbose)
            if loaded:
                return loaded
            if derive and not _queues_of_jobs(args, err):
                return USAGE
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


def _derives_queues(args: argparse.Namespace) -> bool:
    """``azjobs -i jobs.py`` (no -q, no --empty/--delete/--create NAME): work the queues its jobs declare."""
    return (not args.queue and bool(args.include) and args.create in (None, True) and args.empty is None
            and args.delete is None)


def _queues_of_jobs(args: argparse.Namespace, err: TextIO) -> bool:
    """Set ``args.queue`` to the queues the imported jobs declare (as ``stats -i`` reads them); False after one
    line when they declare none."""
    from ..model.registry import registry

    queues = sorted({queue for queue in map(_declared_queue, registry) if queue})
    if not queues:
        print(f"azjobs: importing {', '.join(args.include)} registered no job with a queue, so there is nothing to "
              "work: give -q QUEUE", file=err)
        return False
    args.queue = queues
    log.info("no -q given: working the queues the jobs from %s declare: %s", ", ".join(args.include),
             ", ".join(queues), extra={"action": "queues_from_jobs", "queues": ",".join(queues)})
    return True


def _workflows_queue(args: argparse.Namespace) -> str:
    from ..workflows.spec import workflows_queue

    return workflows_queue(args.workflows_queue)


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
    from ..hosting import executor as hosted_executor
    from ..model.registry import registry
    from ..runtime import children
    from ..runtime.worker import Worker

    declared = {_declared_queue(definition) for definition in registry}
    for name in args.queue:
        if name not in declared:
            log.warning("no registered job declares queue %s; messages naming a job not imported here are "
                        "retried, then dead-lettered (import your jobs with -i)", name,
                        extra={"action": "no_jobs_for_queue", "queue": name})
    timeout: Any = True if args.timeout is None else (None if args.timeout == -1 else args.timeout)
    worker = Worker(
        args.queue, client=client, executor=hosted_executor(client=client, settings=settings),
        concurrency=args.concurrency, fetch=args.fetch, lease=args.retry, interval=args.interval,
        burst=args.burst, grace=args.grace, timeout=timeout, burst_timeout=args.burst_timeout, origin=origin,
        stats_interval=args.stats_interval or None,
        processes=children.shared_by(),
        schedules=not args.no_schedules,
        workflows=None if args.no_workflows else _workflows_queue(args),
        max_jobs=args.max_jobs, heartbeat=args.heartbeat, heartbeat_interval=args.heartbeat_interval,
        weights=getattr(args, "weights", None),
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
    # A drain that released every job still running when the grace ended stranded nothing: exit 0.
    return FAILED if stats.forced or stats.abandoned > stats.abandoned_released else OK


def run(argv: list[str], stdin: TextIO, out: TextIO, err: TextIO) -> int:
    """The worker and queue administration forms of the command (``argv`` without a subcommand)."""
    parser = build_parser()
    if argv and argv[0] in POISON_COMMANDS:
        parser.error(f"{argv[0]!r} is a poison command: azjobs poison {' '.join(argv)}")
    args = parser.parse_args(argv)
    derive = _derives_queues(args)
    if not args.queue and not derive and args.create in (None, True) and args.empty is None and args.delete is None:
        parser.error("nothing to do: give -q QUEUE (or -i PATH: the queues its jobs declare) to work, or "
                     "--create/--empty/--delete NAME")
    if args.create is True and not args.queue and not derive:
        parser.error("--create needs a NAME (or -q QUEUE to create the worked queues)")
    from ..runtime import children, supervisor

    try:
        processes = children.process_count(args.processes) if args.queue or derive else 1
    except ValueError as exc:
        parser.error(str(exc))
    if processes > 1 and (args.max_jobs is not None or args.heartbeat):
        parser.error("--max-jobs and --heartbeat ($AZJOBS_HEARTBEAT) work with one worker process (-p 1, "
                     f"{children.COUNT_ENV} unset or 1): on Kubernetes or Container Apps, scale with replicas")
    if processes > 1 and (args.empty is not None or args.delete is not None):
        parser.error("--empty/--delete must run once: not with several worker processes (-p or "
                     f"{children.COUNT_ENV}); run them on their own first")

    from ..storage import diagnosis as logs

    handler = logs.setup(args.verbose, args.log_format, err)
    children.tag_child_logs(handler, args.log_format)
    try:
        if processes > 1:
            return supervisor.supervise(args, argv, parser, processes, err,
                                        check=lambda: (_settings(args),
                                                       check_queue_names(argparse.Namespace(**vars(args)))))
        return _run(args, stdin, out, err)
    finally:
        handler.flush()
        logging.getLogger().removeHandler(handler)


__all__ = ["build_parser", "check_queue_names", "run"]
