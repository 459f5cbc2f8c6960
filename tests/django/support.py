"""Reading what the Django backend wrote to Azurite, and running the test project's manage.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from azjobs.model.envelope import Envelope

SITE = Path(__file__).resolve().parent / "site"


def envelopes(queue_client) -> list[Envelope]:
    """The azjobs envelopes visible on a queue (peeked: they stay); none if the queue does not exist yet."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        messages = queue_client.peek_messages(max_messages=32)
    except ResourceNotFoundError:
        return []
    return [Envelope.decode(message.content) for message in messages]


def poison_records(queue_client) -> list[dict]:
    """The poison records on ``<queue>-poison`` (an empty list when that queue does not exist)."""
    import json

    from azure.core.exceptions import ResourceNotFoundError

    from azjobs.model.envelope import decode_body

    try:
        messages = queue_client.peek_messages(max_messages=32)
    except ResourceNotFoundError:
        return []
    return [json.loads(decode_body(message.content)) for message in messages]


def manage(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python manage.py ARGS`` in the test project, with this process's environment."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py sets it, as in a real project
    return subprocess.run([sys.executable, "manage.py", *args], cwd=SITE, env=env, capture_output=True,
                          text=True, timeout=timeout)
