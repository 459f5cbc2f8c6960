"""Azure Storage queue-name rules and the host's poison-queue naming."""

from __future__ import annotations

import re

from ..errors import ConfigurationError

POISON_SUFFIX = "-poison"
MAX_QUEUE_NAME = 63
# A job queue needs room for its "<queue>-poison" twin.
MAX_JOB_QUEUE_NAME = MAX_QUEUE_NAME - len(POISON_SUFFIX)

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$")


def validate_queue_name(name: object, *, needs_poison: bool = True) -> str:
    """Return ``name`` if it is a valid queue name, else raise ConfigurationError saying why."""
    if not isinstance(name, str):
        raise ConfigurationError(f"queue name must be a string, got {type(name).__name__}")
    if is_app_setting_expression(name):
        return name
    limit = MAX_JOB_QUEUE_NAME if needs_poison else MAX_QUEUE_NAME
    if not 3 <= len(name) <= limit:
        extra = " so that its '-poison' queue is valid too" if needs_poison else ""
        raise ConfigurationError(
            f"queue name {name!r} has {len(name)} characters; it must have 3 to {limit}{extra}"
        )
    if not _NAME.match(name):
        raise ConfigurationError(
            f"queue name {name!r} is invalid: use lowercase letters, digits and single dashes, "
            "not starting or ending with a dash"
        )
    return name


def poison_queue_name(queue: str) -> str | None:
    """The host's poison queue for ``queue``, or None where the host would have none."""
    if queue.endswith(POISON_SUFFIX):
        return None
    name = queue + POISON_SUFFIX
    return name if len(name) <= MAX_QUEUE_NAME else None


def is_app_setting_expression(name: str) -> bool:
    """True for a Functions ``%AppSetting%`` queue name, resolved from the environment."""
    return len(name) > 2 and name.startswith("%") and name.endswith("%")


def resolve_queue_name(name: str, environ: dict[str, str] | None = None) -> str:
    """Resolve a ``%AppSetting%`` expression the way the Functions host does, then validate it."""
    import os

    if not is_app_setting_expression(name):
        return name
    env = os.environ if environ is None else environ
    setting = name[1:-1]
    if setting not in env:
        raise ConfigurationError(f"queue name {name} names app setting {setting!r}, which is not set")
    resolved = env[setting]
    if is_app_setting_expression(resolved):
        raise ConfigurationError(f"app setting {setting!r} must hold a queue name, not another expression")
    return validate_queue_name(resolved)
