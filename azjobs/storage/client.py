"""The enqueue side: sending envelopes to queues with only ``azure-storage-queue``.

No Functions package is imported here, so any Python app can enqueue.
"""

from __future__ import annotations

import functools
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import DelayError, EnqueueError, PayloadTooLargeError, QueueNotFoundError
from ..model.envelope import Envelope, format_time, utcnow
from ..model.settings import QueueSettings
from ..state.store import DEFAULT_RETENTION, default_table
from ..telemetry import tracing
from .connection import Connection, connection_from_string, redact, resolve_connection
from .payloads import DEFAULT_CONTAINER, PayloadStore

if TYPE_CHECKING:
    from .aio import AsyncClient

# The service's maximum visibility timeout: a longer delay hops (see core.defer).
MAX_VISIBILITY = timedelta(days=7)
NEVER_EXPIRE = -1


@dataclass(frozen=True)
class Delivery:
    """When a message becomes visible, and the due time it carries when that is beyond one hop."""

    visibility_timeout: int  # seconds
    due_at: str | None = None


def plan_delivery(delay: float | timedelta | None = None, at: datetime | None = None, now: datetime | None = None) -> Delivery:
    """Turn ``delay``/``at`` into an initial visibility; past 7 days the message carries ``due_at``."""
    now = now or utcnow()
    if delay is not None and at is not None:
        raise DelayError("give either a delay or a time, not both")
    if at is not None:
        if not isinstance(at, datetime):
            raise DelayError(f"enqueue_at takes a datetime, got {at!r}")
        if at.tzinfo is None:
            raise DelayError("enqueue_at needs a timezone-aware datetime (e.g. datetime.now(timezone.utc) + ...)")
        seconds = (at - now).total_seconds()
    elif delay is not None:
        if isinstance(delay, timedelta):
            seconds = delay.total_seconds()
        elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
            try:
                seconds = float(delay)
            except OverflowError:  # an int beyond any float
                seconds = math.inf if delay > 0 else -math.inf
        else:
            raise DelayError(f"a delay is seconds (int/float) or a timedelta, got {_shown(delay)}")
        if math.isnan(seconds) or seconds < 0:
            raise DelayError(f"a delay must be zero or more seconds, got {_shown(delay)}")
        if math.isinf(seconds):
            raise DelayError(f"delay {_shown(delay)} is too far in the future: a due time must be before the year 10000")
    else:
        return Delivery(0)
    seconds = max(0.0, seconds)
    visibility = math.ceil(seconds)  # never run early
    if visibility <= MAX_VISIBILITY.total_seconds():
        return Delivery(visibility)
    try:
        due = now + timedelta(seconds=seconds)
        # The wire format keeps milliseconds: round up so a worker never sees the job as due early.
        due += timedelta(microseconds=(1000 - due.microsecond % 1000) % 1000)
        due_text = format_time(due)
    except (OverflowError, ValueError):
        what = f"enqueue_at time {_shown(at)}" if at is not None else f"delay {_shown(delay)}"
        raise DelayError(f"{what} is too far in the future: a due time must be before the year 10000") from None
    return Delivery(int(MAX_VISIBILITY.total_seconds()), due_text)


def _shown(value: Any, width: int = 60) -> str:
    """A short repr for error messages (an integer too long for repr included)."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__} of {value.bit_length() if isinstance(value, int) else '?'} bits>"
    return text if len(text) <= width else text[: width - 1] + "…"


def _storage_error(exc: Exception, queue: str, connection: Connection | None = None) -> Exception:
    """Map an SDK error to a clear azjobs error (never with a secret in it)."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

    if isinstance(exc, ResourceNotFoundError) or getattr(exc, "error_code", None) == "QueueNotFound":
        return QueueNotFoundError(queue)
    if isinstance(exc, HttpResponseError) and exc.status_code == 413:
        return PayloadTooLargeError(f"queue {queue!r} refused the message as too large (413)")
    if isinstance(exc, ServiceRequestError):
        at = f" at {connection.queue_endpoint}" if connection is not None else ""
        # The SDK's own words follow (redacted), for whoever reads the log: they name the request.
        return EnqueueError(f"cannot reach the queue service{at} for {queue!r}: {network_reason(exc)}; "
                            f"{_first_line(str(exc))}")
    return EnqueueError(f"sending to queue {queue!r} failed: {storage_error_text(exc, connection)}")


