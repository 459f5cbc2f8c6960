"""``python manage.py azjobs_worker``: the ``azjobs`` worker, with its flags, for a Django project.

Django is set up first (by ``manage.py``) and its system checks run (``--skip-checks`` skips
them); the tasks of ``INSTALLED_APPS`` and of the ``-i`` modules are discovered; then the
``azjobs`` command runs with the same arguments. Without ``-q`` it works every queue of every
``AzureQueueBackend`` (mapped to Azure names) and every queue a discovered task declares.
Each task closes unusable or expired database connections before and after it runs.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

#: Django's own command options: handled by manage.py, not passed to the azjobs worker.
DJANGO_VALUE_OPTIONS = ("--settings", "--pythonpath")
DJANGO_FLAGS = ("--traceback", "--no-color", "--force-color", "--skip-checks")
BOOT_MODULE = "azjobs.contrib.django.boot"


def split_django_options(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without Django's common options, and whether ``--skip-checks`` was among them."""
    rest: list[str] = []
    skip_checks = False
    items = iter(argv)
    for item in items:
        name = item.split("=", 1)[0]
        if name in DJANGO_VALUE_OPTIONS:
            if "=" not in item:
                next(items, None)
            continue
        if item in DJANGO_FLAGS:
            skip_checks = skip_checks or item == "--skip-checks"
            continue
        rest.append(item)
    return rest, skip_checks


def main(argv: list[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None,
         run_checks=None) -> int:
    """Run the worker for the Django project that is set up; returns the exit status."""
    from ... import cli
    from ...cli.common import _load_jobs
    from ...model.registry import registry
    from .discovery import azure_backends, discover_tasks

    err = stderr or sys.stderr
    argv, skip_checks = split_django_options(list(argv))
    if any(arg in ("-h", "--help", "--version") for arg in argv):
        return cli.main(argv, stdout=stdout, stderr=stderr)
    try:
        args = cli.build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error
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
    return cli.main(extra + argv, stdout=stdout, stderr=stderr)


__all__ = ["main", "split_django_options"]
