"""Test helpers for workflows: the Durable host's HTTP management API, in memory.

Core Tools (and so the Durable extension) cannot run here. ``TaskHub`` answers the two
requests the generated start trigger's durable client makes, as the extension's
``HttpApiHandler`` does: ``GET {rpc}instances/{id}`` (404 with no body for an unknown
instance) and ``POST {rpc}orchestrators/{name}/{id}`` (202, ``{"id": ...}``; an existing
instance is replaced, which is why azjobs asks first). Install it with
``TaskHub().install(monkeypatch)``; the client binding JSON is ``TaskHub.binding``.
"""

from __future__ import annotations

import json
from typing import Any

RPC_BASE = "http://127.0.0.1:17071/durabletask/"


class TaskHub:
    def __init__(self) -> None:
        self.instances: dict[str, dict[str, Any]] = {}
        self.starts: list[tuple[str, str, Any]] = []  # (orchestrator, instance id, input) per start request

    @property
    def binding(self) -> str:
        """The durable client binding's value, as the host passes it to the function."""
        return json.dumps({"taskHubName": "TestHubName", "creationUrls": {}, "managementUrls": {},
                           "baseUrl": RPC_BASE, "requiredQueryStringParameters": "", "rpcBaseUrl": RPC_BASE})

    async def get(self, url: str, function_invocation_id: str | None = None) -> list[Any]:
        path = url.split("?", 1)[0]
        if not path.startswith(RPC_BASE + "instances/"):
            return [404, ""]
        instance = self.instances.get(path[len(RPC_BASE + "instances/"):])
        return [200, instance] if instance is not None else [404, ""]

    async def post(self, url: str, data: Any = None, trace_parent: Any = None, trace_state: Any = None,
                   function_invocation_id: str | None = None) -> list[Any]:
        path = url.split("?", 1)[0][len(RPC_BASE):]
        _, name, instance_id = path.split("/", 2)
        self.starts.append((name, instance_id, json.loads(data) if isinstance(data, str) else data))
        self.instances[instance_id] = {"name": name, "instanceId": instance_id, "runtimeStatus": "Running"}
        return [202, {"id": instance_id}]

    def install(self, monkeypatch: Any) -> "TaskHub":
        import importlib

        module = importlib.import_module("azure.durable_functions.models.DurableOrchestrationClient")
        monkeypatch.setattr(module, "get_async_request", self.get)
        monkeypatch.setattr(module, "post_async_request", self.post)
        return self


__all__ = ["TaskHub"]
