"""``python manage.py azjobs_worker``: the azjobs worker, with its flags, in the test project (subprocesses
against Azurite)."""

from __future__ import annotations

import pytest
from django.tasks.exceptions import TaskResultDoesNotExist

from azjobs.model.envelope import Envelope
from tests.django.support import envelopes, manage, poison_records


def test_manage_py_worker_runs_the_tasks_of_installed_apps_from_every_backend_queue(site):
    from django.db import transaction

    from shop import tasks
    from shop.models import Order

    with transaction.atomic():
        order = Order.objects.create(name="teapot")
    added = tasks.add.enqueue(2, 3)
    flaky = tasks.flaky.enqueue("w")
    failing = tasks.always_fails.enqueue("no stock")
    receipt = tasks.send_receipt.enqueue(order.pk)  # on the "emails" queue
    asynchronous = tasks.async_add.enqueue(1, 2)
    counted = tasks.count_orders.enqueue("widget")
    stray = Envelope.build("django:extra_tasks.shout", ("hi",), queue=site.default)
    site.backend.client.send(stray)

    done = manage("azjobs_worker", "--burst", "-c", "2")  # no -q: every queue of the backend
    assert done.returncode == 0, done.stderr

    assert envelopes(site.queue(site.default)) == [] and envelopes(site.queue(site.emails)) == []
    get = site.backend.get_result
    assert get(added.id).return_value == 5
    assert get(receipt.id).return_value == "receipt for teapot"
    assert get(asynchronous.id).return_value == 3
    assert get(counted.id).return_value == 1  # the worker used the project's database
    assert Order.objects.filter(name="widget").count() == 1
    retried = get(flaky.id)
    assert retried.status == "SUCCESSFUL" and retried.attempts == 2
    assert retried.return_value == {"attempt": 2, "workers": 2, "key": "w"}
    assert all(worker.split(":")[-1].isdigit() for worker in retried.worker_ids)  # host:pid of the worker
    dead = get(failing.id)
    assert dead.status == "FAILED" and dead.attempts == 2
    assert [e.exception_class_path for e in dead.errors] == ["builtins.ValueError"] * 2

    poisoned = {record["job"]: record for record in poison_records(site.poison(site.default))}
    assert set(poisoned) == {"django:shop.tasks.always_fails", "django:extra_tasks.shout"}
    assert poisoned["django:extra_tasks.shout"]["attempts"] == 1  # not discovered: no retry, never run
    started = {s["task"] for s in site.signals() if s["signal"] == "task_started"}
    assert "extra_tasks.shout" not in started and "shop.tasks.add" in started
    finished = [(s["task"], s["status"]) for s in site.signals() if s["signal"] == "task_finished"]
    assert ("shop.tasks.always_fails", "FAILED") in finished and ("shop.tasks.flaky", "SUCCESSFUL") in finished


def test_a_task_returning_a_value_json_cannot_carry_runs_once_and_is_failed_not_retried(site):
    import uuid

    from shop import tasks
    from shop.models import Order

    name = f"lamp-{uuid.uuid4().hex[:8]}"
    result = tasks.create_order.enqueue(name)  # returns the Order itself; the retry policy allows one retry
    done = manage("azjobs_worker", "--burst", "-q", site.default)
    assert done.returncode == 0, done.stderr

    assert Order.objects.filter(name=name).count() == 1  # ran once: no attempt could return JSON
    failed = site.backend.get_result(result.id)
    assert failed.status == "FAILED" and failed.attempts == 1
    [error] = failed.errors
    assert error.exception_class_path == "azjobs.contrib.django.execution.ReturnValueError"
    assert "shop.tasks.create_order returned a value JSON cannot carry" in error.traceback
    assert "Unsupported type: <class 'shop.models.Order'>" in error.traceback
    finished = [(s["status"], s["errors"]) for s in site.signals()
                if s["signal"] == "task_finished" and s["id"] == result.id]
    assert finished == [("FAILED", ["azjobs.contrib.django.execution.ReturnValueError"])]
    [record] = poison_records(site.poison(site.default))
    assert record["job"] == "django:shop.tasks.create_order" and record["attempts"] == 1
    assert envelopes(site.queue(site.default)) == []


def test_dash_i_adds_a_tasks_module_outside_installed_apps(site):
    shout = Envelope.build("django:extra_tasks.shout", ("hi",), queue=site.default,
                           options={"django": {"backend": "default", "queue": "default"}, "track": True})
    site.backend.client.send(shout)
    done = manage("azjobs_worker", "--burst", "-q", site.default, "-i", "extra_tasks")
    assert done.returncode == 0, done.stderr
    with pytest.raises(TaskResultDoesNotExist):  # this process has not loaded extra_tasks: its path is not imported
        site.backend.get_result(shout.id)
    import extra_tasks  # noqa: F401  (as a view that enqueues it would)

    assert site.backend.get_result(shout.id).return_value == "HI"
    assert poison_records(site.poison(site.default)) == []


def test_worker_takes_the_azjobs_flags_and_says_what_is_wrong():
    shown = manage("azjobs_worker", "--help")
    assert shown.returncode == 0
    for flag in ("--queue", "--concurrency", "--fetch", "--include", "--burst", "--processes", "--timeout"):
        assert flag in shown.stdout
    missing = manage("azjobs_worker", "--burst", "-i", "no_such_tasks_module")
    assert missing.returncode == 2
    assert "cannot import 'no_such_tasks_module'" in missing.stderr
    bad = manage("azjobs_worker", "-q", "Bad_Queue", "--burst")
    assert bad.returncode == 2 and "-q Bad_Queue" in bad.stderr


