import base64
import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from azjobs.errors import ArgumentError, EnvelopeError, PayloadTooLargeError
from azjobs.model.envelope import FORMAT_VERSION, MAX_MESSAGE_BYTES, Envelope, decode_body, encode_text, format_time, parse_time


@pytest.mark.parametrize(
    "args,kwargs",
    [
        ((), {}),
        (("héllo wörld ✓ 日本語 🎉",), {"emoji": "🐍"}),
        (({"a": [1, {"b": [None, True, False, 1.5]}]},), {"deep": {"x": {"y": {"z": []}}}}),
        ((None,), {"n": None}),
        ((2**80, -(2**70), 0), {"big": 10**30}),
        ((1.0e-300, 3.14159), {}),
    ],
)
@pytest.mark.parametrize("encoding", ["base64", "none"])
def test_round_trip(args, kwargs, encoding):
    envelope = Envelope.build("pkg.job", args, kwargs, queue="q-1", trace={"traceparent": "00-abc-def-01"})
    decoded = Envelope.decode(envelope.encode(encoding), encoding)
    assert decoded == envelope
    assert decoded.args == args and decoded.kwargs == kwargs


def test_tuples_become_lists():
    envelope = Envelope.build("j", ((1, 2),), {"t": (3,)})
    assert envelope.args == ([1, 2],) and envelope.kwargs == {"t": [3]}


def test_wire_format_is_base64_json_with_named_fields():
    envelope = Envelope.build("mod.fn", (1,), {"k": "v"}, queue="emails")
    data = json.loads(base64.b64decode(envelope.encode()))
    assert data["azjobs"] == FORMAT_VERSION
    assert data["job"] == "mod.fn" and data["args"] == [1] and data["kwargs"] == {"k": "v"}
    assert data["attempt"] == 1 and data["queue"] == "emails"
    assert data["enqueued_at"].endswith("Z")
    assert len(data["id"]) == 36


@pytest.mark.parametrize(
    "value,where",
    [
        (object(), "args[0]"),
        ({1, 2}, "args[0]"),
        (b"bytes", "args[0]"),
        (datetime.now(timezone.utc), "args[0]"),
        ([1, [2, object()]], "args[0][1][1]"),
        ({"a": {"b": object()}}, "args[0]['a']['b']"),
        ({1: "int key"}, "args[0]"),
        (math.nan, "args[0]"),
        (math.inf, "args[0]"),
    ],
)
def test_non_json_argument_fails_naming_it(value, where):
    with pytest.raises(ArgumentError) as info:
        Envelope.build("j", (value,))
    assert where in str(info.value)


def test_non_json_keyword_names_the_keyword():
    with pytest.raises(ArgumentError, match=r"kwargs\['user'\]"):
        Envelope.build("j", (), {"user": object()})


@pytest.mark.parametrize(
    "body,encoding,reason",
    [
        ("%%%not base64%%%", "base64", "not_base64"),
        (base64.b64encode(b"\xff\xfe\x00").decode(), "base64", "not_utf8"),
        (base64.b64encode(b"{not json").decode(), "base64", "not_json"),
        (base64.b64encode(b"[1,2,3]").decode(), "base64", "not_envelope"),
        (base64.b64encode(b'{"job":"x"}').decode(), "base64", "not_envelope"),
        (base64.b64encode(b'{"azjobs":99,"job":"x","id":"1","enqueued_at":"2026-01-01T00:00:00Z"}').decode(),
         "base64", "unknown_version"),
        ('{"azjobs":1,"job":"x","id":"1","enqueued_at":"2026-01-01T00:00:00Z","args":{}}', "none", "not_envelope"),
        ('{"azjobs":1,"job":"x","id":"1","enqueued_at":"2026-01-01T00:00:00Z","attempt":0}', "none", "not_envelope"),
        ('{"azjobs":1,"job":"x","id":"1","enqueued_at":"yesterday"}', "none", "not_envelope"),
        ('{"azjobs":1,"job":"","id":"1","enqueued_at":"2026-01-01T00:00:00Z"}', "none", "not_envelope"),
        ('{"azjobs":true,"job":"x","id":"1","enqueued_at":"2026-01-01T00:00:00Z"}', "none", "unknown_version"),
        ("[" * 100000, "none", "not_json"),
    ],
)
def test_invalid_bodies_raise_one_typed_error(body, encoding, reason):
    with pytest.raises(EnvelopeError) as info:
        Envelope.decode(body, encoding)
    assert info.value.reason == reason


