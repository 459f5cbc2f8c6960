"""The shop's tasks: plain Django tasks, sent to Azure Storage Queues by AzureQueueBackend."""

import json
import os
from pathlib import Path

from django.tasks import task
from django.tasks.signals import task_enqueued, task_finished, task_started


@task
def add(a, b):
    return a + b


@task(queue_name="emails")
def send_receipt(order_id):
    from shop.models import Order

    return f"receipt for {Order.objects.get(pk=order_id).name}"


@task(takes_context=True)
def flaky(context, key):
    """Fails on its first attempt; the second returns what its context said."""
    if context.attempt < 2:
        raise RuntimeError(f"attempt {context.attempt} of {key} fails")
    return {"attempt": context.attempt, "workers": len(context.task_result.worker_ids), "key": key}


@task
def always_fails(why):
    raise ValueError(why)


@task
async def async_add(a, b):
    return a + b


@task
def count_orders(name):
    from shop.models import Order

    Order.objects.create(name=name)
    return Order.objects.filter(name=name).count()


@task
def create_order(name):
    """Creates an order and returns it: a model instance, which JSON cannot carry."""
    from shop.models import Order

    return Order.objects.create(name=name)


@task
def average(values):
    """NaN for an empty list: a float, but not JSON."""
    return sum(values) / len(values) if values else float("nan")


def _log_signal(signal_name):
    def receiver(sender, task_result, **kwargs):
        target = os.environ.get("DJSITE_SIGNAL_LOG")
        if target:
            line = {"signal": signal_name, "sender": sender.__name__, "task": task_result.task.module_path,
                    "id": task_result.id, "status": str(task_result.status), "attempts": task_result.attempts,
                    "errors": [error.exception_class_path for error in task_result.errors]}
            if task_result.status == "SUCCESSFUL":
                line["return_value"] = task_result.return_value
            with Path(target).open("a", encoding="utf-8") as log:
                log.write(json.dumps(line) + "\n")

    return receiver


_receivers = {name: _log_signal(name) for name in ("task_enqueued", "task_started", "task_finished")}
task_enqueued.connect(_receivers["task_enqueued"], weak=False)
task_started.connect(_receivers["task_started"], weak=False)
task_finished.connect(_receivers["task_finished"], weak=False)
