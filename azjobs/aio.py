"""Enqueue from asyncio apps, on ``azure.storage.queue.aio`` (needs aiohttp)."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from .client import NEVER_EXPIRE, Client, _forget, _storage_error
from .errors import PayloadTooLargeError, QueueNotFoundError
from .message import Envelope

# One SDK async service client per (client, event loop): aio clients are bound to their loop.
_services: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Any]]" = weakref.WeakKeyDictionary()


class AsyncClient:
    """The async face of a ``Client``: same connection, encoding and options."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _service(self):
        loop = asyncio.get_running_loop()
        per_loop = _services.setdefault(loop, {})
        service = per_loop.get(id(self.client))
        if service is None:
            service = self.client.connection.queue_service_async()
            per_loop[id(self.client)] = service
        return service

    async def send(self, envelope: Envelope, *, delay=None, at=None) -> str:
        """Send one envelope; arguments over the message limit go to Blob Storage (claim check)."""
        offloaded = None
        try:
            text, delivery, envelope = self.client.prepare(envelope, delay, at)
        except PayloadTooLargeError as too_large:
            text, delivery, envelope = await asyncio.to_thread(self.client.prepare_claim_check, envelope, delay, at,
                                                               too_large)
            offloaded = envelope.payload_ref
        try:
            return await self._send(envelope, text, delivery)
        except Exception:
            if offloaded:
                await asyncio.to_thread(_forget, self.client.payloads, offloaded)
            raise

    async def _send(self, envelope: Envelope, text: str, delivery) -> str:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        ttl = NEVER_EXPIRE if delivery.due_at else self.client.message_ttl
        queue = self._service().get_queue_client(envelope.queue)
        kwargs = {"visibility_timeout": delivery.visibility_timeout or None, "time_to_live": ttl}
        try:
            await queue.send_message(text, **kwargs)
        except ResourceNotFoundError:
            if not self.client.create_queues:
                raise QueueNotFoundError(envelope.queue) from None
            try:
                try:
                    await queue.create_queue()
                except ResourceExistsError:
                    pass
                await queue.send_message(text, **kwargs)
            except Exception as exc:
                raise _storage_error(exc, envelope.queue) from exc
        except Exception as exc:
            raise _storage_error(exc, envelope.queue) from exc
        return envelope.id


async def aclose() -> None:
    """Close the async SDK clients opened on the running loop."""
    per_loop = _services.pop(asyncio.get_running_loop(), {})
    for service in per_loop.values():
        await service.close()
