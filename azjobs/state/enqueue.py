"""Enqueueing a tracked job: the READY record first, then the message; unique jobs.

The READY record is written before the message is sent, and its ETag travels in the message
(``options.state_etag``) so the worker's start is a single conditional write. A store that
cannot be reached never stops an enqueue: the message is sent without the ETag and the
worker creates the record when the job starts.

Unique jobs (``job.options(unique_key="order-42")`` or ``unique=True``: the job name and its
arguments) hold a key in the state table: a conditional insert, so of many concurrent
enqueues one sends and the others get its id back. The key is held while that job is not
finished and for ``unique_ttl`` (default 1 hour) after it is due, so a lost job cannot block
it forever. If the table cannot be reached the message is sent anyway (a duplicate is
preferred to a loss), logged as ``unique_unavailable``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import ConfigurationError
from ..model.envelope import utcnow
from ..model.secrets import describe, get_logger
from ..storage.delays import plan_delivery
from .store import store_for
from .entities import unique_key_for
from ..model.tracking import ETAG_OPTION, TRACK_OPTION, wants_state

if TYPE_CHECKING:
    from ..model.definition import JobDefinition
    from ..model.envelope import Envelope

log = get_logger("azjobs.state")

DEFAULT_UNIQUE_TTL = timedelta(hours=1)
STATE_CALL_OPTIONS = ("track", "unique", "unique_key", "unique_ttl")


def check_call_options(options: Mapping[str, Any]) -> None:
    """Raise ConfigurationError for a bad ``track``/``unique``/``unique_key``/``unique_ttl``."""
    for flag in ("track", "unique"):
        if flag in options and not isinstance(options[flag], bool):
            raise ConfigurationError(f"{flag}= takes True or False, got {options[flag]!r}")
    key = options.get("unique_key")
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise ConfigurationError(f"unique_key= takes a non-empty string, got {key!r}")
    if key is not None and options.get("unique") is False:
        raise ConfigurationError("give unique_key= or unique=False, not both")
    if options.get("track") is False and (key is not None or options.get("unique") is True):
        raise ConfigurationError("a unique job is tracked: give unique=/unique_key= or track=False, not both")
    if "unique_ttl" in options:
        unique_ttl(options)


def unique_ttl(options: Mapping[str, Any]) -> timedelta:
    ttl = options.get("unique_ttl", DEFAULT_UNIQUE_TTL)
    if isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        ttl = timedelta(seconds=ttl)
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise ConfigurationError(f"unique_ttl= takes a positive number of seconds or timedelta, got {ttl!r}")
    return ttl


def unique_key(definition: "JobDefinition", options: Mapping[str, Any], envelope: "Envelope") -> str | None:
    if options.get("unique_key") is not None:
        return f"{definition.name}:key:{options['unique_key']}"
    if options.get("unique", getattr(definition, "unique", False)):
        return unique_key_for(definition.name, envelope.args, dict(envelope.kwargs),
                              getattr(definition, "signature", None))
    return None


def _visible_at(options: Mapping[str, Any]) -> datetime:
    now = utcnow()
    delivery = plan_delivery(options.get("delay"), options.get("at"), now)
    return now + timedelta(seconds=delivery.visibility_timeout)


def enqueue_tracked(client: Any, definition: "JobDefinition", options: Mapping[str, Any],
                    envelope: "Envelope") -> str:
    """Send ``envelope`` with its READY record (and unique key); returns the job id that holds the work."""
    store = store_for(client)
    visible_at = _visible_at(options)  # a bad delay fails here, before anything is written
    envelope = envelope.evolve(options={**dict(envelope.options), TRACK_OPTION: True})
    key = unique_key(definition, options, envelope)
    claimed = False
    if key is not None:
        try:
            holder = store.claim_unique(key, envelope.id, unique_ttl(options), visible_at=visible_at)
        except Exception as exc:
            log.warning("could not check unique key of %s (%s): sending anyway", definition.name, describe(exc),
                        extra={"action": "unique_unavailable", "job": definition.name, "job_id": envelope.id})
        else:
            if holder is not None:
                log.info("job %s not sent: %s holds its unique key", definition.name, holder,
                         extra={"action": "unique_job_exists", "job": definition.name, "job_id": holder})
                return holder
            claimed = True
    etag = None
    try:
        etag = store.enqueued(envelope, visible_at=visible_at)
    except Exception as exc:
        log.warning("READY record of %s %s not written (%s): sending anyway; the worker will create it",
                    definition.name, envelope.id, describe(exc),
                    extra={"action": "state_unavailable", "job": definition.name, "job_id": envelope.id,
                           "what": "ready"})
    if etag:
        envelope = envelope.evolve(options={**dict(envelope.options), ETAG_OPTION: etag})
    try:
        client.send(envelope, delay=options.get("delay"), at=options.get("at"))
    except BaseException:
        _undo(store, envelope.id, etag, key if claimed else None)
        raise
    return envelope.id


def _undo(store: Any, job_id: str, etag: str | None, key: str | None) -> None:
    """Best effort: the message was not sent, so neither its record nor its unique key should stay."""
    try:
        if etag:
            store.forget(job_id, etag)
        if key is not None:
            store.release_unique(key, job_id)
    except Exception as exc:
        log.warning("could not remove the record of unsent job %s: %s", job_id, describe(exc),
                    extra={"action": "state_cleanup_failed", "job_id": job_id})


def send_many_tracked(client: Any, definition: "JobDefinition", options: Mapping[str, Any],
                      envelopes: Sequence["Envelope"], max_workers: int = 8) -> list[Any]:
    """``enqueue_tracked`` for each envelope, concurrently; each result is the job id or the exception."""
    if not envelopes:
        return []

    def one(envelope: "Envelope") -> Any:
        try:
            return enqueue_tracked(client, definition, options, envelope)
        except Exception as exc:
            return exc

    # A client may cap the threads (azjobs.testing's InlineClient: 1, each job runs as it is sent, in order).
    workers = max(1, min(max_workers, len(envelopes), getattr(client, "send_threads", max_workers)))
    if workers == 1:  # in the caller's thread
        return [one(envelope) for envelope in envelopes]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="azjobs-send") as pool:
        return list(pool.map(one, envelopes))


__all__ = ["DEFAULT_UNIQUE_TTL", "STATE_CALL_OPTIONS", "check_call_options", "enqueue_tracked",
           "send_many_tracked", "wants_state"]
