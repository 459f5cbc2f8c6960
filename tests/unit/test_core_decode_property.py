"""Random bytes and random JSON at the decoder and the execution core (no storage).

The decoder may raise only the typed EnvelopeError; the core never raises for bad input,
settles every message (poison, retry or deferral written), and runs nothing.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import azjobs
from azjobs.execution.executor import Executor
from azjobs.hosting import executor as hosted_executor
from azjobs.model.outcome import MessageInfo, Outcome
from azjobs.errors import EnvelopeError
from azjobs.model.envelope import Envelope
from azjobs.model.poison_record import PoisonRecord
from azjobs.testing import RecordingClient

REGISTRY = azjobs.Registry()
RAN: list = []
QUEUE = "prop-queue"


@azjobs.job(queue=QUEUE, registry=REGISTRY)
def target(a: int, b: str = "x") -> None:
    RAN.append((a, b))


def executor(encoding: str = "base64") -> Executor:
    client = RecordingClient(encoding)
    fixed_now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    return hosted_executor(registry=REGISTRY, client=client, settings=client.settings, host="prop",  # type: ignore[arg-type]
                    clock=lambda: fixed_now)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
job_names = st.text(min_size=0, max_size=30).filter(lambda name: name != target.name) | st.sampled_from(
    ["os.system", "subprocess.call", "builtins.eval", "azjobs.configure", "tests.unit.test_core_decode_property.RAN"])
timestamps = st.sampled_from(["2026-01-01T00:00:00.000Z", "2027-01-01T00:00:00Z", "not a time", "2026-13-01", ""])
envelope_like = st.fixed_dictionaries(
    {"azjobs": st.sampled_from([1, 1, 1, 2, "1", True, None])},
    optional={
        "job": job_names | json_values,
        "id": st.text(max_size=10) | json_values,
        "args": st.lists(json_values, max_size=3) | json_values,
        "kwargs": st.dictionaries(st.text(max_size=5), json_values, max_size=3) | json_values,
        "attempt": st.integers(min_value=-3, max_value=10**6) | json_values,
        "enqueued_at": timestamps | json_values,
        "due_at": timestamps,
        "first_failed_at": timestamps,
        "queue": st.text(max_size=10) | json_values,
        "options": st.dictionaries(st.sampled_from(["max_retries", "x"]), json_values, max_size=2) | json_values,
        "trace": json_values,
        "payload_ref": st.sampled_from(["azjobs-payloads/a.json", "other/a.json", "nope", "azjobs-payloads/../x"])
        | json_values,
    },
)
bodies_as_bytes = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    envelope_like.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b'{"azjobs":1,"job":"x","id":"i","enqueued_at":"2026-01-01T00:00:00Z","args":[NaN]}',
                     b'{"azjobs":1,"job":"x","id":"i","enqueued_at":"2026-01-01T00:00:00Z","args":[1e400]}',
                     b"[" * 5000 + b"]" * 5000]),
)
PROFILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def wire_forms(raw: bytes) -> list[str]:
    forms = [base64.b64encode(raw).decode("ascii")]
    try:
        forms.append(raw.decode("utf-8"))  # not base64, or a plain body
    except UnicodeDecodeError:
        pass
    return forms


def check_settled(ex: Executor, result, before: int) -> None:
    assert result.outcome in (Outcome.DEAD_LETTERED, Outcome.RETRY_SCHEDULED, Outcome.DEFERRED)
    assert not result.ran
    writes = ex.client.writes[before:]
    assert len(writes) == 1  # exactly one durable copy: poison record, retry or deferral
    queue, text, _, _ = writes[0]
    if result.outcome is Outcome.DEAD_LETTERED:
        assert queue == QUEUE + "-poison"
        record = PoisonRecord.decode(text, ex.settings.message_encoding, QUEUE)
        assert not record.from_host and record.error.reason
    else:
        assert queue == QUEUE
        Envelope.decode(text, ex.settings.message_encoding)  # a valid message again


@PROFILE
@given(raw=bodies_as_bytes)
def test_decoder_raises_only_envelope_error(raw):
    for encoding in ("base64", "none"):
        for body in wire_forms(raw) + [raw]:
            try:
                Envelope.decode(body, encoding)
            except EnvelopeError as exc:
                assert exc.reason
    try:
        Envelope.from_json(raw)
    except EnvelopeError:
        pass
    PoisonRecord.decode(base64.b64encode(raw).decode(), "base64", QUEUE)  # never raises


@PROFILE
@given(raw=bodies_as_bytes, dequeue_count=st.integers(min_value=1, max_value=8))
def test_core_settles_bad_input_and_runs_nothing(raw, dequeue_count):
    RAN.clear()
    for encoding in ("base64", "none"):
        ex = executor(encoding)
        info = MessageInfo(queue=QUEUE, message_id="m", dequeue_count=dequeue_count)
        for body in wire_forms(raw):
            before = len(ex.client.writes)
            check_settled(ex, ex.execute(body, info), before)
        before = len(ex.client.writes)
        check_settled(ex, ex.execute(raw, info, encoded=False), before)  # as the Functions host hands it over
    assert RAN == []


@PROFILE
@given(args=st.lists(json_values, max_size=3), kwargs=st.dictionaries(st.text(max_size=4), json_values, max_size=3))
def test_registered_job_with_random_arguments_never_escapes(args, kwargs):
    ex = executor()
    body = Envelope.build(target.name, tuple(args), kwargs, queue=QUEUE).encode()
    result = ex.execute(body, MessageInfo(queue=QUEUE, message_id="m"))
    if result.outcome is Outcome.SUCCEEDED:
        assert result.ran and ex.client.writes == []
    else:
        assert result.outcome is Outcome.DEAD_LETTERED and result.extra["reason"] == "bad_arguments"
        assert not result.ran


@PROFILE
@given(ref=st.text(max_size=40) | st.sampled_from(["azjobs-payloads/a.json", "azjobs-payloads/", "x/y", "/",
                                                   "azjobs-payloads/../../etc/passwd"]),
       stored=st.none() | st.binary(max_size=50) | json_values.map(lambda v: json.dumps(v).encode()))
def test_random_payload_references_never_escape_and_run_nothing_unless_valid(ref, stored):
    RAN.clear()
    ex = executor()
    if stored is not None and ref.startswith("azjobs-payloads/") and ".." not in ref:
        ex.client.payloads.blobs[ref.split("/", 1)[1]] = stored
    body = Envelope.build(target.name, (), {}, queue=QUEUE, payload_ref=ref).encode()
    result = ex.execute(body, MessageInfo(queue=QUEUE, message_id="m"))
    if result.outcome is Outcome.SUCCEEDED:
        assert len(RAN) == 1
    else:
        assert RAN == [] and result.outcome is Outcome.DEAD_LETTERED
        assert result.extra["reason"] in ("payload_missing", "bad_payload_ref", "bad_payload", "bad_arguments")
