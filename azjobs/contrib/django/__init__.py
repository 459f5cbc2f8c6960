"""Django's Tasks framework (``django.tasks``, Django 6.0+) on Azure Storage Queues.

Settings::

    INSTALLED_APPS += ["azjobs.contrib.django"]
    TASKS = {"default": {"BACKEND": "azjobs.contrib.django.AzureQueueBackend",
                         "QUEUES": ["default", "emails"], "OPTIONS": {}}}

Tasks travel in the azjobs envelope (job name ``django:<module path>``) and run through the
one execution core, so retries, poison records and ``azjobs poison`` apply to them. Only the
tasks discovered in the ``tasks`` modules of ``INSTALLED_APPS`` (and what the worker's ``-i``
names) can run from a message. ``python manage.py azjobs_worker`` works the queues; on Azure
Functions, ``django.setup()`` then ``azjobs.blueprint()``.
"""

from .backend import AzureQueueBackend
from .discovery import JOB_PREFIX, discover_tasks, discovered_task
from .execution import ReturnValueError

__all__ = ["AzureQueueBackend", "JOB_PREFIX", "ReturnValueError", "discover_tasks", "discovered_task"]
