"""A tasks module outside INSTALLED_APPS: only a worker given `-i extra_tasks` runs it."""

from django.tasks import task


@task
def shout(text):
    return text.upper()
