"""A small Django project whose tasks run on Azure Storage Queues through azjobs.

The storage account is AzureWebJobsStorage (the tests point it at their Azurite); each test
gets its own queues through DJSITE_QUEUE_PREFIX (and override_settings in-process).
"""

import os
from pathlib import Path

import azjobs

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "django-insecure-test-project-only"
DEBUG = os.environ.get("DJSITE_DEBUG") == "1"  # tests turn it on to see what a developer sees
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["azjobs.contrib.django", "shop"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJSITE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

TASKS = {
    "default": {
        "BACKEND": "azjobs.contrib.django.AzureQueueBackend",
        "QUEUES": ["default", "emails", *filter(None, os.environ.get("DJSITE_EXTRA_QUEUES", "").split(","))],
        "OPTIONS": {
            "queue_prefix": os.environ.get("DJSITE_QUEUE_PREFIX", "djsite-"),
            # A failed attempt is retried once, at once: the tests see attempt 2 without waiting.
            "retry": azjobs.Fixed(0, max_retries=1),
        },
    }
}