def storage_error_text(exc: BaseException, connection: Connection | None = None) -> str:
    """One line saying what went wrong with a storage call: no XML body, no traceback, no secret."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    at = f" at {connection.queue_endpoint}" if connection is not None else ""
    source = _source_label(connection)
    if isinstance(exc, ServiceRequestError):
        return f"cannot reach the queue service{at}: {network_reason(exc)}"
    if isinstance(exc, ServiceResponseError):
        return f"the queue service{at} did not answer: {network_reason(exc)}"
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        code = exc.error_code or (exc.reason or "")
        if status == 403 and (code == "AuthenticationFailed" or isinstance(exc, ClientAuthenticationError)):
            return (f"storage{at} rejected the credentials (403 AuthenticationFailed): the AccountKey or "
                    f"SharedAccessSignature of {source} is wrong, or the SAS has expired")
        if status == 403:
            return (f"storage{at} denied the request (403 {code}): the credentials of {source} lack a permission "
                    "(a SAS needs queue read, add, update and process rights; an identity needs "
                    "Storage Queue Data Contributor)")
        first = _first_line(getattr(exc, "message", None) or str(exc))
        return f"storage{at} answered {status} {code}: {first}".replace("  ", " ")
    return _first_line(str(exc)) or type(exc).__name__


def _source_label(connection: Connection | None) -> str:
    if connection is None:
        return "the connection string"
    if connection.source == "argument" or connection.source.startswith("argument "):
        return "the connection string given to azjobs.configure() or azjobs.Client()"
    return f"app setting {connection.source.split(' ')[0]}"


def _first_line(text: str) -> str:
    for line in redact(text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def network_reason(exc: BaseException) -> str:
    """Why a connection failed, in words: refused, unknown host, timed out."""
    import errno
    import socket

    seen: set[int] = set()
    pending: list[Any] = [exc]
    texts = []
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        texts.append(str(error))
        if isinstance(error, ConnectionRefusedError) or getattr(error, "errno", None) == errno.ECONNREFUSED:
            return REFUSED
        if isinstance(error, socket.gaierror):
            return UNKNOWN_HOST
        if isinstance(error, BaseException):
            pending.extend([error.__cause__, error.__context__, getattr(error, "inner_exception", None),
                            getattr(error, "os_error", None),
                            *(a for a in error.args if isinstance(a, BaseException))])
    text = " ".join(texts)
    if "Connection refused" in text or "Connect call failed" in text or "ECONNREFUSED" in text:
        return REFUSED
    if any(marker in text for marker in ("Name or service not known", "nodename nor servname", "getaddrinfo",
                                         "Temporary failure in name resolution", "No address associated")):
        return UNKNOWN_HOST
    if "timed out" in text.lower() or "timeout" in text.lower():
        return "the connection timed out"
    return _first_line(str(exc)) or type(exc).__name__


REFUSED = "connection refused (nothing listens there: is storage running, is the endpoint right?)"
UNKNOWN_HOST = "the host name does not resolve (check the account name or the endpoint)"


def http_session(pool: int):
    """A requests session whose connection pool fits ``pool`` concurrent calls (the SDK's default is 10)."""
    from urllib.request import getproxies_environment

    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    # Without proxy variables, skip requests' per-call look-ups of the environment and ~/.netrc
    # (about 15% of a busy worker's CPU).
    session.trust_env = bool(getproxies_environment())
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# A connection that cannot be made (refused, unknown host, connect timeout) is retried once,
# quickly: nothing listening is not a hiccup worth 10 s of back-off. 5xx answers and broken
# responses keep the usual retries.
CONNECT_TIMEOUT_S = 5
CONNECT_RETRIES = 1
CONNECT_RETRY_BACKOFF_S = 0.5


@functools.lru_cache(maxsize=None)
def fast_connect_retry(base: type) -> type:
    """``base`` (a Storage ``ExponentialRetry``, sync or async) with a short back-off after a failed connect."""
    from azure.core.exceptions import ServiceRequestError

    class FastConnectRetry(base):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("retry_connect", CONNECT_RETRIES)
            super().__init__(**kwargs)

        def get_backoff_time(self, settings: dict) -> float:
            history = settings.get("history") or []
            if history and isinstance(getattr(history[-1], "error", None), ServiceRequestError):
                return CONNECT_RETRY_BACKOFF_S
            return super().get_backoff_time(settings)

    FastConnectRetry.__name__ = FastConnectRetry.__qualname__ = f"FastConnect{base.__name__}"
    return FastConnectRetry


def table_service(connection: Any, **kwargs: Any):
    """A ``TableServiceClient`` for ``connection``'s account with short retries (2, 0.3 s apart) and
    timeouts: a table that cannot be reached is reported in seconds (job state, workflow pages)."""
    return connection.table_service(retry_total=2, retry_connect=1, retry_backoff_factor=0.3,
                                    connection_timeout=CONNECT_TIMEOUT_S, read_timeout=10, **kwargs)


def sdk_retry():
    """Short SDK retries (about 1, 3, 5 s) instead of the default 15 s, 18 s, 42 s back-off; a refused
    connection is retried once after 0.5 s, so it fails in about a second."""
    from azure.storage.queue import ExponentialRetry

    return fast_connect_retry(ExponentialRetry)(initial_backoff=1, increment_base=2, retry_total=3)


def sdk_retry_async():
    """``sdk_retry`` for the asyncio SDK clients."""
    try:
        from azure.storage.queue._shared.policies_async import ExponentialRetry
    except ImportError:  # pragma: no cover - the SDK moved it: its default policy with our numbers
        return None
    return fast_connect_retry(ExponentialRetry)(initial_backoff=1, increment_base=2, retry_total=3)


@dataclass
class EnqueueManyResult:
    """Per-item outcome of ``enqueue_many``: ``results[i]`` is the job id or the exception."""

    envelopes: list[Envelope | None]
    results: list[Any] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r for r in self.results if isinstance(r, str)]

    @property
    def failures(self) -> list[tuple[int, BaseException]]:
        return [(i, r) for i, r in enumerate(self.results) if isinstance(r, BaseException)]

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> "EnqueueManyResult":
        if self.failures:
            first_index, first = self.failures[0]
            raise EnqueueError(
                f"{len(self.failures)} of {len(self.results)} messages were not sent; first (item {first_index}): {first}"
            ) from first
        return self


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
        state_retention: timedelta = DEFAULT_RETENTION,
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
        # Job state (azjobs.state): None follows the process (azjobs.configure(state=...), AZJOBS_STATE).
        self.state = state
        self.state_table = state_table or default_table()  # AZJOBS_STATE_TABLE, else azjobsstate
        self.state_retention = state_retention
        self._state_store: Any = None

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
                    session=http_session(self.pool_size), retry_policy=sdk_retry(),
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

    @property
    def state_store(self):
        """The job state store (Table Storage on the same account): ``azjobs.state.StateStore``."""
        with self._lock:
            if self._state_store is None:
                from ..state.store import StateStore

                self._state_store = StateStore.from_connection(self.connection, self.state_table,
                                                               self.state_retention, payloads=self._payloads_locked())
            return self._state_store

    def _payloads_locked(self) -> PayloadStore:
        if self._payloads is None:
            self._payloads = PayloadStore(self.connection, self.payload_container)
        return self._payloads

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

    def aio(self) -> "AsyncClient":
        from .aio import AsyncClient

        return AsyncClient(self)

    def close(self) -> None:
        with self._lock:
            if self._service is not None:
                self._service.close()
            self._service = None
            self._queues.clear()
            payloads, self._payloads = self._payloads, None
            state_store, self._state_store = self._state_store, None
        if payloads is not None:
            payloads.close()
        if state_store is not None:
            state_store.close()


def _forget(store: PayloadStore, ref: str) -> None:
    """Best-effort removal of a payload blob whose message was never sent."""
    try:
        store.delete(ref)
    except Exception:  # an orphan blob is harmless; the caller reports the send failure
        pass


_default: Client | None = None
_default_lock = threading.Lock()


def configure(connection: Connection | str | None = None, *, propagate_baggage: bool | None = None,
              **options: Any) -> Client:
    """Set the process-wide client used by ``job.enqueue`` (connection, host.json settings, ...).

    ``propagate_baggage=True`` carries W3C Baggage in messages and reads it from them, for the whole
    process (azjobs.telemetry.tracing; off unless set here or by ``AZJOBS_PROPAGATE_BAGGAGE=1``).
    """
    global _default
    with _default_lock:
        client = Client(connection, **options)  # a bad connection string fails here, the old client stays
        if propagate_baggage is not None:
            tracing.propagate_baggage(propagate_baggage)
        if options.get("state") is not None:
            from ..state.tracker import enable

            enable(options["state"])  # for every executor in the process (the Functions one too)
        if _default is not None:
            _default.close()
        _default = client
        return _default


def default_client() -> Client:
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def async_client():
    from .aio import AsyncClient

    return AsyncClient(default_client())
