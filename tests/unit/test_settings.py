import json
from datetime import timedelta

import pytest

from azjobs.errors import ConfigurationError
from azjobs.model.settings import QueueSettings, parse_timespan


def test_defaults_are_the_hosts():
    s = QueueSettings()
    assert s.batch_size == 16
    assert s.max_polling_interval == timedelta(minutes=1)
    assert s.visibility_timeout == timedelta(0)
    assert s.max_dequeue_count == 5
    assert s.message_encoding == "base64"
    assert s.threshold(processor_count=1) == 8
    assert s.max_in_flight(processor_count=1) == 24
    assert s.threshold(processor_count=4) == 32


def test_development_polling_default_applies_only_when_unset():
    assert QueueSettings().for_development().max_polling_interval == timedelta(seconds=2)
    explicit = QueueSettings.from_host_json({"extensions": {"queues": {"maxPollingInterval": "00:00:10"}}})
    assert explicit.for_development().max_polling_interval == timedelta(seconds=10)


def test_host_json_values_are_read(tmp_path):
    host = {
        "version": "2.0",
        "extensions": {
            "queues": {
                "batchSize": 8,
                "newBatchThreshold": 4,
                "maxPollingInterval": "00:00:02",
                "visibilityTimeout": "00:00:30",
                "maxDequeueCount": 3,
                "messageEncoding": "none",
                "somethingElse": True,
            }
        },
    }
    path = tmp_path / "host.json"
    path.write_text(json.dumps(host))
    s = QueueSettings.load(path)
    assert (s.batch_size, s.new_batch_threshold, s.max_dequeue_count, s.message_encoding) == (8, 4, 3, "none")
    assert s.max_polling_interval == timedelta(seconds=2) and s.max_polling_interval_set
    assert s.visibility_timeout == timedelta(seconds=30)
    assert s.max_in_flight() == 12


def test_host_json_without_queues_section_gives_defaults():
    assert QueueSettings.from_host_json({"version": "2.0"}) == QueueSettings()


def test_load_without_path_uses_env_or_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AZJOBS_HOST_JSON", raising=False)
    assert QueueSettings.load() == QueueSettings()
    (tmp_path / "other.json").write_text(json.dumps({"extensions": {"queues": {"batchSize": 2}}}))
    monkeypatch.setenv("AZJOBS_HOST_JSON", str(tmp_path / "other.json"))
    assert QueueSettings.load().batch_size == 2


@pytest.mark.parametrize(
    "queues,message",
    [
        ({"batchSize": 0}, "batchSize must be 1..32"),
        ({"batchSize": 33}, "batchSize must be 1..32"),
        ({"batchSize": "16"}, "must be an integer"),
        ({"batchSize": True}, "must be an integer"),
        ({"maxDequeueCount": 0}, "maxDequeueCount"),
        ({"newBatchThreshold": -1}, "newBatchThreshold"),
        ({"maxPollingInterval": "00:00:00.050"}, "at least 100 ms"),
        ({"maxPollingInterval": 2000}, "TimeSpan"),
        ({"maxPollingInterval": "2 seconds"}, "TimeSpan"),
        ({"visibilityTimeout": "8.00:00:00"}, "0..7 days"),
        ({"messageEncoding": "utf8"}, "messageEncoding"),
        ({"messageEncoding": 1}, "messageEncoding"),
    ],
)
def test_bad_values_are_clear_errors(queues, message):
    with pytest.raises(ConfigurationError, match=message):
        QueueSettings.from_host_json({"extensions": {"queues": queues}})


def test_unreadable_or_invalid_host_json(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read"):
        QueueSettings.load(tmp_path / "missing.json")
    bad = tmp_path / "host.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        QueueSettings.load(bad)
    bad.write_text('{"extensions": {"queues": []}}')
    with pytest.raises(ConfigurationError, match="must be an object"):
        QueueSettings.load(bad)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("00:00:02", timedelta(seconds=2)),
        ("00:01:00", timedelta(minutes=1)),
        ("1.02:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("00:00:00.5", timedelta(milliseconds=500)),
        ("00:00:00.1234567", timedelta(microseconds=123456)),
    ],
)
def test_timespans(text, expected):
    assert parse_timespan(text, "x") == expected


def test_timespan_out_of_range():
    with pytest.raises(ConfigurationError, match="out of range"):
        parse_timespan("00:61:00", "x")


def test_repo_host_json_is_valid():
    """The function app's host.json exists and holds the values the README's host.json table gives."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "host.json"
    assert path.is_file(), f"the function app's {path} is missing"
    queues = json.loads(path.read_text(encoding="utf-8"))["extensions"]["queues"]
    assert queues == {
        "batchSize": 16,
        "newBatchThreshold": 8,
        "maxPollingInterval": "00:00:02",
        "visibilityTimeout": "00:00:30",
        "maxDequeueCount": 5,
        "messageEncoding": "base64",
    }
    # ... and azjobs reads them as the host does.
    s = QueueSettings.load(path)
    assert (s.batch_size, s.new_batch_threshold, s.max_dequeue_count, s.message_encoding) == (16, 8, 5, "base64")
    assert s.max_polling_interval == timedelta(seconds=2) and s.max_polling_interval_set
    assert s.visibility_timeout == timedelta(seconds=30)
