"""The poison record format: what lands in ``<queue>-poison`` and how tooling reads it back."""

from __future__ import annotations

import base64

import pytest

from azjobs.errors import PayloadTooLargeError
from azjobs.model.envelope import MAX_MESSAGE_BYTES, Envelope
from azjobs.model.poison_record import MAX_TRACEBACK_CHARS, ErrorInfo, PoisonRecord


def _error() -> ErrorInfo:
    try:
        raise ValueError("bad things")
    except ValueError as exc:
        return ErrorInfo.from_exception(exc, reason="job_failed")


def test_error_info_carries_type_message_and_traceback():
    error = _error()
    assert error.type == "ValueError" and error.message == "bad things"
    assert error.traceback.startswith("Traceback (most recent call last)") and "raise ValueError" in error.traceback
    from azjobs.errors import Fail

    assert ErrorInfo.from_exception(Fail("x")).type == "azjobs.errors.Fail"


@pytest.mark.parametrize("encoding", ["base64", "none"])
def test_record_round_trips_and_is_a_valid_message(encoding):
    envelope = Envelope.build("pkg.job", (1, "two"), {"three": [3]}, queue="work", attempt=5)
    record = PoisonRecord(queue="work", error=_error(), envelope=envelope, attempts=5,
                          first_failed_at="2026-01-01T00:00:00.000Z", host="box-1", message_id="m-1")
    text = record.encode(encoding)
    back = PoisonRecord.decode(text, encoding, "work")
    assert back == record
    assert back.job == "pkg.job" and back.envelope_id == envelope.id and not back.from_host


def test_first_failed_defaults_to_last_failed():
    record = PoisonRecord(queue="q", error=_error())
    data = PoisonRecord.decode(record.encode()).to_dict()
    assert data["first_failed_at"] == data["last_failed_at"] == record.last_failed_at


def test_host_poisoned_envelope_reads_as_a_record_without_error():
    envelope = Envelope.build("pkg.job", (1,), {}, queue="work", attempt=3)
    record = PoisonRecord.decode(envelope.encode(), "base64", "work")
    assert record.from_host and record.envelope == envelope and record.error.reason == "host_poison"
    assert record.replay_envelope().attempt == 1


@pytest.mark.parametrize("body, reason", [
    ("%%% not base64", "not_base64"),
    (base64.b64encode(b"\xff\xfe").decode(), "not_utf8"),
    (base64.b64encode(b"{nope").decode(), "not_json"),
    (base64.b64encode(b'{"a": 1}').decode(), "not_envelope"),
    (base64.b64encode(b'{"azjobs": 7, "job": "x"}').decode(), "unknown_version"),
])
def test_host_poisoned_garbage_keeps_its_body_and_reason(body, reason):
    record = PoisonRecord.decode(body, "base64", "work")
    assert record.from_host and record.envelope is None and record.error.reason == reason
    assert record.replay_text("base64") == body  # sent back exactly as it was


def test_raw_bytes_that_are_not_utf8_are_kept_exactly():
    raw = b"\x00\xff binary \xfe"
    from azjobs.model.poison_record import raw_text

    text, how = raw_text(raw)
    record = PoisonRecord(queue="q", error=_error(), raw_body=text, raw_body_encoding=how)
    back = PoisonRecord.decode(record.encode())
    assert how == "base64" and back.raw_bytes() == raw
    assert base64.b64decode(back.replay_text("base64")) == raw


def test_long_traceback_is_trimmed_from_the_front():
    error = ErrorInfo("E", "m", traceback="x" * 50_000 + "THE END")
    record = PoisonRecord(queue="q", error=error)
    back = PoisonRecord.decode(record.encode())
    assert back.error.traceback.endswith("THE END") and len(back.error.traceback) < MAX_TRACEBACK_CHARS + 100


def test_record_over_the_limit_raises_without_trim_and_its_stub_fits():
    envelope = Envelope.build("pkg.job", ("y" * 49_000,), {}, queue="work")
    record = PoisonRecord(queue="work", error=_error(), envelope=envelope)
    with pytest.raises(PayloadTooLargeError):
        record.encode("base64", trim=False)
    stub = record.stub("azjobs-payloads/poison/x.json")
    text = stub.encode()
    assert len(text) < MAX_MESSAGE_BYTES
    back = PoisonRecord.decode(text)
    assert back.envelope is None and back.record_ref == "azjobs-payloads/poison/x.json"
    assert back.job == "pkg.job" and back.envelope_id == envelope.id and back.error == record.error


def test_replay_envelope_resets_attempts_and_failure_times():
    envelope = Envelope.build("pkg.job", (), {}, queue="work", attempt=5, first_failed_at="2026-01-01T00:00:00.000Z",
                              due_at="2026-01-01T00:00:00.000Z")
    replay = PoisonRecord(queue="work", error=_error(), envelope=envelope).replay_envelope()
    assert replay.attempt == 1 and replay.first_failed_at is None and replay.due_at is None
    assert replay.id == envelope.id and replay.args == envelope.args
