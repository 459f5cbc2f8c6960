"""The generated Functions bindings, as the host would index them (no storage needed)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
import typing
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessageInConverter
from hypothesis import given, settings, strategies as st

import azjobs
from azjobs.functions.blueprint import BINDING_NAME, function_name_for, host_json_path
from azjobs.model.queue_names import validate_queue_name
from azjobs.model.settings import QueueSettings
from tests.functions_support import fresh_app, function_for, functions_of, job_functions_of

ROOT = Path(__file__).resolve().parents[2]
HOST_FUNCTION_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,127}$", re.IGNORECASE)
LETTERS_ONLY = re.compile(r"^[A-Za-z]+$")


def noop(*args, **kwargs) -> None:
    """A job body; these tests never run it."""


async def anoop(*args, **kwargs) -> None:
    """An async job body."""


def registry_with(*queues: str) -> azjobs.Registry:
    reg = azjobs.Registry()
    for i, queue in enumerate(queues):
        azjobs.job(queue=queue, registry=reg, name=f"job{i}")(noop)
        azjobs.job(queue=queue, registry=reg, name=f"ajob{i}")(anoop)
    return reg


def bindings_by_queue(app: func.FunctionApp) -> dict[str, tuple[str, dict]]:
    """queueName -> (function name, the single binding), asserting the function.json shape."""
    out: dict[str, tuple[str, dict]] = {}
    for function in job_functions_of(app):
        doc = json.loads(function.get_function_json())
        assert doc["scriptFile"] == "function_app.py"
        assert set(doc) == {"scriptFile", "bindings"}
        assert len(doc["bindings"]) == 1, f"stray bindings on {function.get_function_name()}: {doc['bindings']}"
        binding = doc["bindings"][0]
        assert binding["type"] == "queueTrigger"
        assert binding["direction"] == "IN"
        assert binding["queueName"] not in out, f"two triggers on queue {binding['queueName']}"
        out[binding["queueName"]] = (function.get_function_name(), binding)
    return out


def check_host_accepts(app: func.FunctionApp) -> None:
    names = [f.get_function_name() for f in functions_of(app)]
    assert len(names) == len({n.lower() for n in names}), names
    for function in functions_of(app):
        name = function.get_function_name()
        assert HOST_FUNCTION_NAME.match(name), name
    for function in job_functions_of(app):  # the workflow functions have their own shapes (tests/unit/test_workflow_*)
        trigger = function.get_trigger()
        assert LETTERS_ONLY.match(trigger.name), trigger.name
        # The Python worker binds the trigger to the parameter of the same name, by annotation; the one
        # other parameter it accepts is `context`, unannotated or a func.Context (azure-functions-python-worker
        # is_context_required): the handler takes it for the invocation id (job state).
        user = function.get_user_function()
        parameters = inspect.signature(user).parameters
        assert list(parameters) == [trigger.name, "context"]
        assert parameters["context"].annotation is inspect.Parameter.empty
        hints = typing.get_type_hints(user)
        assert QueueMessageInConverter.check_input_type_annotation(hints[trigger.name])
        assert inspect.iscoroutinefunction(user)


def test_one_queue_trigger_per_queue_with_queue_name_and_connection():
    app = fresh_app(registry=registry_with("alpha", "beta-jobs", "g42"))
    found = bindings_by_queue(app)
    assert set(found) == {"alpha", "beta-jobs", "g42"}
    for queue, (name, binding) in found.items():
        assert binding["connection"] == "AzureWebJobsStorage"
        assert binding["name"] == BINDING_NAME
        assert name == "azjobs_" + queue.replace("-", "_")
    check_host_accepts(app)


def test_connection_setting_is_overridable():
    app = fresh_app(registry=registry_with("alpha"), connection="JobsStorage")
    (_, binding), = bindings_by_queue(app).values()
    assert binding["connection"] == "JobsStorage"


def test_queues_restricts_the_blueprint():
    reg = registry_with("alpha", "beta", "gamma")
    assert set(bindings_by_queue(fresh_app(["beta", "gamma"], registry=reg))) == {"beta", "gamma"}
    assert set(bindings_by_queue(fresh_app("alpha", registry=reg))) == {"alpha"}
    assert set(bindings_by_queue(fresh_app(["alpha", "alpha"], registry=reg))) == {"alpha"}


def test_queues_must_be_used_by_a_registered_job():
    reg = registry_with("alpha")
    with pytest.raises(azjobs.ConfigurationError, match="no registered job uses queue 'other'.*alpha"):
        azjobs.blueprint(["other"], registry=reg)
    with pytest.raises(azjobs.ConfigurationError, match="empty"):
        azjobs.blueprint([], registry=reg)
    with pytest.raises(azjobs.ConfigurationError):
        azjobs.blueprint(["Bad_Name"], registry=reg)


def test_an_empty_registry_is_a_configuration_error():
    with pytest.raises(azjobs.ConfigurationError, match="no jobs are registered"):
        azjobs.blueprint(registry=azjobs.Registry())


@pytest.mark.parametrize("connection", ["", "  ", None])
def test_connection_must_name_a_setting(connection):
    with pytest.raises(azjobs.ConfigurationError, match="connection"):
        azjobs.blueprint(registry=registry_with("alpha"), connection=connection)


def test_app_setting_queue_names_are_left_to_the_host_and_resolve_locally(monkeypatch):
    monkeypatch.delenv("AZJOBS_T_ORDERS", raising=False)
    reg = registry_with("%AZJOBS_T_ORDERS%", "orders")
    app = fresh_app(registry=reg)  # building needs no setting: the host resolves it
    found = bindings_by_queue(app)
    assert set(found) == {"%AZJOBS_T_ORDERS%", "orders"}
    assert found["%AZJOBS_T_ORDERS%"][0] == "azjobs__azjobs_t_orders"
    assert found["orders"][0] == "azjobs_orders"
    check_host_accepts(app)
    monkeypatch.setenv("AZJOBS_T_ORDERS", "orders-eu")
    assert function_for(app, "orders-eu").get_function_name() == "azjobs__azjobs_t_orders"
    assert function_for(app, "orders").get_function_name() == "azjobs_orders"


def test_function_names_of_settings_and_literals_never_collide():
    assert function_name_for("%setting-x%") != function_name_for("setting-x")
    assert function_name_for("%A_B%") == function_name_for("%a-b%")  # same stem: blueprint disambiguates
    reg = registry_with("%A_B%", "%a-b%")
    found = bindings_by_queue(fresh_app(registry=reg))
    assert found["%A_B%"][0] != found["%a-b%"][0]
    check_host_accepts(fresh_app(registry=reg))


def test_long_setting_names_are_shortened_to_a_valid_unique_name():
    long_a, long_b = "%" + "S" * 200 + "A%", "%" + "S" * 200 + "B%"
    a, b = function_name_for(long_a), function_name_for(long_b)
    assert a != b
    assert HOST_FUNCTION_NAME.match(a) and HOST_FUNCTION_NAME.match(b)


queue_names = st.from_regex(r"\A[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,55}\Z").filter(
    lambda q: validate_queue_name(q) == q
)


@settings(max_examples=200, deadline=None)
@given(st.lists(queue_names, min_size=2, max_size=6, unique=True))
def test_function_names_are_host_valid_and_distinct_for_any_queue_names(queues):
    names = [function_name_for(q) for q in queues]
    assert all(HOST_FUNCTION_NAME.match(n) for n in names)
    assert len(set(names)) == len(names)


def test_function_names_are_stable():
    assert function_name_for("emails") == "azjobs_emails"
    assert function_name_for("image-resize-2") == "azjobs_image_resize_2"


def test_host_json_path_prefers_explicit_then_env_then_script_root(tmp_path, monkeypatch):
    monkeypatch.delenv("AZJOBS_HOST_JSON", raising=False)
    monkeypatch.setenv("AzureWebJobsScriptRoot", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert host_json_path() is None
    (tmp_path / "host.json").write_text("{}")
    assert host_json_path() == tmp_path / "host.json"
    monkeypatch.setenv("AZJOBS_HOST_JSON", "/elsewhere/host.json")
    assert host_json_path() == Path("/elsewhere/host.json")
    assert host_json_path("x/host.json") == Path("x/host.json")


def test_an_invalid_host_json_fails_when_the_blueprint_is_built(tmp_path):
    bad = tmp_path / "host.json"
    bad.write_text(json.dumps({"version": "2.0", "extensions": {"queues": {"maxDequeueCount": 0}}}))
    with pytest.raises(azjobs.ConfigurationError, match="maxDequeueCount"):
        azjobs.blueprint(registry=registry_with("alpha"), host_json=bad)


# -- the function app at the repository root ---------------------------------------


@pytest.fixture
def root_function_app(monkeypatch):
    """Import ./function_app.py as a fresh module against an empty global registry.

    The global registry and sys.modules are restored afterwards, so nothing leaks
    into other tests (and other tests' jobs do not leak into this app).
    """
    monkeypatch.setattr(azjobs.registry, "_jobs", {})
    monkeypatch.delitem(sys.modules, "example_jobs", raising=False)
    monkeypatch.delitem(sys.modules, "function_app", raising=False)
    monkeypatch.syspath_prepend(str(ROOT))
    spec = importlib.util.spec_from_file_location("function_app", ROOT / "function_app.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "function_app", module)
    spec.loader.exec_module(module)
    return module


def test_root_function_app_has_one_trigger_per_example_queue(root_function_app):
    app = root_function_app.app
    assert isinstance(app, func.FunctionApp)
    found = bindings_by_queue(app)
    assert set(found) == {"emails", "images"}
    assert {name for name, _ in found.values()} == {"azjobs_emails", "azjobs_images"}
    assert all(binding["connection"] == "AzureWebJobsStorage" for _, binding in found.values())
    check_host_accepts(app)


def test_root_function_app_does_not_leak_registrations(root_function_app):
    assert {d.name for d in azjobs.registry} == {
        "example_jobs.send_welcome_email", "example_jobs.notify_slack", "example_jobs.ResizeImage",
        "example_jobs.sync_crm_contact", "example_jobs.charge_card", "example_jobs.summarize_emails",
    }


def test_root_host_json():
    data = json.loads((ROOT / "host.json").read_text())
    assert data["version"] == "2.0"
    assert data["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    queues = data["extensions"]["queues"]
    assert queues["maxDequeueCount"] == 5
    assert queues["messageEncoding"] == "base64"
    loaded = QueueSettings.load(ROOT / "host.json")
    assert loaded.max_dequeue_count == 5 and loaded.message_encoding == "base64"
    assert loaded.max_in_flight() == queues["batchSize"] + queues["newBatchThreshold"]


def test_root_local_settings_example_and_requirements():
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    required = {re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0].strip().lower()
                for line in (ROOT / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {"azure-functions", "azure-storage-queue", "azure-storage-blob", "azure-identity", "aiohttp"} <= required


def test_funcignore_keeps_the_app_and_drops_the_rest():
    patterns = {line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for excluded in ("tests", "benchmarks", ".venv*", "node_modules", ".git", "devtools", "docs", "local.settings.json"):
        assert excluded in patterns, excluded
    for needed in ("azjobs", "function_app.py", "host.json", "requirements.txt", "example_jobs.py"):
        assert needed not in patterns and not any(p.rstrip("*") and needed.startswith(p.rstrip("*"))
                                                  and p.endswith("*") for p in patterns), needed
