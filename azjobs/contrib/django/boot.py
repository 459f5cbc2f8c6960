"""Imported first by the worker (``-i azjobs.contrib.django.boot``): Django set up, its tasks discovered.

``manage.py azjobs_worker`` sets Django up itself and passes this module to the ``azjobs``
worker first among its ``-i`` modules. Its import matters in the worker processes that
``-p N`` starts (``python -m azjobs`` with the same flags, the same environment and so the
same ``DJANGO_SETTINGS_MODULE``): there it runs ``django.setup()``, which discovers the tasks
of ``INSTALLED_APPS``, then imports and discovers the other ``-i`` modules of the command
line, so every process runs the same set of tasks. Where Django is already set up, importing
it does nothing.
"""

from __future__ import annotations

import sys


def _boot(argv: list[str]) -> None:
    from django.apps import apps

    if apps.ready:
        return
    import django

    from ...cli import build_parser
    from .discovery import discover_tasks
    from .worker import one_console

    django.setup()
    one_console()  # a worker process started by -p prints each line once, as its parent does
    args, _ = build_parser().parse_known_args(argv)
    discover_tasks([name for name in args.include if name != __name__])


_boot(sys.argv[1:])
