"""How the workflow history splits an episode over a row's string properties: in UTF-16 units (Table Storage's)."""

from __future__ import annotations

import pytest

from azjobs.storage.table_rules import MAX_ENTITY_BYTES, MAX_STRING_UNITS, utf16_units
from azjobs.workflows.history import CHUNK_UNITS, MAX_PARTS, split_units


@pytest.mark.parametrize("text", ["", "plain", "😀" * 40_000, "a😀" * 25_000 + "z", "é" * 70_000])
def test_split_units_keeps_every_piece_within_the_limit_and_loses_nothing(text):
    pieces = split_units(text, CHUNK_UNITS)
    assert "".join(pieces) == text
    assert all(utf16_units(piece) <= CHUNK_UNITS for piece in pieces)
    assert len(pieces) == max(1, -(-utf16_units(text) // CHUNK_UNITS))


def test_an_emoji_is_never_split_and_a_too_small_limit_is_refused():
    assert split_units("😀😀😀", 3) == ["😀", "😀", "😀"]
    with pytest.raises(ValueError):
        split_units("😀", 1)


def test_a_full_row_stays_under_the_entity_limit():
    assert CHUNK_UNITS <= MAX_STRING_UNITS
    assert MAX_PARTS * (2 * CHUNK_UNITS + 64) + 64 * 1024 <= MAX_ENTITY_BYTES and MAX_PARTS == 15
