"""Log output of the azjobs command: JSON lines carry the stable extras; secrets are redacted."""

from __future__ import annotations

import io
import json
import logging


from azjobs.storage import diagnosis as logs




def test_json_lines_carry_the_extras(restore_logging):
    stream = io.StringIO()
    logs.setup(0, "json", stream)
    logging.getLogger("azjobs").info("job x started", extra={"action": "job_started", "job": "x", "job_id": "1",
                                                               "queue": "q", "attempt": 2, "duration_s": 0.5})
    data = json.loads(stream.getvalue().strip())
    assert data["action"] == "job_started" and data["job"] == "x" and data["attempt"] == 2
    assert data["duration_s"] == 0.5 and data["level"] == "INFO" and data["message"] == "job x started"


def test_secrets_never_reach_the_log(restore_logging):
    for fmt in ("text", "json"):
        stream = io.StringIO()
        logs.setup(0, fmt, stream)
        logging.getLogger("azjobs").warning("cannot connect with AccountKey=c2VjcmV0;QueueEndpoint=x")
        assert "c2VjcmV0" not in stream.getvalue()
        assert "AccountKey=***" in stream.getvalue()


def test_verbose_enables_debug(restore_logging):
    stream = io.StringIO()
    logs.setup(0, "text", stream)
    logging.getLogger("azjobs").debug("hidden")
    logs.setup(1, "text", stream)
    logging.getLogger("azjobs").debug("shown")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()
    assert len([h for h in logging.getLogger().handlers if getattr(h, "_azjobs", False)]) == 1


def test_a_redelivered_jobs_line_shows_its_dequeue_count(restore_logging):
    import azjobs
    from azjobs.hosting import executor as hosted_executor
    from azjobs.model.outcome import MessageInfo
    from azjobs.model.envelope import Envelope
    from azjobs.testing import RecordingClient

    reg = azjobs.Registry()
    azjobs.job(queue="logs-queue", registry=reg, name="logs.quiet")(_quiet)
    stream = io.StringIO()
    logs.setup(0, "text", stream)
    client = RecordingClient()
    core = hosted_executor(registry=reg, client=client, settings=client.settings)
    body = Envelope.build("logs.quiet", ()).encode()
    core.execute(body, MessageInfo("logs-queue", message_id="m1", dequeue_count=1))
    core.execute(body, MessageInfo("logs-queue", message_id="m1", dequeue_count=3))  # after a crash, say
    first, second = [line for line in stream.getvalue().splitlines() if "succeeded" in line]
    assert "dequeue count" not in first
    assert "[dequeue count 3: a redelivery]" in second


def _quiet() -> None:
    return None


def test_a_retry_line_says_why_and_a_failed_jobs_traceback_is_logged_at_debug(restore_logging):
    import azjobs
    from azjobs.hosting import executor as hosted_executor
    from azjobs.model.outcome import MessageInfo
    from azjobs.model.envelope import Envelope
    from azjobs.testing import RecordingClient

    reg = azjobs.Registry()
    azjobs.job(queue="logs-queue", registry=reg, name="logs.boom")(_boom)
    client = RecordingClient()
    core = hosted_executor(registry=reg, client=client, settings=client.settings)
    for verbose in (0, 1):
        stream = io.StringIO()
        logs.setup(verbose, "text", stream)
        core.execute(Envelope.build("os.system", ("rm -rf /",)).encode(), MessageInfo("logs-queue"))
        core.execute(Envelope.build("logs.boom", ()).encode(), MessageInfo("logs-queue"))
        text = stream.getvalue()
        unknown = next(line for line in text.splitlines() if "os.system" in line and "retry 2 scheduled" in line)
        assert "UnknownJobError: no job named 'os.system' is registered" in unknown
        assert ("Traceback (most recent call last)" in text) == bool(verbose)
        assert ("raise RuntimeError(\"kaboom\")" in text) == bool(verbose)


def _boom() -> None:
    raise RuntimeError("kaboom")
