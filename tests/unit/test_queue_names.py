import pytest

from azjobs.errors import ConfigurationError
from azjobs.model.queue_names import poison_queue_name, resolve_queue_name, validate_queue_name


def test_poison_names_follow_the_host():
    assert poison_queue_name("emails") == "emails-poison"
    assert poison_queue_name("emails-poison") is None
    assert poison_queue_name("a" * 57) is None
    assert poison_queue_name("a" * 56) == "a" * 56 + "-poison"


def test_without_poison_twin_63_is_allowed():
    assert validate_queue_name("a" * 63, needs_poison=False)
    with pytest.raises(ConfigurationError):
        validate_queue_name("a" * 64, needs_poison=False)


def test_app_setting_expressions_resolve_from_the_environment():
    assert validate_queue_name("%EMAILS_QUEUE%") == "%EMAILS_QUEUE%"
    assert resolve_queue_name("%EMAILS_QUEUE%", {"EMAILS_QUEUE": "emails-prod"}) == "emails-prod"
    assert resolve_queue_name("plain", {}) == "plain"
    with pytest.raises(ConfigurationError, match="not set"):
        resolve_queue_name("%MISSING%", {})
    with pytest.raises(ConfigurationError, match="lowercase"):
        resolve_queue_name("%Q%", {"Q": "Bad_Name"})
