"""Fixtures shared by the unit tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def restore_logging():
    """Undo what a test's ``azjobs.storage.diagnosis.setup`` did to the root logger (its handler and level)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
