"""Queue settings from host.json, shared by the Functions host and the local runner."""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigurationError
from .envelope import ENCODINGS
from .secrets import get_logger

log = get_logger("azjobs.settings")

# The Functions host's defaults (Storage Queues extension 5.x, QueuesOptions).
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_POLLING_INTERVAL = timedelta(minutes=1)
DEVELOPMENT_MAX_POLLING_INTERVAL = timedelta(seconds=2)
DEFAULT_VISIBILITY_TIMEOUT = timedelta(0)
DEFAULT_MAX_DEQUEUE_COUNT = 5
MIN_POLLING_INTERVAL = timedelta(milliseconds=100)
# host.json functionTimeout when unset: the host's default outside the Consumption plan
# (Premium, Dedicated, Flex); "-1" means no limit.
DEFAULT_FUNCTION_TIMEOUT = timedelta(minutes=30)
ENVIRONMENT_SETTING = "AZURE_FUNCTIONS_ENVIRONMENT"

_TIMESPAN = re.compile(r"^(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2})(?:\.(?P<f>\d{1,7}))?$")


def parse_timespan(text: Any, setting: str) -> timedelta:
    """Parse a .NET TimeSpan string as host.json writes it: ``[d.]hh:mm:ss[.fffffff]``."""
    if not isinstance(text, str):
        raise ConfigurationError(f"host.json {setting} must be a TimeSpan string like \"00:00:02\", got {text!r}")
    match = _TIMESPAN.match(text.strip())
    if not match:
        raise ConfigurationError(f"host.json {setting} = {text!r} is not a TimeSpan like \"00:00:02\" or \"1.00:00:00\"")
    parts = {k: int(v) for k, v in match.groupdict(default="0").items() if k != "f"}
    if parts["m"] > 59 or parts["s"] > 59 or parts["h"] > 23 and match.group("d"):
        raise ConfigurationError(f"host.json {setting} = {text!r} has a field out of range")
    fraction = match.group("f") or "0"
    micros = int((fraction + "000000")[:6])
    return timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"], microseconds=micros)


def parse_function_timeout(value: Any, setting: str) -> timedelta | None:
    """host.json ``functionTimeout``: a TimeSpan, or ``"-1"`` (or -1) for no limit."""
    if value in (-1, "-1"):
        return None
    timeout = parse_timespan(value, setting)
    if timeout <= timedelta(0):
        raise ConfigurationError(f"{setting} must be positive, or \"-1\" for no limit; got {value!r}")
    return timeout


