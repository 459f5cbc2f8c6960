"""The Django app: ``INSTALLED_APPS += ["azjobs.contrib.django"]``.

Gives ``python manage.py azjobs_worker`` and, once Django is set up, discovers the tasks in
the ``tasks`` modules of ``INSTALLED_APPS`` so that a worker or a Functions app built after
``django.setup()`` can run them (see ``discovery``).
"""

from django.apps import AppConfig


class AzjobsDjangoConfig(AppConfig):
    name = "azjobs.contrib.django"
    label = "azjobs_django"
    verbose_name = "azjobs"

    def ready(self) -> None:
        from .discovery import discover_tasks

        discover_tasks()