def test_dash_p_worker_processes_each_set_django_up_and_run_the_tasks(site):
    from shop import tasks

    results = [tasks.add.enqueue(i, i) for i in range(6)]
    done = manage("azjobs_worker", "--burst", "-p", "2", "-q", site.default)
    assert done.returncode == 0, done.stderr
    fetched = [site.backend.get_result(result.id) for result in results]
    assert [r.return_value for r in fetched] == [2 * i for i in range(6)]
    workers = {worker for r in fetched for worker in r.worker_ids}
    assert workers and all(worker.split(":")[-1].isdigit() for worker in workers)


def test_a_system_check_error_stops_the_worker_before_it_works_anything(monkeypatch):
    monkeypatch.setenv("DJSITE_EXTRA_QUEUES", "Reports_Q")  # in QUEUES, declared by no task, not an Azure name
    done = manage("azjobs_worker", "--burst")
    assert done.returncode == 2
    assert "azjobs.E001" in done.stderr and "Reports_Q" in done.stderr


def test_a_task_whose_queue_maps_to_an_invalid_azure_name_fails_where_it_is_declared(monkeypatch):
    monkeypatch.setenv("DJSITE_QUEUE_PREFIX", "Bad_")  # "Bad_default": every task's queue is invalid
    done = manage("azjobs_worker", "--burst")
    assert done.returncode == 1
    assert "InvalidTask: Queue 'default' maps to an invalid Azure queue name" in done.stderr


# -- #25 item 5: the command speaks Django ------------------------------------------------------------
def test_help_is_the_commands_own_usage_with_the_worker_flags_only():
    shown = manage("azjobs_worker", "--help")
    assert shown.returncode == 0
    assert shown.stdout.startswith("usage: manage.py azjobs_worker [-q QUEUE ...] [-c N] [-i MODULE ...] [--burst] "
                                   "[-v {0,1,2,3}] [options]\n")
    for foreign in ("usage: azjobs", "azjobs poison", "azjobs stats", "azjobs dashboard", "azjobs workflow"):
        assert foreign not in shown.stdout, foreign
    flat = " ".join(shown.stdout.split())
    assert "-v {0,1,2,3}, --verbosity {0,1,2,3}" in flat
    assert "--settings MODULE, --pythonpath PATH, --traceback, --no-color" in flat
    assert "CONN_MAX_AGE > 0" in flat and "below the database's max_connections" in flat


@pytest.mark.parametrize("options,debug", [
    (["-v", "2"], True), (["--verbosity", "2"], True), (["--verbosity=3"], True), (["-v", "0"], False),
    (["--verbosity", "1", "--traceback", "--no-color", "--settings", "djsite.settings", "--pythonpath", "."], False),
], ids=["-v 2", "--verbosity 2", "--verbosity=3", "-v 0", "django-common-options"])
def test_djangos_verbosity_and_common_options_are_accepted(site, options, debug):
    from shop import tasks

    added = tasks.add.enqueue(2, 3)  # (and the queue exists)
    done = manage("azjobs_worker", "--burst", "-q", site.default, *options)
    assert done.returncode == 0, done.stderr
    assert "unrecognized arguments" not in done.stderr
    assert (" DEBUG " in done.stderr) is debug, done.stderr
    assert site.backend.get_result(added.id).return_value == 5


def test_a_verbosity_django_does_not_know_is_a_usage_error():
    done = manage("azjobs_worker", "--burst", "--verbosity", "7")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == ("manage.py azjobs_worker: error: argument --verbosity: invalid choice: 7 "
                                            "(choose from 0, 1, 2, 3)")


def test_with_debug_true_each_task_line_and_traceback_is_printed_once(site, monkeypatch):
    from shop import tasks

    monkeypatch.setenv("DJSITE_DEBUG", "1")
    failing = tasks.always_fails.enqueue("no stock")
    done = manage("azjobs_worker", "--burst", "-q", site.default)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    # Django's task lines (django.tasks: "Task id=... state=RUNNING") come once, through the worker's handler
    # ("<date> <time> LEVEL message"); Django's console handler printed each again, bare.
    about = [line for line in lines if failing.id in line]
    assert any("state=RUNNING" in line for line in about) and any("state=FAILED" in line for line in about), about
    assert all(line.startswith("20") for line in about), "\n".join(about)
    assert len(set(about)) == len(about), "\n".join(about)


def test_the_default_concurrency_under_django_is_the_cpu_count_not_the_hosts_batch_rules(site):
    from azjobs.contrib.django.worker import default_concurrency
    from shop import tasks

    tasks.add.enqueue(1, 1)
    done = manage("azjobs_worker", "--burst", "-q", site.default)
    assert done.returncode == 0, done.stderr
    [start] = [line for line in done.stderr.splitlines() if "worker started on" in line]
    assert f": concurrency {default_concurrency()}, " in start, start
    explicit = manage("azjobs_worker", "--burst", "-q", site.default, "-c", "5")
    assert ": concurrency 5, " in explicit.stderr
