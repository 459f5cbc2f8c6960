"""Enqueue from asyncio apps, on ``azure.storage.queue.aio`` (needs aiohttp).

The SDK's async clients hold an aiohttp session bound to one event loop. azjobs keeps one
per (client, loop), reused by every send on that loop, and closes it when the loop shuts
down: ``asyncio.run``, ``asyncio.Runner`` and the other standard runners finalize a loop's
async generators before closing it (``loop.shutdown_asyncgens()``), and azjobs parks one
there whose ``finally`` closes the sessions. So ``asyncio.run(job.enqueue_async(...))``
needs no clean-up call and prints no "Unclosed client session". ``aclose()`` closes them
earlier; a loop closed by hand without ``shutdown_asyncgens()`` leaves them to the garbage
collector, as any aiohttp session.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from ..errors import PayloadTooLargeError, QueueNotFoundError
from ..model.envelope import Envelope
from .client import Client, _forget, default_client
from .delays import NEVER_EXPIRE
from .errors import to_enqueue_error as _storage_error
from .http import CONNECT_TIMEOUT_S, sdk_retry_async

log = logging.getLogger("azjobs.aio")


class _LoopServices:
    """The SDK async service clients opened on one event loop, and the guard that closes them."""

    def __init__(self) -> None:
        self.services: dict[int, Any] = {}
        self.guard: Any = None

    async def close(self) -> None:
        services, self.services = list(self.services.values()), {}
        for service in services:
            try:
                await service.close()
            except Exception as exc:  # closing is best effort; never hide the caller's own outcome
                log.debug("could not close an azjobs async queue client: %s", exc)


# One SDK async service client per (client, event loop): aio clients are bound to their loop.
_loops: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopServices]" = weakref.WeakKeyDictionary()


async def _close_at_shutdown(loop_ref: "weakref.ref[asyncio.AbstractEventLoop]", state: _LoopServices):
    """Parked at its ``yield`` for the loop's lifetime; the loop's ``shutdown_asyncgens()`` closes it."""
    try:
        yield
    finally:
        loop = loop_ref()
        if loop is not None and _loops.get(loop) is state:
            del _loops[loop]
        await state.close()


def _loop_services(loop: asyncio.AbstractEventLoop) -> _LoopServices:
    state = _loops.get(loop)
    if state is None:
        state = _loops[loop] = _LoopServices()
        guard = _close_at_shutdown(weakref.ref(loop), state)
        # Start it in this loop's thread: the loop's first-iteration hook registers it for
        # shutdown_asyncgens(). It stops at its yield at once.
        step = guard.__anext__()
        try:
            step.send(None)
        except StopIteration:
            pass
        state.guard = guard  # kept alive with the state; garbage-collected, it closes the services too
    return state


class AsyncClient:
    """The async face of a ``Client``: same connection, encoding and options."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _service(self):
        state = _loop_services(asyncio.get_running_loop())
        service = state.services.get(id(self.client))
        if service is None:
            options: dict[str, Any] = {"connection_timeout": CONNECT_TIMEOUT_S}
            retry = sdk_retry_async()
            if retry is not None:
                options["retry_policy"] = retry
            service = self.client.connection.queue_service_async(**options)
            state.services[id(self.client)] = service
        return service

    async def send(self, envelope: Envelope, *, delay=None, at=None) -> str:
        """Send one envelope; arguments over the message limit go to Blob Storage (claim check).

        A client that is not an ``azjobs.Client`` (``azjobs.testing``'s, which keep or run what they are sent in
        this process) sends in a thread instead, off the event loop."""
        if not isinstance(self.client, Client):
            return await asyncio.to_thread(self.client.send, envelope, delay=delay, at=at)
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
        connection = self.client.connection
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
                raise _storage_error(exc, envelope.queue, connection) from exc
        except Exception as exc:
            raise _storage_error(exc, envelope.queue, connection) from exc
        return envelope.id


async def aclose() -> None:
    """Close the async SDK clients opened on the running loop now (they are closed with the loop anyway)."""
    state = _loops.pop(asyncio.get_running_loop(), None)
    if state is not None:
        await state.close()


def async_client() -> AsyncClient:
    """The asyncio sender of the process-wide client."""
    return AsyncClient(default_client())
