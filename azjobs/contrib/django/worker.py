"""``python manage.py azjobs_worker``: the ``azjobs`` worker, with its flags, for a Django project.

Django is set up first (by ``manage.py``) and its system checks run (``--skip-checks`` skips
them); the tasks of ``INSTALLED_APPS`` and of the ``-i`` modules are discovered; then the
``azjobs`` command runs with the same arguments. Without ``-q`` it works every queue of every
``AzureQueueBackend`` (mapped to Azure names) and every queue a discovered task declares.
Each task closes unusable or expired database connections before and after it runs.

Django's habits hold: ``--verbosity``/``-v 0..3`` (2 is the worker's debug logging, 3 adds the
Azure SDK's), ``--settings``, ``--pythonpath``, ``--traceback``, ``--no-color``. Each log line is
printed once: Django's console handler is taken off the ``django`` loggers, whose lines reach
the worker's handler anyway. Concurrency defaults to the number of CPUs (``-c``), since each
running task may hold a database connection.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TextIO

#: Django's own command options: handled by manage.py, not passed to the azjobs worker.
DJANGO_VALUE_OPTIONS = ("--settings", "--pythonpath")
DJANGO_FLAGS = ("--traceback", "--no-color", "--force-color", "--skip-checks")
VERBOSITY = ("-v", "--verbosity")
BOOT_MODULE = "azjobs.contrib.django.boot"
PROG = "manage.py azjobs_worker"
USAGE = f"{PROG} [-q QUEUE ...] [-c N] [-i MODULE ...] [--burst] [-v {{0,1,2,3}}] [options]"
DESCRIPTION = """\
Work the Django project's tasks from Azure Storage queues with the azjobs worker (the `azjobs`
command's worker flags). Without -q: every queue of every AzureQueueBackend in TASKS, and every
queue a discovered task declares. System checks run first (--skip-checks skips them)."""


def default_concurrency() -> int:
    """Tasks run at once by default under Django: the number of CPUs (at least 2), as Celery's worker does."""
    return max(2, os.cpu_count() or 1)


def epilog() -> str:
    return f"""\
django options (as for every manage.py command):
  --settings MODULE, --pythonpath PATH, --traceback, --no-color, --force-color, --skip-checks
  -v {{0,1,2,3}}, --verbosity {{0,1,2,3}}
                        0 and 1: the worker's usual lines; 2: debug logging (azjobs -v);
                        3: the Azure SDK's requests too (azjobs -vv)

concurrency and the database:
  -c defaults to the number of CPUs here ({default_concurrency()}), not the Functions host's batch
  rules (batchSize + newBatchThreshold per queue, 64 or more). Each running task may hold a database
  connection of its own thread; with CONN_MAX_AGE > 0 it stays open between tasks. So a worker holds
  up to -c connections per process (-p N: N times that) beside the web server's: keep the sum below
  the database's max_connections (PostgreSQL's default is 100).

exit status: 0 done; 1 failed (storage, a task module that raised on import); 2 a usage or
configuration error (a system check error included); 3 the worker needs a restart."""