@dataclass(frozen=True)
class QueueSettings:
    """host.json ``extensions.queues``, with the host's defaults and bounds."""

    batch_size: int = DEFAULT_BATCH_SIZE
    new_batch_threshold: int | None = None
    max_polling_interval: timedelta = DEFAULT_MAX_POLLING_INTERVAL
    visibility_timeout: timedelta = DEFAULT_VISIBILITY_TIMEOUT
    max_dequeue_count: int = DEFAULT_MAX_DEQUEUE_COUNT
    message_encoding: str = "base64"
    # True when host.json set maxPollingInterval (the runner's Development default applies otherwise).
    max_polling_interval_set: bool = False
    # True when host.json set batchSize (the worker's faster default applies otherwise); None:
    # inferred, True for any batch_size other than the host's default.
    batch_size_set: bool | None = None
    # host.json functionTimeout (top level): how long one invocation may run; None means no limit.
    function_timeout: timedelta | None = DEFAULT_FUNCTION_TIMEOUT

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 32:
            raise ConfigurationError(f"batchSize must be 1..32, got {self.batch_size}")
        if self.batch_size_set is None:
            object.__setattr__(self, "batch_size_set", self.batch_size != DEFAULT_BATCH_SIZE)
        if self.new_batch_threshold is not None and self.new_batch_threshold < 0:
            raise ConfigurationError(f"newBatchThreshold must be >= 0, got {self.new_batch_threshold}")
        if self.max_polling_interval < MIN_POLLING_INTERVAL:
            raise ConfigurationError(f"maxPollingInterval must be at least 100 ms, got {self.max_polling_interval}")
        if self.visibility_timeout < timedelta(0) or self.visibility_timeout > timedelta(days=7):
            raise ConfigurationError(f"visibilityTimeout must be 0..7 days, got {self.visibility_timeout}")
        if self.max_dequeue_count < 1:
            raise ConfigurationError(f"maxDequeueCount must be >= 1, got {self.max_dequeue_count}")
        if self.function_timeout is not None and self.function_timeout <= timedelta(0):
            raise ConfigurationError(f"functionTimeout must be positive (or -1 for no limit), got {self.function_timeout}")
        if self.message_encoding not in ENCODINGS:
            raise ConfigurationError(f"messageEncoding must be one of {ENCODINGS}, got {self.message_encoding!r}")

    def threshold(self, processor_count: int | None = None, batch_size: int | None = None) -> int:
        """newBatchThreshold, or the host's default ``(batchSize / 2) * processorCount``."""
        if self.new_batch_threshold is not None:
            return self.new_batch_threshold
        return ((batch_size or self.batch_size) // 2) * (processor_count or os.cpu_count() or 1)

    def max_in_flight(self, processor_count: int | None = None) -> int:
        """The most messages the host works at once per queue: batchSize + newBatchThreshold."""
        return self.batch_size + self.threshold(processor_count)

    def idle_polling_note(self) -> str:
        """What the worker's start line adds when nothing set ``maxPollingInterval`` and the host's 1 min cap
        applies: a newcomer's first job can wait that long on an idle queue, and how to shorten it."""
        if self.max_polling_interval_set or self.max_polling_interval.total_seconds() < 60:
            return ""
        return ("; no host.json sets maxPollingInterval, so an idle queue is polled as the host does, backing off "
                "to every 60 s and a new job can wait up to a minute: set extensions.queues.maxPollingInterval in "
                "host.json (e.g. \"00:00:02\") or AZURE_FUNCTIONS_ENVIRONMENT=Development (2 s)")

    def for_development(self) -> "QueueSettings":
        """The host's Development defaults: a 2 s polling cap unless host.json set one."""
        if self.max_polling_interval_set:
            return self
        return replace(self, max_polling_interval=DEVELOPMENT_MAX_POLLING_INTERVAL)

    def for_environment(self, environ: Mapping[str, str] | None = None) -> "QueueSettings":
        """The host's rule: the 2 s polling cap applies only when ``AZURE_FUNCTIONS_ENVIRONMENT`` is Development."""
        env = os.environ if environ is None else environ
        if env.get(ENVIRONMENT_SETTING, "").strip().lower() == "development":
            return self.for_development()
        return self

    @classmethod
    def from_host_json(cls, data: Any, source: str = "host.json") -> "QueueSettings":
        """Settings from a parsed host.json. Keys are matched case-insensitively, as the host's
        configuration does (``BatchSize`` and ``maxdequeuecount`` work there too); a key in
        ``extensions.queues`` that the host does not know is logged as a warning, not an error."""
        if not isinstance(data, dict):
            raise ConfigurationError(f"{source} must hold a JSON object")
        top: dict[str, Any] = {}
        timeout_key = _key(data, "functionTimeout")
        if timeout_key is not None:
            top["function_timeout"] = parse_function_timeout(data[timeout_key], f"{source} {timeout_key}")
        extensions_key = _key(data, "extensions")
        extensions = (data[extensions_key] if extensions_key is not None else None) or {}
        queues_key = _key(extensions, "queues") if isinstance(extensions, dict) else None
        queues = extensions[queues_key] if queues_key is not None else None
        if queues is None:
            return cls(**top)
        if not isinstance(queues, dict):
            raise ConfigurationError(f"{source} extensions.queues must be an object")
        fields: dict[str, Any] = {}
        for given, value in queues.items():
            key = _KNOWN_QUEUE_KEYS.get(given.lower())
            where = f"{source} extensions.queues.{given}"
            if key is None:
                guess = difflib.get_close_matches(given.lower(), list(_KNOWN_QUEUE_KEYS), n=1, cutoff=0.75)
                hint = f" (did you mean {_KNOWN_QUEUE_KEYS[guess[0]]}?)" if guess else ""
                log.warning("%s is not a queue setting the Functions host knows%s; ignored. Known: %s", where, hint,
                            ", ".join(_KNOWN_QUEUE_KEYS.values()),
                            extra={"action": "host_json_unknown_setting", "setting": given})
                continue
            if key in ("batchSize", "newBatchThreshold", "maxDequeueCount"):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ConfigurationError(f"{where} must be an integer, got {value!r}")
            try:
                if key == "batchSize":
                    fields["batch_size"] = value
                    fields["batch_size_set"] = True
                elif key == "newBatchThreshold":
                    fields["new_batch_threshold"] = value
                elif key == "maxDequeueCount":
                    fields["max_dequeue_count"] = value
                elif key == "maxPollingInterval":
                    fields["max_polling_interval"] = parse_timespan(value, where)
                    fields["max_polling_interval_set"] = True
                elif key == "visibilityTimeout":
                    fields["visibility_timeout"] = parse_timespan(value, where)
                elif key == "messageEncoding":
                    if not isinstance(value, str):
                        raise ConfigurationError(f"{where} must be \"base64\" or \"none\", got {value!r}")
                    fields["message_encoding"] = value.lower()
            except ConfigurationError as exc:
                if where in str(exc):
                    raise
                raise ConfigurationError(f"{where}: {exc}") from None
        try:
            return cls(**fields, **top)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "QueueSettings":
        """Read ``path``; without one, ``$AZJOBS_HOST_JSON`` or ``./host.json`` if present, else defaults."""
        if path is None:
            path = os.environ.get("AZJOBS_HOST_JSON") or ("host.json" if Path("host.json").is_file() else None)
            if path is None:
                return cls()
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ConfigurationError(f"cannot read host.json at {file}: {exc.strerror}") from None
        try:
            data = parse_host_json(text)
        except ValueError as exc:
            raise ConfigurationError(f"{file} is not valid JSON: {exc}") from None
        return cls.from_host_json(data, str(file))


_KNOWN_QUEUE_KEYS = {name.lower(): name for name in (
    "batchSize", "newBatchThreshold", "maxPollingInterval", "visibilityTimeout", "maxDequeueCount", "messageEncoding")}


def _key(data: Any, name: str) -> str | None:
    """The key of ``data`` that means ``name`` for the host (case-insensitive; the last one wins, as there)."""
    if not isinstance(data, dict):
        return None
    found = None
    for key in data:
        if isinstance(key, str) and key.lower() == name.lower():
            found = key
    return found


def parse_host_json(text: str) -> Any:
    """Parse host.json as the host does: JSON with ``//`` and ``/* */`` comments and trailing commas.

    Comments and trailing commas are blanked out outside strings (so a ``"//"`` inside a value
    stays), keeping line and column numbers for json's error messages.
    """
    return json.loads(strip_json_comments(text))


def strip_json_comments(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    pending_comma: int | None = None  # index in ``out`` of a comma that may be trailing
    while i < n:
        char = text[i]
        if char == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i:end + 1])
            pending_comma = None
            i = end + 1
            continue
        if char == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
            continue
        if char == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError(f"unterminated /* comment at char {i}")
            out.append("".join(c if c == "\n" else " " for c in text[i:end + 2]))
            i = end + 2
            continue
        if char == ",":
            pending_comma = len(out)
        elif char in "}]" and pending_comma is not None:
            out[pending_comma] = " "  # a trailing comma
            pending_comma = None
        elif not char.isspace():
            pending_comma = None
        out.append(char)
        i += 1
    return "".join(out)
