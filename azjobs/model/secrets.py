"""Keeping credentials out of everything azjobs writes: records, log lines and errors.

A credential can show up in many forms: ``AccountKey=...`` and ``SharedAccessSignature=...``
in a connection string, a SAS token in a URL (``?sv=...&sig=...``) inside an SDK or
urllib3 error, or the bare key value itself. ``redact`` hides the patterns, and every
secret value a ``Connection`` was built from is registered with ``remember`` so that it
is hidden wherever it appears, whatever surrounds it.

``RedactingFilter`` applies ``redact`` to a log record's message and traceback before any
handler sees it; it is attached to every azjobs logger, so the Functions host's own
handlers (which azjobs does not configure) get redacted text too.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Iterable

MASK = "***"
# key=value forms: connection-string keys and SAS query parameters that carry the secret.
_PAIRS = re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|SharedAccessKey|sig|token|client_secret)=([^;&\s'\"<>]*)")
# A SAS token after '?' as a whole (sv=...&...&sig=...): the signature is hidden by _PAIRS; what
# remains is harmless (version, permissions, expiry).
_MIN_SECRET = 8  # shorter values are too likely to occur by chance in other text

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def remember(values: Iterable[str | None]) -> None:
    """Register secret values (account keys, SAS tokens, signatures) to hide wherever they appear."""
    global _pattern
    added = False
    with _lock:
        for value in values:
            if value and len(value) >= _MIN_SECRET and value not in _values:
                _values.add(value)
                added = True
        if added:
            forms: set[str] = set()
            for value in _values:
                forms.add(value)
                forms.add(_url_quoted(value))
            ordered = sorted(forms, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(form) for form in ordered))


def _url_quoted(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def secrets_in_connection_string(text: str) -> list[str]:
    """The secret values in a connection string: the account key, the SAS token and its signature."""
    found: list[str] = []
    for part in text.split(";"):
        name, _, value = part.partition("=")
        name = name.strip().lower()
        if name in ("accountkey", "sharedaccesskey") and value:
            found.append(value.strip())
        elif name == "sharedaccesssignature" and value:
            token = value.strip().lstrip("?")
            found.append(token)
            found.extend(secrets_in_sas(token))
    return found


def secrets_in_sas(token: str) -> list[str]:
    """The signature of a SAS token (``sv=...&sig=...``), decoded and as it travels in a URL."""
    from urllib.parse import unquote

    found = []
    for pair in token.lstrip("?").split("&"):
        name, _, value = pair.partition("=")
        if name.lower() == "sig" and value:
            found.extend({value, unquote(value)})
    return found


def redact(text: str) -> str:
    """``text`` with every known credential form hidden."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _PAIRS.sub(lambda m: f"{m.group(1)}={MASK}", text)


def describe(value: Any) -> str:
    """One line naming an exception (type and first line of its text), safe to log."""
    text = str(value).splitlines()[0] if str(value) else ""
    return redact(f"{type(value).__name__}: {text}" if isinstance(value, BaseException) else text)


class RedactingFilter(logging.Filter):
    """Redacts a record's message and traceback in place (attach to a logger or a handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class RedactingStream:
    """A text stream wrapper that redacts what is written (the CLI's stdout and stderr)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


_FILTER = RedactingFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the redacting filter attached (once)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


__all__ = ["MASK", "RedactingFilter", "RedactingStream", "describe", "get_logger", "redact", "remember", "secrets_in_connection_string",
           "secrets_in_sas"]
