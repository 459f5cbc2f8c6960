"""azjobs.model.secrets: every credential form is hidden, in text and in log records.

Secrets here are fresh random values per test (``remember`` is process-wide), shaped like
the real ones: a base64 account key, a base64 SAS signature that travels URL-encoded.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import sys
from urllib.parse import quote

import pytest

from azjobs.storage import diagnosis as logs
from azjobs.storage.connection import Connection
from azjobs.model.secrets import MASK, RedactingFilter, get_logger, redact, remember


def account_key() -> str:
    return base64.b64encode(os.urandom(64)).decode("ascii")


def signature() -> str:
    """A decoded SAS signature that needs URL-encoding ('+', '/' and '=' padding)."""
    while True:
        sig = base64.b64encode(os.urandom(32)).decode("ascii")
        if "+" in sig and "/" in sig:
            return sig


def sas_token(sig: str) -> str:
    return f"sv=2026-10-06&ss=q&srt=sco&sp=rwdlacup&se=2026-11-28T12%3A00%3A00Z&sig={quote(sig, safe='')}"


# -- redact: patterns ------------------------------------------------------------------------
def test_account_key_in_a_connection_string():
    key = account_key()
    text = redact(f"cannot connect: DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};"
                  "EndpointSuffix=core.windows.net")
    assert key not in text and key[:20] not in text
    assert f"AccountKey={MASK};EndpointSuffix=core.windows.net" in text


def test_shared_access_signature_in_a_connection_string():
    sig = signature()
    token = sas_token(sig)
    text = redact(f"QueueEndpoint=https://acct.queue.core.windows.net;SharedAccessSignature={token}")
    assert quote(sig, safe="") not in text and sig not in text
    assert f"SharedAccessSignature={MASK}" in text


def test_sig_in_a_url_url_encoded():
    sig = signature()
    encoded = quote(sig, safe="")
    assert "%2B" in encoded and "%2F" in encoded and encoded.endswith("%3D")
    url = f"https://acct.queue.core.windows.net/q/messages?{sas_token(sig)}&comp=metadata"
    text = redact(f"HTTPConnectionPool(host='acct'): Max retries exceeded with url: {url} (Caused by ...)")
    assert encoded not in text and sig not in text
    assert "%2B" not in text and "%3D" not in text  # no piece of the signature is left behind
    assert f"&sig={MASK}&comp=metadata" in text
    assert "sp=rwdlacup" in text  # what is not secret stays readable


def test_sig_decoded_in_a_url_and_in_quotes():
    sig = signature()
    for text in (f"url: /q?sv=1&sig={sig}&se=2", f"'https://x/q?sig={sig}'", f'"sig={sig}"', f"<a href=x?SIG={sig}>"):
        assert sig not in redact(text), text
        assert sig[:10] not in redact(text), text


def test_other_key_value_forms():
    secret = account_key()
    for name in ("SharedAccessKey", "token", "client_secret", "accountkey"):
        assert secret not in redact(f"x;{name}={secret};y"), name


def test_text_without_secrets_is_unchanged():
    text = "job x failed: design=fine; signal=2 https://x/q?sv=1&se=2"
    assert redact(text) == text
    assert redact("") == ""


# -- redact: remembered values -----------------------------------------------------------------
def test_a_remembered_key_is_hidden_anywhere():
    key = account_key()
    assert redact(f"key {key}.") == f"key {key}."  # not known yet, and no key= pattern around it
    remember([key])
    for text in (f"key {key}.", f"({key})", f"prefix{key}suffix", f"{key}\n{key}", f"json: {{\"k\": \"{key}\"}}"):
        assert key not in redact(text), text
    assert redact(f"key {key}.") == f"key {MASK}."
    # ... and in its URL-encoded form.
    assert quote(key, safe="") not in redact(f"https://x/?k={quote(key, safe='')}")


def test_short_values_are_not_remembered():
    remember(["abc", "", None])
    assert redact("abc abc") == "abc abc"


# -- RedactingFilter ------------------------------------------------------------------------------
def _record(msg, args=(), exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("azjobs.test", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_filter_redacts_message_args():
    key = account_key()
    record = _record("cannot connect with %s (attempt %d)", (f"AccountKey={key};", 3))
    assert RedactingFilter().filter(record) is True
    assert key not in record.getMessage() and "(attempt 3)" in record.getMessage()
    assert f"AccountKey={MASK}" in record.getMessage()


def test_filter_redacts_the_traceback():
    sig = signature()
    try:
        raise RuntimeError(f"Max retries exceeded with url: /q?{sas_token(sig)}")
    except RuntimeError:
        record = _record("job failed", exc_info=sys.exc_info())
    RedactingFilter().filter(record)
    assert record.exc_text and "RuntimeError" in record.exc_text
    assert quote(sig, safe="") not in record.exc_text and f"sig={MASK}" in record.exc_text
    # What a handler writes uses that text.
    assert quote(sig, safe="") not in logging.Formatter().format(record)


def test_filter_redacts_an_exc_text_already_set():
    key = account_key()
    record = _record("failed")
    record.exc_text = f"Traceback ...\nValueError: AccountKey={key}"
    RedactingFilter().filter(record)
    assert key not in record.exc_text


def test_get_logger_attaches_the_filter_once(caplog):
    logger = get_logger("azjobs.test_secrets")
    assert get_logger("azjobs.test_secrets") is logger
    assert sum(isinstance(f, RedactingFilter) for f in logger.filters) == 1
    key = account_key()
    with caplog.at_level(logging.INFO, logger="azjobs.test_secrets"):
        logger.warning("using %s", f"DefaultEndpointsProtocol=https;AccountKey={key}")
    assert key not in caplog.text and key not in caplog.records[-1].getMessage()


def test_azjobs_log_formatters_redact():
    key = account_key()
    remember([key])
    root = logging.getLogger()
    level = root.level
    for fmt in logs.FORMATS:
        stream = io.StringIO()
        handler = logs.setup(0, fmt, stream)
        try:
            # A logger without the filter: the formatter alone must hide it (message and traceback).
            try:
                raise ValueError(f"bad {key}")
            except ValueError:
                logging.getLogger("not_azjobs.test_secrets").exception("boom %s", key)
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
        assert stream.getvalue() and key not in stream.getvalue(), fmt


# -- Connection registers its secrets ----------------------------------------------------------------
def test_a_connection_with_an_account_key_registers_it():
    key = account_key()
    Connection(connection_string=f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key}")
    assert redact(f"the key is {key} here") == f"the key is {MASK} here"


def test_a_sas_connection_registers_the_token_and_the_signature():
    sig = signature()
    token = sas_token(sig)
    connection = Connection(connection_string=f"QueueEndpoint=https://acct.queue.core.windows.net;"
                                              f"SharedAccessSignature={token}")
    # The signature, bare, decoded or URL-encoded, wherever it appears (no sig= around it).
    assert sig not in redact(f"signed with {sig}")
    assert quote(sig, safe="") not in redact(f"signed with {quote(sig, safe='')}")
    assert redact(f"?{token}") == f"?{MASK}"
    assert sig not in repr(connection) and quote(sig, safe="") not in connection.description


@pytest.mark.parametrize("prefix", ["", "?"])
def test_a_sas_token_given_with_its_question_mark(prefix):
    sig = signature()
    Connection(connection_string=f"QueueEndpoint=https://a.queue.core.windows.net;SharedAccessSignature={prefix}"
                                 f"{sas_token(sig)}")
    assert sig not in redact(f"signature {sig}")
