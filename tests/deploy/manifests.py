"""Reading and validating the deployment files under deploy/.

- Kubernetes kinds: ``kubernetes-validate`` (the API server's OpenAPI schemas, strict: an unknown
  field is an error).
- KEDA kinds: the pydantic models of ``cloudcoil.models.keda``, generated from the CRDs of the KEDA
  release its version names (2.16.1, pinned in the test extras), plus a check that every field
  given is one the CRD knows (the models ignore unknown fields, the API server prunes them: a typo
  would be silently dropped).
- The ``azure-queue`` trigger's metadata is a free-form map in the CRD; its keys and values are
  checked against the scaler's own parameter list (KEDA 2.16.1, pkg/scalers/azure_queue_scaler.go).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor AKS still supports when this was written
KEDA_VERSION = "2.16.1"

# KEDA 2.16.1 azure-queue scaler: azureQueueMetadata's fields, connectionFromEnv (resolvedEnv) and `cloud`
# (ParseAzureStorageEndpointSuffix).
AZURE_QUEUE_KEYS = {"queueName", "queueLength", "activationQueueLength", "connection", "connectionFromEnv",
                    "accountName", "endpointSuffix", "cloud", "queueLengthStrategy"}
AZURE_QUEUE_STRATEGIES = {"all", "visibleonly"}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The documents a kustomization's ``resources`` name, bases included (only ``resources`` is used here)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unsupported = set(spec) - {"apiVersion", "kind", "resources"}
    assert not unsupported, f"{directory}: this reader handles resources only, not {sorted(unsupported)}"
    documents: list[dict[str, Any]] = []
    for entry in spec["resources"]:
        path = (directory / entry).resolve()
        if path.is_dir():
            documents.extend(kustomize(path))
        else:
            assert path.is_relative_to(directory), f"{entry}: kustomize refuses files outside {directory}"
            documents.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    return documents


def _known_fields(model: Any, data: Any, where: str) -> Iterator[str]:
    """Fields of ``data`` that ``model`` (a validated cloudcoil/pydantic model) does not have."""
    from pydantic import BaseModel

    if isinstance(model, BaseModel) and isinstance(data, dict):
        aliases = {}
        for name, info in type(model).model_fields.items():
            aliases[info.alias or name] = name
        for key, value in data.items():
            if key not in aliases:
                yield f"{where}.{key}"
                continue
            yield from _known_fields(getattr(model, aliases[key]), value, f"{where}.{key}")
    elif isinstance(model, list) and isinstance(data, list):
        for index, (item, raw) in enumerate(zip(model, data)):
            yield from _known_fields(item, raw, f"{where}[{index}]")


def validate_keda(doc: dict[str, Any]) -> None:
    """Raise AssertionError (or pydantic's ValidationError) unless ``doc`` is a valid KEDA object."""
    from cloudcoil.models.keda import v1alpha1

    assert doc.get("apiVersion") == "keda.sh/v1alpha1", doc.get("apiVersion")
    model_class = getattr(v1alpha1, doc["kind"])
    model = model_class.model_validate(doc)
    unknown = list(_known_fields(model, doc, doc["kind"]))
    assert not unknown, f"fields KEDA {KEDA_VERSION} does not know: {unknown}"
    for trigger in (doc.get("spec") or {}).get("triggers", []):
        if trigger["type"] == "azure-queue":
            check_azure_queue(trigger, doc)


def check_azure_queue(trigger: dict[str, Any], doc: dict[str, Any]) -> None:
    meta = trigger["metadata"]
    unknown = set(meta) - AZURE_QUEUE_KEYS
    assert not unknown, f"azure-queue does not know {sorted(unknown)}"
    assert meta.get("queueName"), "azure-queue needs queueName"
    for key in ("queueLength", "activationQueueLength"):
        if key in meta:
            assert isinstance(meta[key], str) and meta[key].isdigit(), f"{key} must be a quoted integer: {meta[key]!r}"
    assert meta.get("queueLengthStrategy", "all").lower() in AZURE_QUEUE_STRATEGIES, meta.get("queueLengthStrategy")
    if "authenticationRef" not in trigger:
        assert meta.get("connection") or meta.get("connectionFromEnv"), "no connection and no authenticationRef"


def validate_kubernetes(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def validate(doc: dict[str, Any]) -> str:
    """Validate ``doc`` against the schema of its kind (raising when it is not valid); which schema: keda or kubernetes."""
    if str(doc.get("apiVersion", "")).startswith("keda.sh/"):
        validate_keda(doc)
        return "keda"
    validate_kubernetes(doc)
    return "kubernetes"
