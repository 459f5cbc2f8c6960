"""Logging for the ``azjobs`` command: readable text or one JSON object per line.

Every azjobs event carries a stable ``action`` key (``job_started``, ``job_succeeded``,
``receive_failed`` ...) plus fields such as ``job``, ``job_id``, ``queue``, ``attempt`` and
``duration_s``; the JSON format writes them all, so logs can be queried by field.
Messages are passed through ``redact`` so an account key never reaches a log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

from .secrets import redact

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
FORMATS = ("text", "json")


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record_extras(record).items():
            data.setdefault(key, _jsonable(value))
        if record.exc_info:
            data["exc_info"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level message [action]`` with secrets redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup(verbose: int = 0, fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Send azjobs logs to ``stream`` (stderr): INFO, or DEBUG with ``-v``; returns the handler.

    Azure SDK request logging stays at WARNING unless ``-vv``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_azjobs", False):
            root.removeHandler(old)
    handler._azjobs = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("azure").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    return handler
