"""The queue client: sending envelopes (and raw message text) with only ``azure-storage-queue``.

No Functions package and no azjobs feature is imported here, so any Python app can enqueue.
Features that keep per-client objects (the job state store) hang them on the client with
``extension`` and are closed with it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence

from ..errors import EnqueueError, PayloadTooLargeError, QueueNotFoundError
from ..model.envelope import Envelope
from ..model.settings import QueueSettings
from .connection import Connection, connection_from_string, resolve_connection
from .delays import NEVER_EXPIRE, Delivery, plan_delivery
from .errors import to_enqueue_error as _storage_error
from .http import CONNECT_TIMEOUT_S, sdk_retry
from .payloads import DEFAULT_CONTAINER, PayloadStore


class Client:
    """Sends messages. Thread-safe; one per process is enough (see ``default_client``)."""

    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        settings: QueueSettings | None = None,
        message_encoding: str | None = None,
        create_queues: bool = True,
        message_ttl: int | timedelta | None = NEVER_EXPIRE,
        pool_size: int = 32,
        payload_container: str = DEFAULT_CONTAINER,
        state: bool | None = None,
        state_table: str | None = None,
        state_retention: timedelta | None = None,
    ) -> None:
        if isinstance(connection, str):
            connection = connection_from_string(connection, "argument")
        self._connection = connection
        self._settings = settings
        self._encoding = message_encoding
        self.create_queues = create_queues
        if isinstance(message_ttl, timedelta):
            message_ttl = int(message_ttl.total_seconds())
        self.message_ttl = message_ttl
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self._service = None
        self._queues: dict[str, Any] = {}
        self._known_queues: set[str] = set()
        self.payload_container = payload_container
        self._payloads: PayloadStore | None = None
        # Job state (azjobs.state): None follows the process (azjobs.configure(state=...), AZJOBS_STATE);
        # no table named: AZJOBS_STATE_TABLE, else azjobsstate; no retention: 7 days.
        self.state = state
        self.state_table = state_table
        self.state_retention = state_retention
        self._extensions: dict[str, Any] = {}
        self._extensions_lock = threading.Lock()

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = resolve_connection()
        return self._connection

    @property
    def settings(self) -> QueueSettings:
        if self._settings is None:
            self._settings = QueueSettings.load()
        return self._settings

    @property
    def encoding(self) -> str:
        return self._encoding or self.settings.message_encoding

    def service(self):
        with self._lock:
            if self._service is None:
                self._service = self.connection.queue_service(
                    pool=self.pool_size, retry_policy=sdk_retry(),
                    connection_timeout=CONNECT_TIMEOUT_S,
                )
            return self._service

    @property
    def payloads(self) -> PayloadStore:
        """The claim-check store (Blob Storage on the same account) for arguments over the message limit."""
        with self._lock:
            if self._payloads is None:
                self._payloads = PayloadStore(self.connection, self.payload_container)
            return self._payloads

    def extension(self, key: str, make: Callable[["Client"], Any]) -> Any:
        """A feature's object for this client (the job state store: ``azjobs.state.store_for``), made once by
        ``make(client)``; one with a ``close()`` is closed with the client."""
        with self._extensions_lock:
            made = self._extensions.get(key)
            if made is None:
                made = self._extensions[key] = make(self)
            return made

    def queue(self, name: str):
        """The SDK ``QueueClient`` for ``name`` (no encode policy: azjobs encodes itself)."""
        client = self._queues.get(name)
        if client is None:
            client = self.service().get_queue_client(name)
            with self._lock:
                client = self._queues.setdefault(name, client)
        return client

    def ensure_queue(self, name: str) -> bool:
        """Create ``name`` if missing; True if it was created."""
        from azure.core.exceptions import ResourceExistsError

        try:
            self.queue(name).create_queue()
            created = True
        except ResourceExistsError:
            created = False
        except Exception as exc:
            raise _storage_error(exc, name, self.connection) from exc
        self._known_queues.add(name)
        return created

    def send_text(self, queue: str, text: str, *, visibility_timeout: int = 0, time_to_live: int | None = None,
                  create: bool | None = None) -> Any:
        """Send already-encoded message text; creates the queue on first use if allowed.

        ``create`` overrides ``create_queues`` for this call: poison queues are always created
        when missing, as the Functions host creates them.
        """
        from azure.core.exceptions import ResourceNotFoundError

        ttl = self.message_ttl if time_to_live is None else time_to_live
        kwargs = {"visibility_timeout": visibility_timeout or None, "time_to_live": ttl}
        try:
            return self.queue(queue).send_message(text, **kwargs)
        except ResourceNotFoundError:
            if not (self.create_queues if create is None else create):
                raise QueueNotFoundError(queue) from None
            try:
                self.ensure_queue(queue)
                return self.queue(queue).send_message(text, **kwargs)
            except Exception as retry_exc:
                raise _storage_error(retry_exc, queue, self.connection) from retry_exc
        except Exception as exc:
            raise _storage_error(exc, queue, self.connection) from exc

    def prepare(self, envelope: Envelope, delay=None, at=None) -> tuple[str, Delivery, Envelope]:
        """Plan the delivery and encode; raises before any network call on bad input."""
        delivery = plan_delivery(delay, at)
        if delivery.due_at is not None:
            envelope = envelope.evolve(due_at=delivery.due_at)
        queue = envelope.queue
        if queue is None:
            raise EnqueueError(f"envelope for {envelope.job} names no queue")
        return envelope.encode(self.encoding), delivery, envelope

    def prepare_claim_check(self, envelope: Envelope, delay, at,
                            too_large: PayloadTooLargeError) -> tuple[str, Delivery, Envelope]:
        """After ``prepare`` found ``envelope`` too large: store its arguments in Blob Storage and
        prepare the message that carries the reference instead (re-raises ``too_large`` when
        the arguments are not what makes it large)."""
        if envelope.payload_ref is not None or (not envelope.args and not envelope.kwargs):
            raise too_large
        plan_delivery(delay, at)  # a bad delay fails before anything is uploaded
        return self.prepare(self.payloads.offload(envelope), delay, at)

    def send(self, envelope: Envelope, *, delay=None, at=None) -> str:
        """Send one envelope to its queue; returns the job id.

        Arguments too large for a message go to Blob Storage and the message carries a
        reference to them (claim check); the blob is removed again if the send fails.
        """
        offloaded = None
        try:
            text, delivery, envelope = self.prepare(envelope, delay, at)
        except PayloadTooLargeError as too_large:
            text, delivery, envelope = self.prepare_claim_check(envelope, delay, at, too_large)
            offloaded = envelope.payload_ref
        ttl = NEVER_EXPIRE if delivery.due_at else None
        try:
            self.send_text(envelope.queue, text, visibility_timeout=delivery.visibility_timeout, time_to_live=ttl)
        except Exception:
            if offloaded:
                _forget(self.payloads, offloaded)
            raise
        return envelope.id

    def send_many(self, envelopes: Sequence[Envelope], *, delay=None, at=None, max_workers: int = 8) -> list[Any]:
        """Send concurrently (Azure has no batch send); each result is the job id or the exception."""
        if not envelopes:
            return []

        def one(envelope: Envelope) -> Any:
            try:
                return self.send(envelope, delay=delay, at=at)
            except Exception as exc:  # reported per item
                return exc

        # Create each queue once up front rather than racing on first use.
        if self.create_queues:
            for queue in {e.queue for e in envelopes} - self._known_queues:
                try:
                    self.ensure_queue(queue)
                except Exception:
                    pass  # the sends report it per item
        workers = max(1, min(max_workers, len(envelopes)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="azjobs-send") as pool:
            return list(pool.map(one, envelopes))

    def close(self) -> None:
        with self._lock:
            if self._service is not None:
                self._service.close()
            self._service = None
            self._queues.clear()
            payloads, self._payloads = self._payloads, None
        with self._extensions_lock:
            extensions, self._extensions = list(self._extensions.values()), {}
        for extension in extensions:
            close = getattr(extension, "close", None)
            if close is not None:
                close()
        if payloads is not None:
            payloads.close()


def _forget(store: PayloadStore, ref: str) -> None:
    """Best-effort removal of a payload blob whose message was never sent."""
    try:
        store.delete(ref)
    except Exception:  # an orphan blob is harmless; the caller reports the send failure
        pass


_default: Client | None = None
_default_lock = threading.Lock()
# Clients that take every enqueue of the process while set (``routed_to``); the innermost is last.
_routes: list[Any] = []


def set_default_client(client: Client) -> Client:
    """Make ``client`` the process-wide client (``azjobs.configure`` does); the one it replaces is closed."""
    global _default
    with _default_lock:
        old, _default = _default, client
    if old is not None and old is not client:
        old.close()
    return client


def default_client() -> Client:
    """The process-wide client: a routed client while one is set (``routed_to``), else ``configure``'s."""
    global _default
    with _default_lock:
        if _routes:
            return _routes[-1]
        if _default is None:
            _default = Client()
        return _default


def client_for(client: Any = None) -> Any:
    """The client an enqueue sends through: a routed client while one is set, else ``client``, else the default.

    Every enqueue path (``job.enqueue`` and its family, ``flow.enqueue``, periodic ticks, the Django backend)
    asks here, so ``routed_to`` reaches the calls that name a client of their own too.
    """
    with _default_lock:
        if _routes:
            return _routes[-1]
    return client if client is not None else default_client()


@contextmanager
def routed_to(client: Any) -> Iterator[Any]:
    """Send every enqueue of this process through ``client`` while the block runs: ``default_client()`` and
    ``client_for()`` answer it. The seam ``azjobs.testing.inline()`` (a client that runs each job at once) and
    the pytest plugin's ``azjobs_worker`` use; blocks nest, the innermost wins. The routed client is not
    closed here: its owner closes it."""
    with _default_lock:
        _routes.append(client)
    try:
        yield client
    finally:
        with _default_lock:
            for index in range(len(_routes) - 1, -1, -1):
                if _routes[index] is client:
                    del _routes[index]
                    break


__all__ = ["Client", "client_for", "default_client", "routed_to", "set_default_client"]
