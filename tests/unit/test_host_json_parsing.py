"""host.json is read as the Functions host reads it: keys case-insensitive, comments and trailing
commas allowed, unknown queue settings warned about (not silently ignored, not fatal).

Before: ``BatchSize`` and ``maxdequeuecount`` were ignored silently, and a host.json with a
comment or a trailing comma failed with "is not valid JSON".
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from azjobs.errors import ConfigurationError
from azjobs.model.settings import QueueSettings, strip_json_comments

COMMENTED = """\
{
  // the app's host.json, with comments as the host allows
  "version": "2.0",
  "logging": { "logLevel": { "default": "Information" } }, /* a block
     comment over two lines */
  "functionTimeout": "00:10:00",
  "extensions": {
    "queues": {
      "batchSize": 8,             // fewer at once
      "maxPollingInterval": "00:00:02",
      "messageEncoding": "none",  /* plain JSON bodies */
    },
  },
}
"""


def load(tmp_path, text: str) -> QueueSettings:
    path = tmp_path / "host.json"
    path.write_text(text, encoding="utf-8")
    return QueueSettings.load(path)


def test_comments_and_trailing_commas_are_accepted(tmp_path):
    settings = load(tmp_path, COMMENTED)
    assert settings.batch_size == 8 and settings.batch_size_set
    assert settings.max_polling_interval == timedelta(seconds=2)
    assert settings.message_encoding == "none"
    assert settings.function_timeout == timedelta(minutes=10)


def test_comment_markers_inside_strings_are_kept():
    text = '{"a": "http://x//y", "b": "/* not a comment */", "c": "quote \\" // still a string", "d": [1, 2,],}'
    import json

    assert json.loads(strip_json_comments(text)) == {
        "a": "http://x//y", "b": "/* not a comment */", "c": 'quote " // still a string', "d": [1, 2]}


def test_json_errors_keep_their_line_numbers(tmp_path):
    with pytest.raises(ConfigurationError, match=r"is not valid JSON: .*line 4 column"):
        load(tmp_path, '{\n  // comment\n  "extensions": {\n  "queues": nope\n}}')


def test_unterminated_block_comment_is_an_error(tmp_path):
    with pytest.raises(ConfigurationError, match="unterminated /\\* comment"):
        load(tmp_path, '{"version": "2.0"} /* no end')


@pytest.mark.parametrize("queues", [
    {"BatchSize": 4, "MaxDequeueCount": 2, "MessageEncoding": "None"},
    {"batchsize": 4, "maxdequeuecount": 2, "messageencoding": "none"},
    {"BATCHSIZE": 4, "MAXDEQUEUECOUNT": 2, "MESSAGEENCODING": "NONE"},
])
def test_queue_settings_match_case_insensitively(queues):
    settings = QueueSettings.from_host_json({"Extensions": {"Queues": queues}})
    assert (settings.batch_size, settings.max_dequeue_count, settings.message_encoding) == (4, 2, "none")


def test_top_level_keys_match_case_insensitively():
    settings = QueueSettings.from_host_json({"FunctionTimeout": "00:01:00", "EXTENSIONS": {"queues": {
        "VisibilityTimeout": "00:00:30", "NewBatchThreshold": 3, "MaxPollingInterval": "00:00:05"}}})
    assert settings.function_timeout == timedelta(minutes=1)
    assert settings.visibility_timeout == timedelta(seconds=30) and settings.new_batch_threshold == 3
    assert settings.max_polling_interval == timedelta(seconds=5) and settings.max_polling_interval_set


def test_a_bad_value_names_the_key_as_written():
    with pytest.raises(ConfigurationError, match=r"extensions.queues.BatchSize must be an integer"):
        QueueSettings.from_host_json({"extensions": {"queues": {"BatchSize": "8"}}})


def test_unknown_queue_settings_are_warned_about(caplog):
    caplog.set_level(logging.WARNING, logger="azjobs")
    settings = QueueSettings.from_host_json({"extensions": {"queues": {"batchSise": 4, "maxDequeueCount": 3,
                                                                       "retries": 9}}})
    assert settings.batch_size == 16 and settings.max_dequeue_count == 3  # still read, not fatal
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "host.json extensions.queues.batchSise is not a queue setting the Functions host knows (did you mean "
        "batchSize?); ignored. Known: batchSize, newBatchThreshold, maxPollingInterval, visibilityTimeout, "
        "maxDequeueCount, messageEncoding",
        "host.json extensions.queues.retries is not a queue setting the Functions host knows; ignored. Known: "
        "batchSize, newBatchThreshold, maxPollingInterval, visibilityTimeout, maxDequeueCount, messageEncoding",
    ]


def test_known_settings_raise_no_warning(caplog):
    caplog.set_level(logging.WARNING, logger="azjobs")
    QueueSettings.from_host_json({"extensions": {"queues": {"batchSize": 4, "messageEncoding": "base64"}}})
    assert not caplog.records
