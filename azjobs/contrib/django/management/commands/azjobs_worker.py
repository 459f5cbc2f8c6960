"""``python manage.py azjobs_worker [azjobs worker flags]``: see ``azjobs.contrib.django.worker``."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from ...worker import main


class Command(BaseCommand):
    help = ("Work Django tasks from Azure Storage queues with the azjobs worker; takes the azjobs worker's "
            "flags (-q -c -f -r -i --burst ...). Without -q: every queue of every AzureQueueBackend.")

    def run_from_argv(self, argv: list[str]) -> None:
        # The azjobs worker's own parser reads the flags, so they are exactly the `azjobs` command's.
        sys.exit(main(argv[2:], run_checks=self._checks))

    def print_help(self, prog_name: str, subcommand: str) -> None:
        main(["--help"])

    def _checks(self) -> int:
        from django.core.management.base import SystemCheckError

        try:
            self.check()
        except SystemCheckError as exc:
            self.stderr.write(str(exc))
            return 2
        return 0

    def handle(self, *args, **options):  # pragma: no cover - run_from_argv is the entry point
        return main([])
