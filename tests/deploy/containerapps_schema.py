"""The shape of ``az containerapp create --yaml`` and ``az containerapp job create --yaml`` files.

Written for these tests from the documented resource schema (Microsoft.App/containerApps and
Microsoft.App/jobs, API version 2024-03-01: the YAML is the resource's ARM shape) for the fields
the files under deploy/containerapps use. No registry package ships these schemas. Objects list
their known fields and refuse others, so a typo is an error; the service itself checks more
(values, references) at deploy time.
"""

from __future__ import annotations

from typing import Any


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


STRING = {"type": "string", "minLength": 1}
RESOURCE_ID = {"type": "string", "pattern": r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/.+"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

IDENTITY = _object({
    "type": {"enum": ["None", "SystemAssigned", "UserAssigned", "SystemAssigned,UserAssigned"]},
    "userAssignedIdentities": {"type": "object", "propertyNames": RESOURCE_ID,
                               "additionalProperties": {"type": "object"}},
}, ("type",))

ENV_VAR = _object({"name": STRING, "value": {"type": "string"}, "secretRef": STRING}, ("name",))

PROBE = _object({
    "type": {"enum": ["Liveness", "Readiness", "Startup"]},
    "httpGet": {"type": "object"}, "tcpSocket": {"type": "object"},  # no exec probes on Container Apps
    "initialDelaySeconds": {"type": "integer"}, "periodSeconds": {"type": "integer"},
    "timeoutSeconds": {"type": "integer"}, "failureThreshold": {"type": "integer"},
    "successThreshold": {"type": "integer"}, "terminationGracePeriodSeconds": {"type": "integer"},
})

CONTAINER = _object({
    "name": STRING, "image": STRING,
    "command": {"type": "array", "items": {"type": "string"}},
    "args": {"type": "array", "items": {"type": "string"}},
    "env": {"type": "array", "items": ENV_VAR},
    "resources": _object({"cpu": {"type": "number", "exclusiveMinimum": 0}, "memory": {"type": "string",
                                                                                          "pattern": r"^[0-9.]+Gi$"},
                          "ephemeralStorage": {"type": "string"}}),
    "probes": {"type": "array", "items": PROBE},
    "volumeMounts": {"type": "array", "items": {"type": "object"}},
}, ("name", "image"))

SCALE_AUTH = _object({"secretRef": STRING, "triggerParameter": STRING}, ("secretRef", "triggerParameter"))

APP_SCALE_RULE = _object({
    "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-.]*[a-z0-9]$"},
    "azureQueue": _object({"accountName": STRING, "queueName": STRING, "queueLength": {"type": "integer"},
                           "auth": {"type": "array", "items": SCALE_AUTH}, "identity": STRING}),
    "custom": _object({"type": STRING, "metadata": STRING_MAP, "auth": {"type": "array", "items": SCALE_AUTH},
                       "identity": STRING}, ("type", "metadata")),
    "http": {"type": "object"}, "tcp": {"type": "object"},
}, ("name",))

REGISTRY = _object({"server": STRING, "identity": STRING, "username": STRING, "passwordSecretRef": STRING},
                   ("server",))
SECRET = _object({"name": STRING, "value": {"type": "string"}, "keyVaultUrl": STRING, "identity": STRING}, ("name",))

CONTAINER_APP = _object({
    "location": STRING, "name": STRING, "type": {"const": "Microsoft.App/containerApps"}, "identity": IDENTITY,
    "tags": STRING_MAP,
    "properties": _object({
        "managedEnvironmentId": RESOURCE_ID, "environmentId": RESOURCE_ID, "workloadProfileName": STRING,
        "configuration": _object({
            "activeRevisionsMode": {"enum": ["Single", "Multiple"]}, "ingress": {"type": "object"},
            "registries": {"type": "array", "items": REGISTRY}, "secrets": {"type": "array", "items": SECRET},
            "maxInactiveRevisions": {"type": "integer"},
        }),
        "template": _object({
            "revisionSuffix": {"type": "string"},
            "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0, "maximum": 600},
            "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
            "initContainers": {"type": "array", "items": CONTAINER},
            "scale": _object({
                "minReplicas": {"type": "integer", "minimum": 0}, "maxReplicas": {"type": "integer", "minimum": 1,
                                                                                   "maximum": 1000},
                "pollingInterval": {"type": "integer", "minimum": 1}, "cooldownPeriod": {"type": "integer",
                                                                                          "minimum": 0},
                "rules": {"type": "array", "items": APP_SCALE_RULE},
            }),
            "volumes": {"type": "array", "items": {"type": "object"}},
        }, ("containers",)),
    }, ("configuration", "template")),
}, ("name", "type", "properties"))

JOB_SCALE_RULE = _object({"name": STRING, "type": STRING, "metadata": STRING_MAP,
                          "auth": {"type": "array", "items": SCALE_AUTH}, "identity": STRING},
                         ("name", "type", "metadata"))

CONTAINER_APP_JOB = _object({
    "location": STRING, "name": STRING, "type": {"const": "Microsoft.App/jobs"}, "identity": IDENTITY,
    "tags": STRING_MAP,
    "properties": _object({
        "environmentId": RESOURCE_ID, "workloadProfileName": STRING,
        "configuration": _object({
            "triggerType": {"enum": ["Manual", "Schedule", "Event"]},
            "replicaTimeout": {"type": "integer", "minimum": 1},
            "replicaRetryLimit": {"type": "integer", "minimum": 0},
            "registries": {"type": "array", "items": REGISTRY}, "secrets": {"type": "array", "items": SECRET},
            "eventTriggerConfig": _object({
                "parallelism": {"type": "integer", "minimum": 1},
                "replicaCompletionCount": {"type": "integer", "minimum": 1},
                "scale": _object({
                    "minExecutions": {"type": "integer", "minimum": 0},
                    "maxExecutions": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "rules": {"type": "array", "minItems": 1, "items": JOB_SCALE_RULE},
                }, ("rules",)),
            }, ("scale",)),
            "manualTriggerConfig": {"type": "object"}, "scheduleTriggerConfig": {"type": "object"},
        }, ("triggerType", "replicaTimeout")),
        "template": _object({"containers": {"type": "array", "minItems": 1, "items": CONTAINER},
                             "initContainers": {"type": "array", "items": CONTAINER},
                             "volumes": {"type": "array", "items": {"type": "object"}}}, ("containers",)),
    }, ("environmentId", "configuration", "template")),
}, ("name", "type", "properties"))

__all__ = ["CONTAINER_APP", "CONTAINER_APP_JOB"]