def test_unknown_fields_are_ignored_for_forward_compatibility():
    data = Envelope.build("j", (1,)).to_dict()
    data["future_field"] = {"x": 1}
    assert Envelope.from_dict(data).args == (1,)


def test_size_limit_base64_is_48k_raw():
    assert encode_text("a" * 49_152, "base64")
    with pytest.raises(PayloadTooLargeError, match="65,536"):
        encode_text("a" * 49_153, "base64")


def test_size_limit_none_is_64k():
    assert encode_text("a" * MAX_MESSAGE_BYTES, "none")
    with pytest.raises(PayloadTooLargeError):
        encode_text("a" * (MAX_MESSAGE_BYTES + 1), "none")


def test_envelope_encode_refuses_oversize_before_any_network():
    envelope = Envelope.build("j", ("x" * 60_000,))
    with pytest.raises(PayloadTooLargeError):
        envelope.encode()


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError, match="messageEncoding"):
        encode_text("x", "utf-16")


def test_decode_body_none_passes_through():
    assert decode_body("abc", "none") == b"abc"
    assert decode_body(b"abc", "none") == b"abc"


def test_times_are_utc_iso_with_z():
    moment = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))
    text = format_time(moment)
    assert text == "2026-01-02T01:04:05.678Z"
    assert parse_time(text) == moment
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2026, 1, 1))


# -- producers and workers that disagree on messageEncoding -------------------------------------------------
def test_a_base64_body_read_as_none_hints_at_the_encoding():
    body = Envelope.build("j", (1,)).encode("base64")
    with pytest.raises(EnvelopeError) as info:
        Envelope.decode(body, "none")
    assert info.value.reason == "not_json"
    assert str(info.value) == (
        "message body is not JSON: Expecting value: line 1 column 1 (char 0); the body is base64-encoded JSON: this "
        "looks like a message sent with messageEncoding=base64, read with messageEncoding=none; producers and workers "
        "must agree (host.json extensions.queues.messageEncoding, azjobs.configure(message_encoding=...))")


def test_a_plain_json_body_read_as_base64_hints_at_the_encoding():
    body = Envelope.build("j", (1,)).encode("none")
    with pytest.raises(EnvelopeError) as info:
        Envelope.decode(body, "base64")
    assert info.value.reason == "not_base64"
    # binascii's own reason in the middle differs between Python versions ("Only base64 data is allowed" on
    # 3.11+, "Non-base64 digit found" on 3.10); what azjobs says around it does not.
    text = str(info.value)
    assert text.startswith("message body is not valid base64: ")
    assert text.endswith(
        "; the body is plain JSON: this looks like a "
        "message sent with messageEncoding=none, read with messageEncoding=base64; producers and workers must agree "
        "(host.json extensions.queues.messageEncoding, azjobs.configure(message_encoding=...))")


@pytest.mark.parametrize("body,encoding", [("not json at all", "none"), ("%%%", "base64"), ("{broken", "base64"),
                                           (base64.b64encode(b"[1, 2]").decode(), "none")])
def test_garbage_gets_no_encoding_hint(body, encoding):
    with pytest.raises(EnvelopeError) as info:
        Envelope.decode(body, encoding)
    assert "messageEncoding" not in str(info.value)


def test_a_poison_record_sent_as_a_job_says_what_it_is():
    from azjobs.model.poison_record import ErrorInfo, PoisonRecord

    record = PoisonRecord(queue="q", error=ErrorInfo("E", "m"), envelope=Envelope.build("j", (1,)))
    with pytest.raises(EnvelopeError) as info:
        Envelope.decode(record.encode("base64"), "base64")
    assert info.value.reason == "not_envelope"
    assert str(info.value).startswith("the body is an azjobs poison record, not a job message")


@pytest.mark.parametrize("written", ["base64", "none"])
@pytest.mark.parametrize("read", ["base64", "none"])
def test_a_poison_record_is_recognised_whatever_the_encoding(written, read):
    from azjobs.model.poison_record import ErrorInfo, PoisonRecord, find_record

    envelope = Envelope.build("j", ("x",))
    record = PoisonRecord(queue="q", error=ErrorInfo("E", "m"), envelope=envelope)
    text = record.encode(written)
    found, encoding = find_record(text, read)
    assert (found.id, found.envelope, encoding) == (record.id, envelope, written)
    assert PoisonRecord.decode(text, read).id == record.id
    assert find_record(envelope.encode(written), read) is None  # an envelope is not a record