def split_django_options(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without Django's common options, and whether ``--skip-checks`` was among them.

    Django's ``--verbosity N``/``-v N`` (0..3) becomes the worker's ``-v`` count: 2 is ``-v``, 3 ``-vv``;
    a bare ``-v`` (not followed by a level) stays the worker's own flag."""
    rest: list[str] = []
    skip_checks = False
    items = list(argv)
    index = 0
    while index < len(items):
        item = items[index]
        index += 1
        name, has_value, value = item.partition("=")
        if name in DJANGO_VALUE_OPTIONS:
            if not has_value:
                index += 1
            continue
        if item in DJANGO_FLAGS:
            skip_checks = skip_checks or item == "--skip-checks"
            continue
        level = None
        if name == "--verbosity" and has_value:
            level = value
        elif item in VERBOSITY and index < len(items) and items[index] in ("0", "1", "2", "3"):
            level, index = items[index], index + 1
        elif item == "--verbosity":
            level = items[index] if index < len(items) else ""
            index += 1
        elif len(item) == 3 and item.startswith("-v") and item[2] in "0123":
            level = item[2]
        if level is not None:
            if level not in ("0", "1", "2", "3"):
                rest.append(f"--verbosity={level}")  # refused by the parser, with Django's choices
                continue
            rest += ["-v"] * max(0, int(level) - 1)
            continue
        rest.append(item)
    return rest, skip_checks


def one_console() -> None:
    """Take Django's console handlers off the ``django`` loggers whose lines reach the root logger (the worker's
    handler prints them): with ``DEBUG = True`` every task line and traceback was printed twice."""
    names = ["django", *(name for name in logging.Logger.manager.loggerDict if name.startswith("django."))]
    for name in names:
        logger = logging.getLogger(name)
        chain, propagates = logger, True
        while chain is not None and chain.parent is not None:
            propagates = propagates and chain.propagate
            chain = chain.parent
        if not propagates:
            continue
        for handler in list(logger.handlers):
            stream = getattr(handler, "stream", None)
            if type(handler) is logging.StreamHandler and stream in (sys.stderr, sys.stdout, sys.__stderr__,
                                                                    sys.__stdout__):
                logger.removeHandler(handler)


def build_parser():
    """The worker's flags under Django's name, with Django's usage and help."""
    from ... import cli

    parser = cli.build_parser(prog=PROG, usage=USAGE, description=DESCRIPTION, epilog=epilog())
    helps = {"queue": "queue to work; repeatable (default: every queue of every AzureQueueBackend and of every "
                      "discovered task)",
             "concurrency": f"tasks run at once (default here: the number of CPUs, {default_concurrency()}; see "
                            "'concurrency and the database' below)",
             "verbose": "-v 2 (or --verbosity 2): debug logging; -v 3: the Azure SDK's too"}
    for action in parser._actions:  # the worker's flags, said as a Django user reads them
        if action.dest in helps:
            action.help = helps[action.dest]
    # Django's --verbosity, read by split_django_options: only a level it could not read reaches the parser.
    parser.add_argument("--verbosity", type=int, choices=range(4), help=argparse.SUPPRESS)
    return parser


def main(argv: list[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None,
         run_checks=None) -> int:
    """Run the worker for the Django project that is set up; returns the exit status."""
    from ... import cli
    from ...cli.common import _load_jobs
    from ...model.registry import registry
    from .discovery import azure_backends, discover_tasks

    err = stderr or sys.stderr
    argv, skip_checks = split_django_options(list(argv))
    parser = build_parser()
    if any(arg in ("-h", "--help") for arg in argv):
        parser.print_help(stdout or sys.stdout)
        return cli.OK
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or --version)
        return int(exc.code or 0)
    if run_checks is not None and not skip_checks:
        code = run_checks()
        if code:
            return code
    # The -i modules: imported (with the azjobs worker's errors and exit statuses), then discovered.
    if args.include:
        code = _load_jobs(args.include, err, args.verbose)
        if code:
            return code
    discover_tasks(args.include)
    admin = isinstance(args.create, str) or args.empty is not None or args.delete is not None
    extra: list[str] = ["-i", BOOT_MODULE]
    if not any(arg == "--connection" or arg.startswith("--connection=") for arg in argv):
        # The account the backends send to: their OPTIONS "connection" setting, when they agree on one.
        settings = {backend.connection_setting for backend in azure_backends() if not backend.connection_string}
        if len(settings) == 1:
            extra += ["--connection", settings.pop()]
    if args.concurrency is None and not admin:
        extra += ["-c", str(default_concurrency())]
    if not args.queue and not admin:
        queues = registry.queues()
        if not queues:
            print("azjobs_worker: no queue to work: no AzureQueueBackend in TASKS and no Django task discovered "
                  "(give -q QUEUE)", file=err)
            return cli.USAGE
        for queue in queues:
            extra += ["-q", queue]
    # Worker processes started by -p import the project like this one.
    project = sys.path[0] if sys.path and sys.path[0] else os.getcwd()
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if project not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([project, *paths])
    one_console()
    return cli.main(extra + argv, stdout=stdout, stderr=stderr)


__all__ = ["build_parser", "default_concurrency", "main", "one_console", "split_django_options"]
