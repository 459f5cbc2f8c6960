"""The Django project as an Azure Functions app: set Django up, then register azjobs' triggers.

django.setup() runs the ready() of azjobs.contrib.django, which discovers the tasks of
INSTALLED_APPS; azjobs.blueprint() then generates one queue trigger per queue of the
AzureQueueBackend (and per queue a discovered task declares).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djsite.settings")
django.setup()

import azure.functions as func  # noqa: E402

import azjobs  # noqa: E402

app = func.FunctionApp()
app.register_functions(azjobs.blueprint())
